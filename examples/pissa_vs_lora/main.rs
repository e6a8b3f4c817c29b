//! PiSSA against LoRA (and QLoRA, QPiSSA, RoRA) on SmolLM2-135M, trained on a
//! dataset mined from a real repository: same data, same batches, same
//! budget. Writes the loss curves as a Markdown table, a self-contained SVG
//! plot and JSON, and reports how many steps PiSSA needs to reach LoRA's final
//! loss. See `examples/pissa_vs_lora/README.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use forge_core::miner::{Budget, Miner, NoProgress};
use forge_core::model::{LoadOptions, ModelSource, load};
use forge_core::peft::{
    Example, Method, PeftConfig, PeftModel, PromptStyle, QuantSpec, Schedule, SvdMode,
    TrainOptions, Trainer, read_records, tokenize,
};

#[derive(Parser)]
#[command(about = "PiSSA vs LoRA, QLoRA, QPiSSA, RoRA on SmolLM2-135M with mined data")]
struct Args {
    /// Repository (or folder) to mine the training data from
    #[arg(long, default_value = "forge-miner")]
    repo: PathBuf,
    /// Model: `default` (SmolLM2-135M-Instruct), a .gguf or a Hugging Face folder
    #[arg(long, default_value = "default")]
    model: String,
    /// Output folder (dataset, results.json, curves.md, curves.svg)
    #[arg(long, default_value = "target/pissa_vs_lora")]
    out: PathBuf,
    /// Optimizer steps per method
    #[arg(long, default_value_t = 16)]
    steps: usize,
    /// Examples per step
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per example (longer mined units are truncated)
    #[arg(long, default_value_t = 32)]
    seq: usize,
    /// Adapt every projection of the last N blocks
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// Adapter rank (alpha = rank: scale 1 for LoRA/PiSSA, as in the PiSSA paper)
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Learning rate (constant after warmup)
    #[arg(long, default_value_t = 3e-4)]
    lr: f32,
    /// Quantized base bits for QLoRA and QPiSSA (MLX affine, group 64)
    #[arg(long, default_value_t = 4)]
    bits: i32,
    /// Seed (data order, adapter init, mining)
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct Curve {
    name: &'static str,
    losses: Vec<f32>,
    init_s: f64,
    train_s: f64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.out)?;
    let data_dir = a.out.join("data");
    eprintln!("mining {} ...", a.repo.display());
    let report = Miner::new(&a.repo)
        .with_format("text".parse()?)
        .with_tasks("completion".parse()?)
        .with_seed(a.seed)
        .with_budget(Budget::chars(1200))
        .run(&data_dir, &NoProgress)
        .with_context(|| format!("mining {}", a.repo.display()))?;
    eprintln!("{report}");
    let loaded = load(&ModelSource::parse(&a.model), &LoadOptions::new())?;
    let tok = loaded.tokenizer.context("the model has no tokenizer")?;
    let records = read_records(&data_dir.join("train.jsonl"))?;
    let train: Vec<Example> = tokenize(&records, &tok, PromptStyle::Plain, false, a.seq)?
        .into_iter()
        .filter(|e| e.ids.len() > a.seq / 2)
        .collect();
    let pad = tok.eos_ids().first().copied().unwrap_or(0);
    let n = loaded.model.config().num_layers;
    let layers = n.saturating_sub(a.layers)..n;
    eprintln!(
        "{} records -> {} examples of {}..={} tokens; layers {layers:?}",
        records.len(),
        train.len(),
        a.seq / 2 + 1,
        a.seq + 1
    );
    let q = QuantSpec::new(a.bits);
    let svd = SvdMode::Randomized {
        niter: 4,
        oversample: 8,
    };
    let alpha = a.rank as f32;
    let base = |m: Method| {
        PeftConfig::new(m, a.rank, alpha)
            .with_targets(["all-linear"])
            .with_layers(layers.clone())
            .with_svd(svd)
            .with_seed(a.seed)
    };
    let methods: Vec<(&'static str, PeftConfig)> = vec![
        ("LoRA", base(Method::Lora)),
        ("PiSSA", base(Method::Pissa)),
        ("QLoRA", base(Method::Lora).with_quantized_base(q)),
        ("QPiSSA", base(Method::Pissa).with_quantized_base(q)),
        // RoRA = rsLoRA scaling α/√r; with α = r that is √r.
        ("RoRA", base(Method::RsLora)),
    ];
    let mut curves = Vec::new();
    for (name, cfg) in methods {
        let t = Instant::now();
        let mut peft = PeftModel::new(loaded.model.clone(), cfg)?;
        let init_s = t.elapsed().as_secs_f64();
        let opts = TrainOptions::new(a.steps)
            .with_batch_size(a.batch)
            .with_lr(a.lr)
            .with_warmup(2)
            .with_schedule(Schedule::Constant)
            .with_clip_grad_norm(1.0)
            .with_seed(a.seed)
            .with_spike_factor(1e9);
        let t = Instant::now();
        let report = Trainer::new(opts)
            .with_progress(move |m| {
                eprintln!(
                    "{name:>6} step {:>3}/{}: loss {:.4} ({:.0} tok/s)",
                    m.step, m.steps, m.loss, m.tokens_per_s
                );
            })
            .run(&mut peft, &train, &[], pad, None)?;
        curves.push(Curve {
            name,
            losses: report.steps.iter().map(|m| m.loss).collect(),
            init_s,
            train_s: t.elapsed().as_secs_f64(),
        });
    }
    write_results(&a, &curves)
}

