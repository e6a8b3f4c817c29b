//! Dashboards: the live training page, the loss and evaluation plots, and the run's
//! index page.
//!
//! - `train/dashboard.html` is rewritten (atomically) after every training step from
//!   forge-peft's per-step metrics; while training runs it carries
//!   `<meta http-equiv="refresh">` so an open browser tab follows the run. It shows
//!   the loss curve (inline SVG), the last step's numbers, and — when forge-peft's
//!   divergence guard stops the run — the step, the reason and the checkpoint kept.
//! - `train/loss.svg` / `loss.png`: training loss per step and validation loss, drawn
//!   with `plotters`. The SVG has axis labels and a legend; the PNG is drawn without
//!   text (plotters' bitmap text needs a font backend, which would need system fonts),
//!   with the same colours: training loss blue, validation loss orange.
//! - `judge/eval.svg` / `eval.png`: each metric of the report, base model (grey) beside
//!   the fine-tuned one (blue), as a fraction of the larger of the two.
//! - `index.html` in the run folder: the stages, their status and links to every page.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use forge_judge::Report;
use forge_peft::StepMetrics;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::write_atomic;
use crate::{Error, Result};

/// One training step as the dashboard and the plots use it: the fields of forge-peft's
/// [`StepMetrics`] (and of its `metrics.jsonl` lines) that they show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPoint {
    /// Steps done.
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// Training loss.
    pub loss: f32,
    /// Learning rate.
    pub lr: f32,
    /// Gradient norm before clipping (NaN, written `null`, on steps that
    /// did not measure it).
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f32,
    /// Throughput.
    pub tokens_per_s: f64,
    /// Peak RSS (bytes).
    pub peak_rss: usize,
    /// Estimated seconds left.
    pub eta_s: f64,
    /// Validation loss, on evaluation steps.
    #[serde(default)]
    pub val_loss: Option<f32>,
}

/// JSON has no NaN: serde_json writes it as `null`; read that back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
}

impl From<&StepMetrics> for StepPoint {
    fn from(m: &StepMetrics) -> Self {
        Self {
            step: m.step,
            steps: m.steps,
            loss: m.loss,
            lr: m.lr,
            grad_norm: m.grad_norm,
            tokens_per_s: m.tokens_per_s,
            peak_rss: m.peak_rss,
            eta_s: m.eta_s,
            val_loss: m.val_loss,
        }
    }
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREY: RGBColor = RGBColor(150, 150, 150);

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// HTML-escapes `s`.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

type Series = Vec<(f64, f64)>;

fn loss_series(metrics: &[StepPoint]) -> (Series, Series) {
    let train = metrics
        .iter()
        .filter(|m| m.loss.is_finite())
        .map(|m| (m.step as f64, f64::from(m.loss)))
        .collect();
    let val = metrics
        .iter()
        .filter_map(|m| {
            m.val_loss
                .filter(|v| v.is_finite())
                .map(|v| (m.step as f64, f64::from(v)))
        })
        .collect();
    (train, val)
}

fn ranges(train: &[(f64, f64)], val: &[(f64, f64)], steps: usize) -> (f64, f64, f64) {
    let all = train.iter().chain(val);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-3);
    ((steps.max(2)) as f64, (lo - pad).max(0.0), hi + pad)
}

fn draw_loss<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    metrics: &[StepPoint],
    text: bool,
) -> std::result::Result<(), String> {
    let (train, val) = loss_series(metrics);
    let steps = metrics.last().map_or(1, |m| m.steps);
    let (xmax, lo, hi) = ranges(&train, &val, steps);
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut b = ChartBuilder::on(&root);
    b.margin(12);
    if text {
        b.caption("loss per step", ("sans-serif", 18))
            .x_label_area_size(32)
            .y_label_area_size(48);
    }
    let mut chart = b
        .build_cartesian_2d(0f64..xmax, lo..hi)
        .map_err(|e| e.to_string())?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .draw()
            .map_err(|e| e.to_string())?;
    } else {
        draw_frame(&mut chart, (0.0, xmax), (lo, hi))?;
    }
    let s = chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
        .map_err(|e| e.to_string())?;
    if text {
        s.label("training loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.stroke_width(2)));
    }
    if !val.is_empty() {
        let s = chart
            .draw_series(LineSeries::new(val.clone(), ORANGE.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if text {
            s.label("validation loss").legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], ORANGE.stroke_width(2))
            });
        }
        chart
            .draw_series(val.into_iter().map(|p| Circle::new(p, 3, ORANGE.filled())))
            .map_err(|e| e.to_string())?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

type Coords =
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>;

