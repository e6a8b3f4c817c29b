//! The pipeline: mine → dataset → train → judge → export → deploy.
//!
//! Every run has a folder `.forge/runs/<id>/` with one sub-folder per stage. A stage
//! writes its artifacts there and a `manifest.json` (atomically, after the
//! artifacts): its inputs and their content hashes, the hash over all of them
//! (`input_hash`), the configuration it ran with, the repository's git commit, its
//! outputs with their SHA-256 and size, its metrics, times, and its status.
//!
//! Before running a stage, the pipeline hashes its inputs. When a completed stage
//! with the same `input_hash` exists — in this run (a resumed run) or in an
//! earlier one — whose outputs are all still on disk, the stage is not run again:
//! the new manifest records `reused_from` and points at those outputs. A stage's
//! inputs are the content hashes of the previous stages' outputs plus its own
//! configuration, so a change anywhere re-runs exactly the stages downstream of it.
//!
//! | stage | inputs | outputs |
//! |---|---|---|
//! | mine | every file of the repository the walk lists (path + SHA-256), include/exclude globs, budget | `units.jsonl` (forge-miner's unit rows), `files.json` |
//! | dataset | mine's outputs, `[dataset]` | `train`/`valid`/`test` splits, `card.json`, `card.md` |
//! | train | dataset's train/valid files, the base model's bytes, `[data]`, `[adapter]`, `[train]` | `adapters/` (PEFT layout), `metrics.jsonl`, `dashboard.html`, `loss.svg`, `loss.png` |
//! | judge | the adapters, the test split, the units, the base model, `[judge]` | `baseline.json`, `candidate.json`, `report.{json,md,html}`, `eval.svg`, `eval.png` |
//! | export | the adapters, the base model, `[export]` | `model-<type>.gguf` per type, `Modelfile` |
//! | deploy | the deployed GGUF's hash, the gate's verdict | a registry row; never cached |
//!
//! Training resumes from its last checkpoint when a run is resumed
//! ([`RunOptions::with_resume`]); forge-peft's divergence guard stops a run (status
//! `diverged`, shown on the dashboard). Deploy registers the model and makes it
//! active only when the judge's gate passed; a refused model is logged as
//! `rejected` and the active model stays.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use forge_gguf::export::{ExportProgress, OllamaOptions};
use forge_judge::{EvalResults, PerplexityOptions, ReconstructOptions, Report};
use forge_miner::{Mined, Miner, NoProgress, Split};
use forge_model::{ModelSource, default_model_path};
use forge_peft::{DataFile, StepMetrics};
use serde::{Deserialize, Serialize};

use crate::config::{ForgeConfig, OllamaMode};
use crate::dashboard::{self, StepPoint, TrainState, esc};
use crate::export::{ExportOptions, export, write_modelfile};
use crate::registry::{NewModel, Registry};
use crate::util::{
    SplitMix64, hash_parts, on_path, read_json, sha256_file, sha256_hex, sha256_path, unix_now,
    utc_now, write_atomic, write_json,
};
use crate::{Error, Result};

/// The stages, in order.
pub const STAGES: [&str; 6] = ["mine", "dataset", "train", "judge", "export", "deploy"];

/// Version of the stages' artifact layout, part of every input hash: a Forge whose
/// stages write other files never reuses an older layout's outputs.
pub const STAGE_FORMAT: u32 = 1;

/// Where a stage's manifest lives in its folder.
pub const MANIFEST: &str = "manifest.json";

/// An output file or folder of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path relative to the state folder (`runs/<id>/<stage>/…`).
    pub path: String,
    /// SHA-256 of the file (of every file, for a folder).
    pub sha256: String,
    /// Size in bytes (sum, for a folder).
    pub bytes: u64,
}

/// A stage's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Started, not finished (or killed).
    Running,
    /// Finished; outputs valid.
    Complete,
    /// Failed; `error` says why.
    Failed,
}

/// The manifest of one stage of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageManifest {
    /// The stage.
    pub stage: String,
    /// The run.
    pub run_id: String,
    /// Status.
    pub status: StageStatus,
    /// Hash over every input and the configuration.
    pub input_hash: String,
    /// Inputs by name: content hashes (or values).
    pub inputs: BTreeMap<String, String>,
    /// The configuration the stage ran with.
    pub config: serde_json::Value,
    /// The repository's commit (`HEAD`), when it is a git repository.
    pub git_commit: Option<String>,
    /// Outputs by name.
    pub outputs: BTreeMap<String, Artifact>,
    /// Metrics by name.
    pub metrics: BTreeMap<String, f64>,
    /// When it started (UTC).
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Seconds it ran (0 when reused).
    pub seconds: f64,
    /// The run whose outputs were reused (same input hash).
    pub reused_from: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The forge-core version.
    pub forge_version: String,
}

impl StageManifest {
    /// Hash over the outputs' hashes (what downstream stages depend on).
    pub fn output_hash(&self) -> String {
        hash_parts(
            &self
                .outputs
                .iter()
                .map(|(k, a)| (k.as_str(), a.sha256.clone()))
                .collect::<Vec<_>>(),
        )
    }

    fn output(&self, state: &Path, name: &str) -> Result<PathBuf> {
        self.outputs
            .get(name)
            .map(|a| state.join(&a.path))
            .ok_or_else(|| Error::Stage {
                stage: "pipeline",
                message: format!("stage {} has no output {name:?}", self.stage),
            })
    }
}

/// The outcome of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// In progress (or killed: resume it).
    Running,
    /// The gate passed and the model is now active.
    Deployed,
    /// The gate passed and this exact model was already active.
    Unchanged,
    /// The gate failed: the model was registered as rejected, the active model stays.
    Rejected,
    /// Training diverged.
    Diverged,
    /// A stage failed.
    Failed,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Deployed => "deployed",
            RunStatus::Unchanged => "unchanged",
            RunStatus::Rejected => "rejected",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
        })
    }
}

/// `run.json`: the run as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// The run id.
    pub id: String,
    /// Started (UTC).
    pub started_at: String,
    /// Finished.
    pub finished_at: Option<String>,
    /// Status.
    pub status: RunStatus,
    /// What started it (`manual`, `watch: 6 files changed`, …).
    pub trigger: String,
    /// The repository's commit.
    pub git_commit: Option<String>,
    /// Stages with their manifests' status (`ran`, `reused`, `failed`).
    pub stages: Vec<(String, String)>,
    /// Whether the judge's gate passed.
    pub gate_passed: Option<bool>,
    /// The registry id of the model this run produced.
    pub model_id: Option<i64>,
    /// The error that ended the run.
    pub error: Option<String>,
}