/// Mean of the last `k` values ending at index `i`.
fn trailing_mean(v: &[f32], i: usize, k: usize) -> f32 {
    let lo = (i + 1).saturating_sub(k);
    v[lo..=i].iter().sum::<f32>() / (i + 1 - lo) as f32
}

fn write_results(a: &Args, curves: &[Curve]) -> Result<()> {
    let steps = curves[0].losses.len();
    let mut md = String::new();
    writeln!(
        md,
        "| step | {} |",
        curves
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(" | ")
    )?;
    writeln!(md, "|---|{}", "---|".repeat(curves.len()))?;
    for s in 0..steps {
        let row: Vec<String> = curves
            .iter()
            .map(|c| format!("{:.4}", c.losses[s]))
            .collect();
        writeln!(md, "| {} | {} |", s + 1, row.join(" | "))?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "| method | mean loss, last 5 steps | init (s) | training (s) |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    for c in curves {
        writeln!(
            md,
            "| {} | {:.4} | {:.2} | {:.0} |",
            c.name,
            trailing_mean(&c.losses, steps - 1, 5),
            c.init_s,
            c.train_s
        )?;
    }
    // Steps PiSSA needs to reach LoRA's final loss (both as 5-step trailing means,
    // the per-step losses being of different batches).
    let lora = &curves[0].losses;
    let target = trailing_mean(lora, steps - 1, 5);
    let mut verdicts = Vec::new();
    for (p, l) in [("PiSSA", "LoRA"), ("QPiSSA", "QLoRA")] {
        let find = |n: &str| curves.iter().find(|c| c.name == n);
        if let (Some(pc), Some(lc)) = (find(p), find(l)) {
            let target = trailing_mean(&lc.losses, steps - 1, 5);
            let hit = (4..steps).find(|&i| trailing_mean(&pc.losses, i, 5) <= target);
            verdicts.push(match hit {
                Some(i) => format!(
                    "{p} reaches {l}'s final loss ({target:.4}, 5-step mean) at step {} of {steps}",
                    i + 1
                ),
                None => format!(
                    "{p} does not reach {l}'s final loss ({target:.4}) within {steps} steps"
                ),
            });
        }
    }
    let _ = target;
    writeln!(md)?;
    for v in &verdicts {
        writeln!(md, "- {v}")?;
    }
    std::fs::write(a.out.join("curves.md"), &md)?;
    std::fs::write(a.out.join("curves.svg"), svg(curves))?;
    let json = serde_json::json!({
        "repo": a.repo, "model": a.model, "steps": a.steps, "batch": a.batch, "seq": a.seq,
        "layers": a.layers, "rank": a.rank, "lr": a.lr, "bits": a.bits, "seed": a.seed,
        "curves": curves.iter().map(|c| serde_json::json!({
            "method": c.name, "loss": c.losses, "init_s": c.init_s, "train_s": c.train_s,
        })).collect::<Vec<_>>(),
        "verdicts": verdicts,
    });
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_vec_pretty(&json)?,
    )?;
    println!("{md}");
    eprintln!(
        "written: {}/curves.md, curves.svg, results.json",
        a.out.display()
    );
    Ok(())
}

/// A self-contained SVG line plot of the curves.
fn svg(curves: &[Curve]) -> String {
    let (w, h, m) = (720.0, 420.0, 50.0);
    let steps = curves[0].losses.len().max(2);
    let all = curves.iter().flat_map(|c| c.losses.iter().copied());
    let (lo, hi) = all.fold((f32::MAX, f32::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (lo, hi) = (f64::from(lo) - 0.05, f64::from(hi) + 0.05);
    let x = |i: usize| m + (w - 2.0 * m) * i as f64 / (steps - 1) as f64;
    let y = |v: f32| h - m - (h - 2.0 * m) * (f64::from(v) - lo) / (hi - lo);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">training loss per step (SmolLM2-135M)</text>\n",
        w / 2.0
    );
    let _ = writeln!(
        s,
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>",
        h - m,
        w - m,
        h - m,
        h - m
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * f64::from(k) / 4.0;
        let yy = h - m - (h - 2.0 * m) * f64::from(k) / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.2}</text><line x1=\"{m}\" y1=\"{yy}\" x2=\"{}\" y2=\"{yy}\" stroke=\"#ddd\"/>",
            m - 4.0,
            yy + 4.0,
            w - m
        );
    }
    for k in [1, steps / 2, steps] {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{k}</text>",
            x(k - 1),
            h - m + 16.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>",
        w / 2.0,
        h - 12.0
    );
    for (ci, c) in curves.iter().enumerate() {
        let pts: Vec<String> = c
            .losses
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v)))
            .collect();
        let col = colors[ci % colors.len()];
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"1.5\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{col}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            w - m - 80.0,
            m + 14.0 * ci as f64,
            w - m - 64.0,
            m + 14.0 * ci as f64 + 5.0,
            c.name
        );
    }
    s.push_str("</svg>\n");
    s
}