/// Axes and a light grid drawn as plain lines (no text): what the PNGs get instead of
/// plotters' labelled mesh.
fn draw_frame<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Coords>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> std::result::Result<(), String> {
    let grid = RGBColor(225, 225, 225);
    for k in 1..5 {
        let y = y0 + (y1 - y0) * f64::from(k) / 5.0;
        chart
            .draw_series(LineSeries::new([(x0, y), (x1, y)], grid))
            .map_err(|e| e.to_string())?;
    }
    chart
        .draw_series([PathElement::new(
            vec![(x0, y1), (x0, y0), (x1, y0)],
            BLACK.stroke_width(1),
        )])
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The loss curve as an SVG document (with text).
pub fn loss_svg(metrics: &[StepPoint], size: (u32, u32)) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        draw_loss(root, metrics, true).map_err(|e| plot_err(Path::new("loss.svg"), e))?;
    }
    Ok(out)
}

/// Writes `loss.svg` and `loss.png` into `dir`; returns their paths.
pub fn write_loss_plots(metrics: &[StepPoint], dir: &Path) -> Result<[PathBuf; 2]> {
    let svg = dir.join("loss.svg");
    write_atomic(&svg, loss_svg(metrics, (720, 420))?.as_bytes())?;
    let png = dir.join("loss.png");
    write_png(&png, (720, 420), |root| draw_loss(root, metrics, false))?;
    Ok([svg, png])
}

fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(
        DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<()> {
    // plotters' encoder picks the format from the extension: render to a temporary
    // `.png` beside the target, then rename.
    let name = path
        .file_name()
        .map_or_else(|| "plot.png".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        draw(root).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            plot_err(path, e)
        })?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The metrics of a report as `(name, baseline, candidate)`.
fn eval_rows(report: &Report) -> Vec<(String, f64, f64)> {
    report
        .metrics
        .iter()
        .filter_map(|m| Some((m.metric.clone(), m.baseline?, m.candidate?)))
        .filter(|(_, b, c)| b.is_finite() && c.is_finite())
        .collect()
}

fn draw_eval<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    rows: &[(String, f64, f64)],
    text: bool,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = rows.len().max(1);
    let mut b = ChartBuilder::on(&root);
    b.margin(12);
    if text {
        b.caption(
            "base (grey) vs fine-tuned (blue), relative to the larger",
            ("sans-serif", 16),
        )
        .x_label_area_size(40)
        .y_label_area_size(40);
    }
    let mut chart = b
        .build_cartesian_2d(0f64..n as f64, 0f64..1.15f64)
        .map_err(|e| e.to_string())?;
    if text {
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh();
        let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        mesh.x_labels(n * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
    } else {
        draw_frame(&mut chart, (0.0, n as f64), (0.0, 1.15))?;
    }
    for (i, (_, base, cand)) in rows.iter().enumerate() {
        let top = base.abs().max(cand.abs()).max(1e-12);
        let x = i as f64;
        chart
            .draw_series([
                Rectangle::new(
                    [(x + 0.12, 0.0), (x + 0.48, base.abs() / top)],
                    GREY.filled(),
                ),
                Rectangle::new(
                    [(x + 0.52, 0.0), (x + 0.88, cand.abs() / top)],
                    BLUE.filled(),
                ),
            ])
            .map_err(|e| e.to_string())?;
        if text {
            let style = ("sans-serif", 12).into_font();
            chart
                .draw_series([
                    Text::new(
                        format!("{base:.3}"),
                        (x + 0.14, base.abs() / top + 0.06),
                        style.clone(),
                    ),
                    Text::new(
                        format!("{cand:.3}"),
                        (x + 0.54, cand.abs() / top + 0.06),
                        style,
                    ),
                ])
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// Writes `eval.svg` and `eval.png` for `report` into `dir`.
pub fn write_eval_plots(report: &Report, dir: &Path) -> Result<[PathBuf; 2]> {
    let rows = eval_rows(report);
    let size = ((160 * rows.len().max(1) as u32 + 120).max(480), 360);
    let svg = dir.join("eval.svg");
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        draw_eval(root, &rows, true).map_err(|e| plot_err(&svg, e))?;
    }
    write_atomic(&svg, out.as_bytes())?;
    let png = dir.join("eval.png");
    write_png(&png, size, |root| draw_eval(root, &rows, false))?;
    Ok([svg, png])
}

/// The state of a training run as the dashboard shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainState {
    /// Still training.
    Running,
    /// Finished every step.
    Done,
    /// Stopped by the divergence guard.
    Diverged {
        /// The step that diverged.
        step: usize,
        /// Why.
        reason: String,
        /// The checkpoint kept.
        checkpoint: Option<PathBuf>,
    },
    /// Failed for another reason.
    Failed(String),
}

/// Renders the training dashboard.
pub fn train_dashboard_html(
    run_id: &str,
    metrics: &[StepPoint],
    state: &TrainState,
    refresh_s: u32,
) -> Result<String> {
    let mut h = String::new();
    let live = *state == TrainState::Running;
    let _ = writeln!(h, "<!doctype html><html><head><meta charset=\"utf-8\">");
    if live {
        let _ = writeln!(h, "<meta http-equiv=\"refresh\" content=\"{refresh_s}\">");
    }
    let _ = writeln!(
        h,
        "<title>forge train {}</title><style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         .halt{{background:#fdd;border:2px solid #c00;padding:1em}}.ok{{color:#070}}</style></head><body>",
        esc(run_id)
    );
    let _ = writeln!(h, "<h1>Training — run {}</h1>", esc(run_id));
    match state {
        TrainState::Running => {
            let _ = writeln!(
                h,
                "<p>training… (this page reloads every {refresh_s} s)</p>"
            );
        }
        TrainState::Done => {
            let _ = writeln!(h, "<p class=\"ok\">finished</p>");
        }
        TrainState::Diverged {
            step,
            reason,
            checkpoint,
        } => {
            let _ = writeln!(
                h,
                "<div class=\"halt\"><b>Halted: training diverged at step {step}</b><br>{}<br>last good checkpoint: {}</div>",
                esc(reason),
                checkpoint
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |p| esc(&p.display().to_string()))
            );
        }
        TrainState::Failed(why) => {
            let _ = writeln!(h, "<div class=\"halt\"><b>Failed</b><br>{}</div>", esc(why));
        }
    }
    if let Some(m) = metrics.last() {
        let _ = writeln!(
            h,
            "<table><tr><th>step</th><th>loss</th><th>val loss</th><th>lr</th><th>grad norm</th>\
             <th>tokens/s</th><th>peak RSS</th><th>ETA</th></tr><tr><td>{}/{}</td><td>{:.4}</td>\
             <td>{}</td><td>{:.2e}</td><td>{:.3}</td><td>{:.1}</td><td>{:.2} GiB</td><td>{:.0} s</td></tr></table>",
            m.step,
            m.steps,
            m.loss,
            metrics
                .iter()
                .rev()
                .find_map(|m| m.val_loss)
                .map_or_else(|| "—".to_string(), |v| format!("{v:.4}")),
            m.lr,
            m.grad_norm,
            m.tokens_per_s,
            m.peak_rss as f64 / f64::from(1u32 << 30),
            m.eta_s
        );
        h.push_str(&loss_svg(metrics, (720, 420))?);
    } else {
        h.push_str("<p>waiting for the first step…</p>");
    }
    h.push_str("</body></html>\n");
    Ok(h)
}

/// Writes the training dashboard atomically.
pub fn write_train_dashboard(
    path: &Path,
    run_id: &str,
    metrics: &[StepPoint],
    state: &TrainState,
) -> Result<()> {
    write_atomic(
        path,
        train_dashboard_html(run_id, metrics, state, 2)?.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize, loss: f32, val: Option<f32>) -> StepPoint {
        StepPoint {
            step: i,
            steps: 4,
            loss,
            lr: 1e-4,
            grad_norm: 1.0,
            tokens_per_s: 100.0,
            peak_rss: 0,
            eta_s: 1.0,
            val_loss: val,
        }
    }

    #[test]
    fn an_unmeasured_gradient_norm_round_trips_as_null() {
        let mut p = step(1, 3.0, None);
        p.grad_norm = f32::NAN;
        let line = serde_json::to_string(&p).expect("json");
        assert!(line.contains("\"grad_norm\":null"), "{line}");
        let back: StepPoint = serde_json::from_str(&line).expect("read back");
        assert!(back.grad_norm.is_nan());
        let measured: StepPoint =
            serde_json::from_str(&serde_json::to_string(&step(2, 2.0, None)).expect("json"))
                .expect("read back");
        assert_eq!(measured.grad_norm, 1.0);
    }

    #[test]
    fn loss_plots_are_an_svg_with_text_and_a_png_of_the_right_size() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tmp", e))?;
        let m = vec![
            step(1, 3.0, None),
            step(2, 2.5, Some(2.7)),
            step(3, 2.0, None),
        ];
        let [svg, png] = write_loss_plots(&m, dir.path())?;
        let bytes = std::fs::read(&png).map_err(|e| Error::io(&png, e))?;
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[16..24], &[0, 0, 2, 208, 0, 0, 1, 164]); // 720 x 420
        assert!(
            std::fs::read_dir(dir.path())
                .map_err(|e| Error::io("tmp", e))?
                .all(|e| { e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')) })
        );
        let text = std::fs::read_to_string(&svg).map_err(|e| Error::io(&svg, e))?;
        assert!(
            text.contains("<svg")
                && text.contains("training loss")
                && text.contains("validation loss")
        );
        Ok(())
    }

    #[test]
    fn dashboard_refreshes_while_running_and_shows_divergence() -> Result<()> {
        let m = vec![step(1, 3.0, None)];
        let live = train_dashboard_html("r1", &m, &TrainState::Running, 2)?;
        assert!(live.contains("http-equiv=\"refresh\""));
        let halted = train_dashboard_html(
            "r1",
            &m,
            &TrainState::Diverged {
                step: 2,
                reason: "loss <NaN>".into(),
                checkpoint: None,
            },
            2,
        )?;
        assert!(!halted.contains("http-equiv"));
        assert!(halted.contains("diverged at step 2") && halted.contains("loss &lt;NaN&gt;"));
        Ok(())
    }
}