/// How a stage was satisfied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "how", content = "from")]
pub enum StageOutcome {
    /// It ran.
    Ran,
    /// Outputs of an identical earlier stage (this run, or the run named) were reused.
    Reused(String),
}

/// Receives the pipeline's events (the CLI draws progress bars from them).
pub trait Observer: Send + Sync {
    /// A stage starts.
    fn stage_started(&self, _stage: &str) {}
    /// A stage ended.
    fn stage_done(&self, _stage: &str, _outcome: &StageOutcome, _seconds: f64) {}
    /// One training step ended.
    fn train_step(&self, _metrics: &StepMetrics) {}
    /// Progress within a stage (`done` of `total` units of work).
    fn progress(&self, _stage: &str, _done: u64, _total: u64) {}
    /// A line for the user.
    fn message(&self, _text: &str) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;
impl Observer for Silent {}

/// Options of one pipeline run.
#[derive(Clone)]
#[must_use]
pub struct RunOptions {
    pub(crate) trigger: String,
    pub(crate) resume: bool,
    pub(crate) observer: Arc<dyn Observer>,
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("trigger", &self.trigger)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RunOptions {
    /// A manual run, a new run folder, no observer.
    pub fn new() -> Self {
        Self {
            trigger: "manual".into(),
            resume: false,
            observer: Arc::new(Silent),
        }
    }
    /// What started the run (recorded in `run.json` and the registry).
    pub fn with_trigger(mut self, trigger: impl Into<String>) -> Self {
        self.trigger = trigger.into();
        self
    }
    /// Continue the latest unfinished run in its own folder (training resumes from its
    /// checkpoint) instead of starting a new one.
    pub fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }
    /// The event receiver.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }
}

/// What a run did, with the paths a user wants.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run id.
    pub run_id: String,
    /// Its folder.
    pub run_dir: PathBuf,
    /// Final status.
    pub status: RunStatus,
    /// Each stage and how it was satisfied.
    pub stages: Vec<(String, StageOutcome)>,
    /// The gate's verdict.
    pub gate_passed: Option<bool>,
    /// The gate's reasons when it failed.
    pub gate_reasons: Vec<String>,
    /// The registry id of the model.
    pub model_id: Option<i64>,
    /// Candidate metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Baseline metrics.
    pub baseline: BTreeMap<String, f64>,
    /// `index.html` of the run.
    pub index: PathBuf,
    /// The live training dashboard.
    pub dashboard: Option<PathBuf>,
    /// The judge's HTML report.
    pub report: Option<PathBuf>,
    /// Loss plots (SVG, PNG).
    pub loss_plots: Vec<PathBuf>,
    /// Evaluation plots (SVG, PNG).
    pub eval_plots: Vec<PathBuf>,
    /// The deployed GGUF.
    pub gguf: Option<PathBuf>,
    /// The Modelfile.
    pub modelfile: Option<PathBuf>,
    /// What deploy did (`ollama create …`, or the command to run).
    pub deploy_note: Option<String>,
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "run {}: {}", self.run_id, self.status)?;
        for (s, o) in &self.stages {
            match o {
                StageOutcome::Ran => writeln!(f, "  {s:<8} ran")?,
                StageOutcome::Reused(from) => {
                    writeln!(f, "  {s:<8} unchanged (reused from run {from})")?
                }
            }
        }
        if !self.metrics.is_empty() {
            writeln!(f, "  metric            base   fine-tuned")?;
            for (k, v) in &self.metrics {
                let b = self
                    .baseline
                    .get(k)
                    .map_or_else(|| "-".to_string(), |b| format!("{b:.4}"));
                writeln!(f, "  {k:<16} {b:>7}   {v:.4}")?;
            }
        }
        match self.gate_passed {
            Some(true) => writeln!(f, "gate: PASS")?,
            Some(false) => {
                writeln!(f, "gate: FAIL")?;
                for r in &self.gate_reasons {
                    writeln!(f, "  {r}")?;
                }
            }
            None => {}
        }
        if let Some(id) = self.model_id {
            writeln!(f, "model: {id} in the registry")?;
        }
        if let Some(n) = &self.deploy_note {
            writeln!(f, "deploy: {n}")?;
        }
        let mut line = |what: &str, p: &Path| writeln!(f, "{what:<10} {}", p.display());
        line("run", &self.index)?;
        if let Some(p) = &self.dashboard {
            line("dashboard", p)?;
        }
        if let Some(p) = &self.report {
            line("report", p)?;
        }
        for p in self.loss_plots.iter().chain(&self.eval_plots) {
            line("plot", p)?;
        }
        if let Some(p) = &self.gguf {
            line("gguf", p)?;
        }
        if let Some(p) = &self.modelfile {
            line("modelfile", p)?;
        }
        Ok(())
    }
}

/// The repository's `HEAD` commit, when `repo` is in a git work tree.
pub fn git_head(repo: &Path) -> Option<String> {
    let r = gix::discover(repo).ok()?;
    r.head_id().ok().map(|id| id.to_string())
}

fn new_run_id(runs: &Path) -> String {
    let ts = utc_now().replace(['-', ':'], "");
    let base = format!("{ts}-{:05}", std::process::id() % 100_000);
    let mut id = base.clone();
    let mut k = 1;
    while runs.join(&id).exists() {
        id = format!("{base}-{k}");
        k += 1;
    }
    id
}

/// Run ids in `runs`, oldest first (ids sort by time).
pub fn run_ids(runs: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("run.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Reads a run's `run.json`.
pub fn read_run(runs: &Path, id: &str) -> Result<RunManifest> {
    read_json(&runs.join(id).join("run.json"))
}

/// Reads a run's stage manifest.
pub fn read_stage(runs: &Path, id: &str, stage: &str) -> Result<StageManifest> {
    read_json(&runs.join(id).join(stage).join(MANIFEST))
}

/// Parses forge-peft's `metrics.jsonl` (the last line of each step wins, so a resumed
/// run that repeated steps shows each once).
pub fn read_metrics(path: &Path) -> Result<Vec<StepPoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut by_step = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        // NaN losses are written as null by serde_json.
        let mut v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", i + 1),
        })?;
        if v.get("loss").is_some_and(serde_json::Value::is_null) {
            v["loss"] = serde_json::json!(f64::MAX);
        }
        let m: StepPoint = serde_json::from_value(v).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", i + 1),
        })?;
        by_step.insert(m.step, m);
    }
    Ok(by_step.into_values().collect())
}

