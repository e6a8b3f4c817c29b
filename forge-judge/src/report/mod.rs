//! The validation report: a candidate model's results next to a baseline's (the base model
//! or the previously deployed version), metric by metric and task by task, with the gate's
//! verdict; written as JSON, Markdown and a self-contained HTML page.

mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gate::{Gate, Verdict, higher_is_better};

/// One model's evaluation results: aggregate metrics and per-task scores.
///
/// Metric names are free-form; the report and the gate know `codebleu`, `exact_match`,
/// `edit_similarity`, `perplexity`, `mean_loss` and `pass@k`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalResults {
    /// What was evaluated (model and adapter names).
    pub label: String,
    /// Aggregate metrics by name.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Per-task scores (a held-out unit, a HumanEval problem, …).
    #[serde(default)]
    pub tasks: Vec<TaskScore>,
}

/// One task's scores by metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskScore {
    /// The task id.
    pub id: String,
    /// Scores by metric name.
    pub scores: BTreeMap<String, f64>,
}

impl EvalResults {
    /// Empty results labelled `label`.
    #[must_use]
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            ..Self::default()
        }
    }

    /// Sets an aggregate metric.
    #[must_use]
    pub fn with_metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }

    /// Adds a task's scores.
    #[must_use]
    pub fn with_task(mut self, task: TaskScore) -> Self {
        self.tasks.push(task);
        self
    }

    /// Reads results written by [`EvalResults::write`] (or by hand).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Data {
            path: path.to_path_buf(),
            line: e.line(),
            message: e.to_string(),
        })
    }

    /// Writes the results as pretty JSON, atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::InvalidArgument(format!("results to json: {e}")))?;
        write_atomic(path.as_ref(), format!("{json}\n").as_bytes())
    }
}

/// One metric of both models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    /// The metric.
    pub metric: String,
    /// Candidate value.
    pub candidate: Option<f64>,
    /// Baseline value.
    pub baseline: Option<f64>,
    /// `candidate − baseline` when both exist.
    pub delta: Option<f64>,
    /// Whether a larger value is better.
    pub higher_is_better: bool,
    /// `Some(true)` when the candidate is strictly better, `Some(false)` when strictly worse.
    pub improved: Option<bool>,
}

/// One task of both models, on the report's task metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    /// The task id.
    pub id: String,
    /// Candidate score.
    pub candidate: Option<f64>,
    /// Baseline score.
    pub baseline: Option<f64>,
}

/// The comparison and the verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Candidate label.
    pub candidate: String,
    /// Baseline label.
    pub baseline: String,
    /// Every metric either model has, by name.
    pub metrics: Vec<MetricRow>,
    /// The metric the per-task table and plot show.
    pub task_metric: Option<String>,
    /// Per-task scores, in the candidate's task order, then tasks only the baseline has.
    pub tasks: Vec<TaskRow>,
    /// The gate's verdict.
    pub verdict: Verdict,
}

/// The metric the per-task view shows: the first of `codebleu`, `pass@1`, `edit_similarity`,
/// `exact_match` that a task has, else the first metric of the first task.
fn pick_task_metric(c: &EvalResults, b: &EvalResults) -> Option<String> {
    let all = || c.tasks.iter().chain(&b.tasks);
    for m in ["codebleu", "pass@1", "edit_similarity", "exact_match"] {
        if all().any(|t| t.scores.contains_key(m)) {
            return Some(m.to_string());
        }
    }
    all().find_map(|t| t.scores.keys().next().cloned())
}

impl Report {
    /// Compares `candidate` with `baseline` and applies `gate`.
    #[must_use]
    pub fn new(candidate: &EvalResults, baseline: &EvalResults, gate: &Gate) -> Self {
        let mut names: Vec<&String> = candidate.metrics.keys().collect();
        names.extend(baseline.metrics.keys());
        names.sort();
        names.dedup();
        let metrics = names
            .into_iter()
            .map(|m| {
                let c = candidate.metrics.get(m).copied();
                let b = baseline.metrics.get(m).copied();
                let hib = higher_is_better(m);
                let delta = c.zip(b).map(|(c, b)| c - b);
                let improved = delta.and_then(|d| {
                    let d = if hib { d } else { -d };
                    (d != 0.0 && d.is_finite()).then_some(d > 0.0)
                });
                MetricRow {
                    metric: m.clone(),
                    candidate: c,
                    baseline: b,
                    delta,
                    higher_is_better: hib,
                    improved,
                }
            })
            .collect();
        let task_metric = pick_task_metric(candidate, baseline);
        let mut tasks = Vec::new();
        if let Some(tm) = &task_metric {
            let base: BTreeMap<&str, &TaskScore> =
                baseline.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
            let mut seen = std::collections::BTreeSet::new();
            for t in &candidate.tasks {
                seen.insert(t.id.as_str());
                tasks.push(TaskRow {
                    id: t.id.clone(),
                    candidate: t.scores.get(tm).copied(),
                    baseline: base
                        .get(t.id.as_str())
                        .and_then(|b| b.scores.get(tm).copied()),
                });
            }
            for t in &baseline.tasks {
                if !seen.contains(t.id.as_str()) {
                    tasks.push(TaskRow {
                        id: t.id.clone(),
                        candidate: None,
                        baseline: t.scores.get(tm).copied(),
                    });
                }
            }
        }
        Self {
            candidate: candidate.label.clone(),
            baseline: baseline.label.clone(),
            metrics,
            task_metric,
            tasks,
            verdict: gate.evaluate(&candidate.metrics, &baseline.metrics),
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::InvalidArgument(format!("report to json: {e}")))
    }

    /// The report as Markdown.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        render::markdown(self)
    }

    /// The report as one self-contained HTML page (inline CSS and SVG, no external asset).
    #[must_use]
    pub fn to_html(&self) -> String {
        render::html(self)
    }

    /// Writes `report.json`, `report.md` and `report.html` into `dir` (created if needed),
    /// each atomically; returns their paths.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<[PathBuf; 3]> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let paths = [
            dir.join("report.json"),
            dir.join("report.md"),
            dir.join("report.html"),
        ];
        write_atomic(&paths[0], format!("{}\n", self.to_json()?).as_bytes())?;
        write_atomic(&paths[1], self.to_markdown().as_bytes())?;
        write_atomic(&paths[2], self.to_html().as_bytes())?;
        Ok(paths)
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(path, e))?;
    tmp.write_all(bytes).map_err(|e| io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| io(path, e))?;
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    Ok(())
}