type StageResult = (BTreeMap<String, PathBuf>, BTreeMap<String, f64>);

/// One run of the pipeline over a configuration.
pub(crate) struct Pipeline<'a> {
    cfg: &'a ForgeConfig,
    registry: &'a Registry,
    opts: RunOptions,
    run_id: String,
    run_dir: PathBuf,
    git_commit: Option<String>,
    mined: Option<Mined>,
    model_hash: Option<String>,
    done: BTreeMap<&'static str, StageManifest>,
    outcomes: Vec<(String, StageOutcome)>,
    run: RunManifest,
}

impl<'a> Pipeline<'a> {
    pub(crate) fn new(
        cfg: &'a ForgeConfig,
        registry: &'a Registry,
        opts: RunOptions,
    ) -> Result<Self> {
        let runs = cfg.runs_dir();
        std::fs::create_dir_all(&runs).map_err(|e| Error::io(&runs, e))?;
        let git_commit = git_head(&cfg.repo);
        let resumable = if opts.resume {
            run_ids(&runs).into_iter().rev().find(|id| {
                read_run(&runs, id).is_ok_and(|r| {
                    matches!(
                        r.status,
                        RunStatus::Running | RunStatus::Failed | RunStatus::Diverged
                    )
                })
            })
        } else {
            None
        };
        let (run_id, run) = match resumable {
            Some(id) => {
                let mut r = read_run(&runs, &id)?;
                r.status = RunStatus::Running;
                r.error = None;
                r.finished_at = None;
                r.stages.clear();
                r.git_commit.clone_from(&git_commit);
                opts.observer.message(&format!("resuming run {id}"));
                (id, r)
            }
            None => {
                let id = new_run_id(&runs);
                let r = RunManifest {
                    id: id.clone(),
                    started_at: utc_now(),
                    finished_at: None,
                    status: RunStatus::Running,
                    trigger: opts.trigger.clone(),
                    git_commit: git_commit.clone(),
                    stages: Vec::new(),
                    gate_passed: None,
                    model_id: None,
                    error: None,
                };
                (id, r)
            }
        };
        let run_dir = runs.join(&run_id);
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
        let p = Self {
            cfg,
            registry,
            opts,
            run_id,
            run_dir,
            git_commit,
            mined: None,
            model_hash: None,
            done: BTreeMap::new(),
            outcomes: Vec::new(),
            run,
        };
        p.write_run()?;
        registry.record_run(
            &p.run_id,
            "running",
            &p.run.trigger,
            p.git_commit.as_deref(),
            false,
        )?;
        Ok(p)
    }

    fn write_run(&self) -> Result<()> {
        write_json(&self.run_dir.join("run.json"), &self.run)
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.cfg.state_dir)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    }

    /// Runs every stage; on failure the run is marked failed (or diverged) and the
    /// error returned.
    pub(crate) fn run(mut self) -> Result<RunReport> {
        tracing::info!(run = %self.run_id, trigger = %self.run.trigger, "pipeline run");
        let result = self.stages();
        match result {
            Ok(report) => Ok(report),
            Err(e) => {
                self.run.status = if matches!(e, Error::Peft(forge_peft::Error::Diverged { .. })) {
                    RunStatus::Diverged
                } else {
                    RunStatus::Failed
                };
                self.run.error = Some(e.to_string());
                self.run.finished_at = Some(utc_now());
                let _ = self.write_run();
                let _ = self.write_index();
                let _ = self.registry.record_run(
                    &self.run_id,
                    &self.run.status.to_string(),
                    &self.run.trigger,
                    self.git_commit.as_deref(),
                    true,
                );
                tracing::warn!(run = %self.run_id, error = %e, "pipeline failed");
                Err(e)
            }
        }
    }

    fn stages(&mut self) -> Result<RunReport> {
        self.mine()?;
        self.dataset()?;
        self.train()?;
        self.judge()?;
        self.export()?;
        let (note, model_id, status) = self.deploy()?;
        self.run.status = status;
        self.run.model_id = model_id;
        self.run.finished_at = Some(utc_now());
        self.write_run()?;
        self.registry.record_run(
            &self.run_id,
            &status.to_string(),
            &self.run.trigger,
            self.git_commit.as_deref(),
            true,
        )?;
        let index = self.write_index()?;
        self.report(index, note)
    }

    fn report(&self, index: PathBuf, deploy_note: Option<String>) -> Result<RunReport> {
        let state = &self.cfg.state_dir;
        let out = |stage: &str, name: &str| {
            self.done
                .get(stage)
                .and_then(|m| m.outputs.get(name))
                .map(|a| state.join(&a.path))
        };
        let judge = self.done.get("judge");
        let (mut metrics, mut baseline, mut reasons) =
            (BTreeMap::new(), BTreeMap::new(), Vec::new());
        if let Some(j) = judge {
            let c: EvalResults = read_json(&j.output(state, "candidate")?)?;
            let b: EvalResults = read_json(&j.output(state, "baseline")?)?;
            metrics = c.metrics;
            baseline = b.metrics;
            let r: serde_json::Value = read_json(&j.output(state, "report_json")?)?;
            reasons = r["verdict"]["checks"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c["passed"] == false)
                        .filter_map(|c| c["reason"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
        }
        let first = self
            .cfg
            .export
            .types
            .first()
            .map(|t| t.as_str())
            .unwrap_or("gguf");
        Ok(RunReport {
            run_id: self.run_id.clone(),
            run_dir: self.run_dir.clone(),
            status: self.run.status,
            stages: self.outcomes.clone(),
            gate_passed: self.run.gate_passed,
            gate_reasons: reasons,
            model_id: self.run.model_id,
            metrics,
            baseline,
            index,
            dashboard: out("train", "dashboard"),
            report: out("judge", "report_html"),
            loss_plots: [out("train", "loss_svg"), out("train", "loss_png")]
                .into_iter()
                .flatten()
                .collect(),
            eval_plots: [out("judge", "eval_svg"), out("judge", "eval_png")]
                .into_iter()
                .flatten()
                .collect(),
            gguf: out("export", &format!("gguf_{first}")),
            modelfile: out("export", "modelfile"),
            deploy_note,
        })
    }

    /// Finds a completed manifest of `stage` with `input_hash` whose outputs exist:
    /// this run's first, then earlier runs, newest first.
    fn cached(&self, stage: &str, input_hash: &str) -> Option<StageManifest> {
        let runs = self.cfg.runs_dir();
        let mut ids = run_ids(&runs);
        ids.retain(|id| id != &self.run_id);
        ids.push(self.run_id.clone());
        ids.into_iter().rev().find_map(|id| {
            let m = read_stage(&runs, &id, stage).ok()?;
            let ok = m.status == StageStatus::Complete
                && m.input_hash == input_hash
                && m.outputs
                    .values()
                    .all(|a| self.cfg.state_dir.join(&a.path).exists());
            ok.then_some(m)
        })
    }

    fn stage(
        &mut self,
        name: &'static str,
        inputs: BTreeMap<String, String>,
        config: serde_json::Value,
        body: impl FnOnce(&mut Self, &Path) -> Result<StageResult>,
    ) -> Result<()> {
        let mut parts: Vec<(&str, String)> = inputs
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        parts.push(("config", config.to_string()));
        parts.push(("stage_format", STAGE_FORMAT.to_string()));
        let input_hash = hash_parts(&parts);
        let dir = self.run_dir.join(name);
        if let Some(prev) = self.cached(name, &input_hash) {
            let from = prev.run_id.clone();
            let mut m = prev;
            if from != self.run_id {
                m.reused_from = Some(m.reused_from.clone().unwrap_or(from.clone()));
                m.run_id = self.run_id.clone();
                m.seconds = 0.0;
                m.git_commit.clone_from(&self.git_commit);
                write_json(&dir.join(MANIFEST), &m)?;
            }
            let origin = m.reused_from.clone().unwrap_or(from);
            tracing::info!(stage = name, from = %origin, "inputs unchanged: reusing outputs");
            let outcome = StageOutcome::Reused(origin);
            self.opts.observer.stage_done(name, &outcome, 0.0);
            self.outcomes.push((name.to_string(), outcome));
            self.run.stages.push((name.to_string(), "reused".into()));
            self.done.insert(name, m);
            self.write_run()?;
            return Ok(());
        }
        // A folder left by an attempt with other inputs (a changed configuration on
        // `--resume`): start clean, so no stale checkpoint is resumed. An attempt with the
        // same inputs keeps its files (training resumes from its checkpoint).
        if let Ok(old) = read_json::<StageManifest>(&dir.join(MANIFEST))
            && old.input_hash != input_hash
        {
            tracing::info!(
                stage = name,
                "inputs changed since the last attempt: starting clean"
            );
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut m = StageManifest {
            stage: name.to_string(),
            run_id: self.run_id.clone(),
            status: StageStatus::Running,
            input_hash,
            inputs,
            config,
            git_commit: self.git_commit.clone(),
            outputs: BTreeMap::new(),
            metrics: BTreeMap::new(),
            started_at: utc_now(),
            finished_at: None,
            seconds: 0.0,
            reused_from: None,
            error: None,
            forge_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        write_json(&dir.join(MANIFEST), &m)?;
        tracing::info!(stage = name, run = %self.run_id, "stage started");
        self.opts.observer.stage_started(name);
        let t0 = Instant::now();
        let result = body(self, &dir);
        m.seconds = t0.elapsed().as_secs_f64();
        m.finished_at = Some(utc_now());
        match result {
            Ok((outputs, metrics)) => {
                for (k, p) in outputs {
                    let bytes = dir_bytes(&p);
                    m.outputs.insert(
                        k,
                        Artifact {
                            path: self.rel(&p),
                            sha256: sha256_path(&p)?,
                            bytes,
                        },
                    );
                }
                m.metrics = metrics;
                m.status = StageStatus::Complete;
                write_json(&dir.join(MANIFEST), &m)?;
                tracing::info!(stage = name, seconds = m.seconds, "stage complete");
                self.opts
                    .observer
                    .stage_done(name, &StageOutcome::Ran, m.seconds);
                self.outcomes.push((name.to_string(), StageOutcome::Ran));
                self.run.stages.push((name.to_string(), "ran".into()));
                self.done.insert(name, m);
                self.write_run()?;
                Ok(())
            }
            Err(e) => {
                m.status = StageStatus::Failed;
                m.error = Some(e.to_string());
                write_json(&dir.join(MANIFEST), &m)?;
                self.run.stages.push((name.to_string(), "failed".into()));
                Err(e)
            }
        }
    }

    fn done(&self, stage: &str) -> Result<&StageManifest> {
        self.done.get(stage).ok_or_else(|| Error::Stage {
            stage: "pipeline",
            message: format!("stage {stage} has not run"),
        })
    }

    fn out(&self, stage: &str, name: &str) -> Result<PathBuf> {
        self.done(stage)?.output(&self.cfg.state_dir, name)
    }

    fn model_hash(&mut self) -> Result<String> {
        if let Some(h) = &self.model_hash {
            return Ok(h.clone());
        }
        let path = match ModelSource::parse(&self.cfg.model) {
            ModelSource::Default => default_model_path()?,
            ModelSource::Gguf(p) | ModelSource::HfDir(p) => p,
        };
        let h = sha256_path(&path)?;
        self.model_hash = Some(h.clone());
        Ok(h)
    }

    fn mined(&mut self) -> Result<&Mined> {
        if self.mined.is_none() {
            let miner = Miner::from_config(&self.cfg.repo, self.cfg.miner.clone())?;
            let mut mined = miner.mine(&NoProgress)?;
            mined.files.retain(|f| self.cfg.selects(&f.path));
            mined.skipped.retain(|s| self.cfg.selects(&s.path));
            self.mined = Some(mined);
        }
        self.mined.as_ref().ok_or_else(|| Error::Stage {
            stage: "mine",
            message: "no mining result".into(),
        })
    }

    /// The repository's files as the mining walk sees them (`.gitignore` honoured,
    /// hidden files skipped), with `include`/`exclude` applied: `path sha256` lines.
    fn repo_fingerprint(&self) -> Result<String> {
        let mut files = Vec::new();
        let walk = ignore::WalkBuilder::new(&self.cfg.repo)
            .hidden(true)
            .require_git(false)
            .build();
        for e in walk {
            let e = e.map_err(|e| Error::Stage {
                stage: "mine",
                message: format!("walking {}: {e}", self.cfg.repo.display()),
            })?;
            if !e.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let rel = e
                .path()
                .strip_prefix(&self.cfg.repo)
                .unwrap_or(e.path())
                .to_string_lossy()
                .replace('\\', "/");
            if self.cfg.selects(&rel) {
                files.push((rel, sha256_file(e.path())?));
            }
        }
        files.sort();
        Ok(files.iter().map(|(p, h)| format!("{p} {h}\n")).collect())
    }

    fn mine(&mut self) -> Result<()> {
        let fingerprint = self.repo_fingerprint()?;
        let inputs = BTreeMap::from([
            ("repo_files".to_string(), sha256_hex(fingerprint.as_bytes())),
            ("repo".to_string(), self.cfg.repo.display().to_string()),
        ]);
        let config = serde_json::json!({
            "include": self.cfg.include, "exclude": self.cfg.exclude,
            "budget": self.cfg.miner.budget,
            "filters": self.cfg.miner.filters,
        });
        self.stage("mine", inputs, config, |p, dir| {
            let mined = p.mined()?;
            let units = dir.join("units.jsonl");
            forge_miner::write_units(&units, mined.units())?;
            let files: Vec<serde_json::Value> = mined
                .files
                .iter()
                .map(|f| serde_json::json!({"path": f.path, "language": f.language, "bytes": f.bytes, "units": f.units.len()}))
                .collect();
            let files_path = dir.join("files.json");
            write_json(&files_path, &serde_json::json!({"files": files, "skipped": mined.skipped.len(), "seen": mined.files_seen}))?;
            let metrics = BTreeMap::from([
                ("files".to_string(), mined.files.len() as f64),
                ("units".to_string(), mined.units().count() as f64),
                ("bytes".to_string(), mined.bytes() as f64),
            ]);
            if mined.files.is_empty() {
                return Err(Error::Stage {
                    stage: "mine",
                    message: format!(
                        "no file of {} was mined (supported languages: Rust, Python; check repo.include/exclude)",
                        p.cfg.repo.display()
                    ),
                });
            }
            Ok((BTreeMap::from([("units".into(), units), ("files".into(), files_path)]), metrics))
        })
    }

    fn dataset(&mut self) -> Result<()> {
        let mine = self.done("mine")?.output_hash();
        let inputs = BTreeMap::from([("mine".to_string(), mine)]);
        let config = serde_json::json!({
            "dataset": self.cfg.miner.dataset,
            "max_train_records": self.cfg.max_train_records,
        });
        self.stage("dataset", inputs, config, |p, dir| {
            let miner = Miner::from_config(&p.cfg.repo, p.cfg.miner.clone())?;
            let max_train = p.cfg.max_train_records;
            let format = p.cfg.miner.dataset.format;
            let seed = p.cfg.miner.dataset.seed;
            let mut ds = miner.build_dataset(p.mined()?, &NoProgress)?;
            if let Some(train) = ds.splits.get_mut(&Split::Train)
                && max_train > 0
                && train.len() > max_train
            {
                // Seeded Fisher–Yates, then the first `max_train`, back in their order.
                let mut idx: Vec<usize> = (0..train.len()).collect();
                let mut rng = SplitMix64::new(seed ^ 0x7261_696e);
                for i in (1..idx.len()).rev() {
                    let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                    idx.swap(i, j);
                }
                let mut keep: Vec<usize> = idx.into_iter().take(max_train).collect();
                keep.sort_unstable();
                *train = keep.into_iter().map(|i| train[i].clone()).collect();
            }
            let mut outputs = BTreeMap::new();
            let mut metrics = BTreeMap::new();
            for split in Split::ALL {
                let records = ds.splits.get(&split).map(Vec::as_slice).unwrap_or(&[]);
                let path = dir.join(format.file_name(split));
                forge_miner::dataset::write_records(&path, format, records)?;
                metrics.insert(format!("records_{}", split.as_str()), records.len() as f64);
                outputs.insert(split.as_str().to_string(), path);
            }
            if ds.splits.get(&Split::Train).is_none_or(Vec::is_empty) {
                return Err(Error::Stage {
                    stage: "dataset",
                    message: "no training record (too few units or files; see card.md)".into(),
                });
            }
            // Which source files each split holds (the record formats drop the source).
            let split_files: BTreeMap<&str, std::collections::BTreeSet<&str>> = ds
                .splits
                .iter()
                .map(|(s, rs)| {
                    (
                        s.as_str(),
                        rs.iter().map(|r| r.source.path.as_str()).collect(),
                    )
                })
                .collect();
            let split_path = dir.join("split_files.json");
            write_json(&split_path, &split_files)?;
            outputs.insert("split_files".into(), split_path);
            let card = dir.join("card.json");
            write_json(&card, &ds.card)?;
            let card_md = dir.join("card.md");
            write_atomic(&card_md, ds.card.to_markdown().as_bytes())?;
            outputs.insert("card".into(), card);
            outputs.insert("card_md".into(), card_md);
            Ok((outputs, metrics))
        })
    }

    fn run_config(&self, train_dir: Option<&Path>) -> Result<forge_peft::RunConfig> {
        let mut rf = self.cfg.run_file.clone();
        let valid = self.out("dataset", "valid")?;
        let has_valid = std::fs::metadata(&valid).is_ok_and(|m| m.len() > 0);
        rf.data = DataFile {
            train: Some(self.out("dataset", "train")?),
            valid: has_valid.then_some(valid),
            ..rf.data
        };
        rf.output_dir = train_dir.map(Path::to_path_buf);
        if !has_valid {
            rf.train.eval_every = 0;
        }
        Ok(rf.resolve(&self.cfg.base_dir)?)
    }

    fn train(&mut self) -> Result<()> {
        let d = self.done("dataset")?;
        let inputs = BTreeMap::from([
            (
                "train".to_string(),
                d.outputs
                    .get("train")
                    .map(|a| a.sha256.clone())
                    .unwrap_or_default(),
            ),
            (
                "valid".to_string(),
                d.outputs
                    .get("valid")
                    .map(|a| a.sha256.clone())
                    .unwrap_or_default(),
            ),
            ("model".to_string(), self.model_hash()?),
        ]);
        let config = serde_json::json!({
            "model": self.cfg.model,
            "data": self.cfg.file.data,
            "adapter": self.cfg.file.adapter,
            "train": self.cfg.file.train,
        });
        self.stage("train", inputs, config, |p, dir| {
            let rc = p.run_config(Some(dir))?;
            let dash = dir.join("dashboard.html");
            let metrics_path = dir.join("metrics.jsonl");
            let mut history = read_metrics(&metrics_path)?;
            dashboard::write_train_dashboard(&dash, &p.run_id, &history, &TrainState::Running)?;
            let observer = p.opts.observer.clone();
            let (dash2, run_id) = (dash.clone(), p.run_id.clone());
            let result = crate::train::run_config(&rc, true, move |m| {
                history.retain(|h| h.step < m.step);
                history.push(StepPoint::from(m));
                if let Err(e) = dashboard::write_train_dashboard(
                    &dash2,
                    &run_id,
                    &history,
                    &TrainState::Running,
                ) {
                    tracing::warn!(error = %e, "dashboard not updated");
                }
                observer.train_step(m);
            });
            let history = read_metrics(&metrics_path)?;
            let summary = match result {
                Ok(s) => s,
                Err(e) => {
                    let state = match &e {
                        Error::Peft(forge_peft::Error::Diverged {
                            step,
                            reason,
                            checkpoint,
                        }) => TrainState::Diverged {
                            step: *step,
                            reason: reason.clone(),
                            checkpoint: checkpoint.clone(),
                        },
                        other => TrainState::Failed(other.to_string()),
                    };
                    dashboard::write_train_dashboard(&dash, &p.run_id, &history, &state)?;
                    let _ = dashboard::write_loss_plots(&history, dir);
                    return Err(e);
                }
            };
            dashboard::write_train_dashboard(&dash, &p.run_id, &history, &TrainState::Done)?;
            let [svg, png] = dashboard::write_loss_plots(&history, dir)?;
            let adapters = dir.join("adapters");
            let mut metrics = BTreeMap::from([
                ("examples".to_string(), summary.examples as f64),
                ("trainable".to_string(), summary.trainable as f64),
            ]);
            if let (Some(first), Some(last)) = (history.first(), history.last()) {
                metrics.insert("steps".into(), last.step as f64);
                metrics.insert("loss_first".into(), f64::from(first.loss));
                metrics.insert("loss_last".into(), f64::from(last.loss));
                metrics.insert("peak_rss_bytes".into(), last.peak_rss as f64);
            }
            if let Some(v) = history.iter().rev().find_map(|m| m.val_loss) {
                metrics.insert("val_loss".into(), f64::from(v));
            }
            Ok((
                BTreeMap::from([
                    ("adapters".into(), adapters),
                    ("metrics".into(), metrics_path),
                    ("dashboard".into(), dash),
                    ("loss_svg".into(), svg),
                    ("loss_png".into(), png),
                ]),
                metrics,
            ))
        })
    }

    fn judge(&mut self) -> Result<()> {
        let t = self.done("train")?;
        let adapters_hash = t
            .outputs
            .get("adapters")
            .map(|a| a.sha256.clone())
            .unwrap_or_default();
        let d = self.done("dataset")?;
        let held = |s: &str| d.outputs.get(s).map(|a| (a.sha256.clone(), a.bytes));
        let inputs = BTreeMap::from([
            ("adapters".to_string(), adapters_hash),
            (
                "test".to_string(),
                held("test").map(|h| h.0).unwrap_or_default(),
            ),
            (
                "valid".to_string(),
                held("valid").map(|h| h.0).unwrap_or_default(),
            ),
            ("mine".to_string(), self.done("mine")?.output_hash()),
            ("model".to_string(), self.model_hash()?),
        ]);
        let config = serde_json::to_value(&self.cfg.judge).unwrap_or_default();
        self.stage("judge", inputs, config, |p, dir| p.judge_body(dir))
    }

    fn judge_body(&mut self, dir: &Path) -> Result<StageResult> {
        let j = self.cfg.judge.clone();
        let adapters = self.out("train", "adapters")?;
        // Held-out records: the test split (files never trained on), else validation.
        let mut split = "test";
        if std::fs::metadata(self.out("dataset", "test")?).map_or(0, |m| m.len()) == 0 {
            split = "valid";
        }
        let records = forge_miner::dataset::read_records(&self.out("dataset", split)?)?;
        if records.is_empty() {
            return Err(Error::Stage {
                stage: "judge",
                message: "no held-out record (test and validation splits are empty): add files or raise dataset.test_fraction".into(),
            });
        }
        let split_files: BTreeMap<String, Vec<String>> =
            read_json(&self.out("dataset", "split_files")?)?;
        let held_files: std::collections::BTreeSet<String> = split_files
            .get(split)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let heldout = dir.join("heldout.jsonl");
        let format = self.cfg.miner.dataset.format;
        let take: Vec<_> = records
            .iter()
            .take(j.max_examples.max(1))
            .cloned()
            .collect();
        forge_miner::dataset::write_records(&heldout, format, &take)?;
        let mut units = forge_judge::held_out_from_mined(self.mined()?);
        units.retain(|u| held_files.contains(&u.path));
        units.truncate(j.reconstruct_units);
        let rc = self.run_config(None)?;
        let ppl_opts = PerplexityOptions::from_data_config(&rc.data).with_batch_size(j.batch_size);
        let model = self.cfg.model.clone();
        let observer = self.opts.observer.clone();
        let evaluate = |label: String, adapter: Option<&Path>, what: &str| -> Result<EvalResults> {
            let mut results = EvalResults::new(label);
            if j.perplexity {
                let (mut m, tok) = forge_judge::load_for_eval(&model, adapter)?;
                let p = forge_judge::perplexity(
                    &mut m,
                    &tok,
                    &heldout,
                    &ppl_opts,
                    &mut |done, total| {
                        observer.progress("judge", done as u64, total as u64);
                    },
                )?;
                tracing::info!(
                    model = what,
                    perplexity = p.perplexity,
                    tokens = p.tokens,
                    "perplexity"
                );
                results = results
                    .with_metric("perplexity", p.perplexity)
                    .with_metric("mean_loss", p.mean_loss);
            }
            if !units.is_empty() {
                let (m, tok) = forge_judge::load_for_eval(&model, adapter)?;
                let mut m = m.into_model()?;
                let bodies = forge_judge::generate_bodies(
                    &mut m,
                    &tok,
                    &units,
                    &ReconstructOptions {
                        max_tokens: j.max_tokens,
                        seed: 0,
                    },
                    &mut |done, total| observer.progress("judge", done as u64, total as u64),
                )?;
                let r = forge_judge::score_units(&units, &bodies)?;
                tracing::info!(model = what, codebleu = r.codebleu, "reconstruction");
                let rr = r.to_results(results.label.clone());
                results.metrics.extend(rr.metrics);
                results.tasks.extend(rr.tasks);
            }
            Ok(results)
        };
        self.opts.observer.message("judge: base model");
        let baseline = evaluate(format!("{model} (base)"), None, "base")?;
        self.opts.observer.message("judge: fine-tuned model");
        let candidate = evaluate(
            format!("{model} + adapters ({})", self.run_id),
            Some(&adapters),
            "fine-tuned",
        )?;
        let base_path = dir.join("baseline.json");
        let cand_path = dir.join("candidate.json");
        baseline.write(&base_path)?;
        candidate.write(&cand_path)?;
        let report = Report::new(&candidate, &baseline, &j.gate);
        let [rj, rm, rh] = report.write(dir)?;
        let [es, ep] = dashboard::write_eval_plots(&report, dir)?;
        let mut metrics: BTreeMap<String, f64> = candidate.metrics.clone();
        for (k, v) in &baseline.metrics {
            metrics.insert(format!("base_{k}"), *v);
        }
        metrics.insert(
            "gate_passed".into(),
            f64::from(u8::from(report.verdict.passed)),
        );
        metrics.insert("heldout_records".into(), take.len() as f64);
        metrics.insert("heldout_units".into(), units.len() as f64);
        Ok((
            BTreeMap::from([
                ("heldout".into(), heldout),
                ("baseline".into(), base_path),
                ("candidate".into(), cand_path),
                ("report_json".into(), rj),
                ("report_md".into(), rm),
                ("report_html".into(), rh),
                ("eval_svg".into(), es),
                ("eval_png".into(), ep),
            ]),
            metrics,
        ))
    }

    fn export(&mut self) -> Result<()> {
        let t = self.done("train")?;
        let inputs = BTreeMap::from([
            (
                "adapters".to_string(),
                t.outputs
                    .get("adapters")
                    .map(|a| a.sha256.clone())
                    .unwrap_or_default(),
            ),
            ("model".to_string(), self.model_hash()?),
        ]);
        let config = serde_json::to_value(&self.cfg.export).unwrap_or_default();
        self.stage("export", inputs, config, |p, dir| {
            let adapters = p.out("train", "adapters")?;
            let source = ModelSource::parse(&p.cfg.model);
            let mut outputs = BTreeMap::new();
            let mut metrics = BTreeMap::new();
            for (i, t) in p.cfg.export.types.iter().enumerate() {
                let path = dir.join(format!("model-{}.gguf", t.as_str()));
                let options = ExportOptions::new(*t).with_adapter(&adapters);
                let observer = p.opts.observer.clone();
                let mut progress = |e: &ExportProgress<'_>| {
                    observer.progress("export", e.done as u64, e.total as u64)
                };
                let (report, spec) = export(&source, &options, &path, &mut progress)?;
                metrics.insert(format!("{}_bytes", t.as_str()), report.file_bytes as f64);
                metrics.insert(
                    format!("{}_bits_per_weight", t.as_str()),
                    report.bits_per_weight(),
                );
                if i == 0 && p.cfg.export.modelfile {
                    let mf = write_modelfile(&path, &spec.tokenizer, &OllamaOptions::default())?;
                    outputs.insert("modelfile".to_string(), mf);
                }
                outputs.insert(format!("gguf_{}", t.as_str()), path);
            }
            Ok((outputs, metrics))
        })
    }

    /// Registers the model; makes it active when the gate passed. Returns the note,
    /// the model id and the run status.
    fn deploy(&mut self) -> Result<(Option<String>, Option<i64>, RunStatus)> {
        let state = self.cfg.state_dir.clone();
        let judge = self.done("judge")?.clone();
        let passed = judge.metrics.get("gate_passed").is_some_and(|v| *v > 0.5);
        self.run.gate_passed = Some(passed);
        let export = self.done("export")?.clone();
        let first = self.cfg.export.types[0].as_str();
        let gguf = export.output(&state, &format!("gguf_{first}"))?;
        let gguf_sha = export
            .outputs
            .get(&format!("gguf_{first}"))
            .map(|a| a.sha256.clone())
            .unwrap_or_default();
        let modelfile = export.outputs.get("modelfile").map(|a| state.join(&a.path));
        let dir = self.run_dir.join("deploy");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        self.opts.observer.stage_started("deploy");
        let t0 = Instant::now();
        let active = self.registry.active()?;
        let reason = |r: &serde_json::Value| -> Vec<String> {
            r["verdict"]["checks"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c["passed"] == false)
                        .filter_map(|c| c["reason"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        // The same GGUF deployed before: never register or re-deploy it again (after a
        // rollback, re-running unchanged inputs must not undo the rollback).
        let known = self
            .registry
            .models()?
            .into_iter()
            .find(|m| m.gate_passed && m.gguf_sha256 == gguf_sha);
        let (note, model_id, status) = if let (true, Some(m)) = (passed, &known) {
            let note = if active.as_ref().is_some_and(|a| a.id == m.id) {
                format!("model {} is already active (same GGUF)", m.id)
            } else {
                format!(
                    "model {} (same GGUF) was deployed before and is not active now; \
                     `forge rollback --to {}` makes it active again",
                    m.id, m.id
                )
            };
            (note, Some(m.id), RunStatus::Unchanged)
        } else {
            let candidate: EvalResults = read_json(&judge.output(&state, "candidate")?)?;
            let id = self.registry.register(&NewModel {
                run_id: self.run_id.clone(),
                git_commit: self.git_commit.clone(),
                dataset_hash: self.done("dataset")?.output_hash(),
                base_model: self.cfg.model.clone(),
                gguf_path: gguf.clone(),
                gguf_sha256: gguf_sha.clone(),
                modelfile: modelfile.clone(),
                report_path: judge
                    .outputs
                    .get("report_html")
                    .map(|a| state.join(&a.path)),
                gate_passed: passed,
                metrics: serde_json::to_value(&candidate.metrics).unwrap_or_default(),
            })?;
            if passed {
                let (target, note) = self.ollama(modelfile.as_deref());
                self.registry.deploy(id, &target, &note)?;
                (note, Some(id), RunStatus::Deployed)
            } else {
                let r: serde_json::Value = read_json(&judge.output(&state, "report_json")?)?;
                let why = reason(&r).join("; ");
                self.registry.reject(id, &why)?;
                let keep = active.as_ref().map_or_else(
                    || "no model is active".to_string(),
                    |a| format!("model {} stays active", a.id),
                );
                (
                    format!("gate failed, model {id} not deployed ({keep}): {why}"),
                    Some(id),
                    RunStatus::Rejected,
                )
            }
        };
        let m = StageManifest {
            stage: "deploy".into(),
            run_id: self.run_id.clone(),
            status: StageStatus::Complete,
            input_hash: hash_parts(&[("gguf", gguf_sha), ("gate_passed", passed.to_string())]),
            inputs: BTreeMap::from([("gate_passed".to_string(), passed.to_string())]),
            config: serde_json::to_value(&self.cfg.deploy).unwrap_or_default(),
            git_commit: self.git_commit.clone(),
            outputs: BTreeMap::new(),
            metrics: model_id
                .map(|i| BTreeMap::from([("model_id".to_string(), i as f64)]))
                .unwrap_or_default(),
            started_at: utc_now(),
            finished_at: Some(utc_now()),
            seconds: t0.elapsed().as_secs_f64(),
            reused_from: None,
            error: None,
            forge_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        write_json(&dir.join(MANIFEST), &m)?;
        tracing::info!(status = %status, note = %note, "deploy");
        self.opts
            .observer
            .stage_done("deploy", &StageOutcome::Ran, m.seconds);
        self.outcomes.push(("deploy".into(), StageOutcome::Ran));
        self.run.stages.push(("deploy".into(), status.to_string()));
        self.done.insert("deploy", m);
        Ok((Some(note), model_id, status))
    }

    /// Runs `ollama create` when asked and available; returns the target and a note.
    fn ollama(&self, modelfile: Option<&Path>) -> (String, String) {
        let name = &self.cfg.deploy.name;
        let Some(mf) = modelfile else {
            return (
                "registry".into(),
                "registered (no Modelfile: export.modelfile = false)".into(),
            );
        };
        let cmd = format!("ollama create {name} -f {}", mf.display());
        if self.cfg.deploy.ollama == OllamaMode::Never {
            return (
                "registry".into(),
                format!("registered; to serve it with Ollama: {cmd}"),
            );
        }
        match on_path("ollama") {
            None => (
                "registry".into(),
                format!("registered; ollama is not on the PATH, run: {cmd}"),
            ),
            Some(bin) => match std::process::Command::new(bin)
                .args(["create", name, "-f"])
                .arg(mf)
                .status()
            {
                Ok(s) if s.success() => (
                    format!("ollama:{name}"),
                    format!("registered and created in Ollama as {name}"),
                ),
                Ok(s) => (
                    "registry".into(),
                    format!("registered; `{cmd}` exited with {s}"),
                ),
                Err(e) => (
                    "registry".into(),
                    format!("registered; `{cmd}` failed: {e}"),
                ),
            },
        }
    }

    /// Writes `index.html`: the stages and links to every page and plot.
    fn write_index(&self) -> Result<PathBuf> {
        let path = self.run_dir.join("index.html");
        let mut h = String::new();
        let _ = std::fmt::Write::write_fmt(
            &mut h,
            format_args!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>forge run {id}</title>\
                 <style>body{{font-family:sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:4px 8px}}\
                 table{{border-collapse:collapse}}</style></head><body><h1>Run {id}</h1>\
                 <p>status: <b>{status}</b> · trigger: {trigger} · commit: {commit}</p>",
                id = esc(&self.run_id),
                status = self.run.status,
                trigger = esc(&self.run.trigger),
                commit = esc(self.git_commit.as_deref().unwrap_or("none")),
            ),
        );
        if let Some(e) = &self.run.error {
            h.push_str(&format!("<p style=\"color:#c00\">error: {}</p>", esc(e)));
        }
        h.push_str("<table><tr><th>stage</th><th>status</th><th>seconds</th><th>outputs</th></tr>");
        for stage in STAGES {
            let Some(m) = self
                .done
                .get(stage)
                .cloned()
                .or_else(|| read_stage(&self.cfg.runs_dir(), &self.run_id, stage).ok())
            else {
                continue;
            };
            let status = match (&m.reused_from, m.status) {
                (Some(r), _) => format!("reused from {}", esc(r)),
                (None, s) => format!("{s:?}").to_lowercase(),
            };
            let links: Vec<String> = m
                .outputs
                .iter()
                .map(|(k, a)| format!("<a href=\"../../{}\">{}</a>", esc(&a.path), esc(k)))
                .collect();
            h.push_str(&format!(
                "<tr><td>{stage}</td><td>{status}</td><td>{:.1}</td><td>{}</td></tr>",
                m.seconds,
                links.join(" · ")
            ));
        }
        h.push_str("</table>");
        if let Some(t) = self
            .done
            .get("train")
            .and_then(|m| m.outputs.get("loss_svg"))
        {
            h.push_str(&format!(
                "<h2>Loss</h2><img src=\"../../{}\">",
                esc(&t.path)
            ));
        }
        if let Some(t) = self
            .done
            .get("judge")
            .and_then(|m| m.outputs.get("eval_svg"))
        {
            h.push_str(&format!(
                "<h2>Evaluation</h2><img src=\"../../{}\">",
                esc(&t.path)
            ));
        }
        h.push_str("</body></html>\n");
        write_atomic(&path, h.as_bytes())?;
        Ok(path)
    }
}

fn dir_bytes(p: &Path) -> u64 {
    if p.is_file() {
        return std::fs::metadata(p).map_or(0, |m| m.len());
    }
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| dir_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// Seconds since the epoch, for callers timing runs.
pub fn now_s() -> u64 {
    unix_now()
}
