//! A whole fine-tuning run: a TOML run file (forge-peft's [`RunFile`]),
//! optionally overridden from the command line, then model loading,
//! tokenization, adapters, the trainer and the adapter files.
//!
//! ```rust,no_run
//! use forge_core::train::{TrainJob, run};
//! # fn main() -> forge_core::Result<()> {
//! let job = TrainJob::new()
//!     .with_config("train.toml")
//!     .with_data("dataset/")       // train.jsonl (+ valid.jsonl)
//!     .with_out("runs/first");
//! let summary = run(&job, |m| eprintln!("step {} loss {:.3}", m.step, m.loss))?;
//! println!("{summary}");
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use forge_model::{LoadOptions, ModelSource};
use forge_peft::{
    Example, Method, PeftModel, RunConfig, RunFile, StepMetrics, Trainer, collate,
    latest_checkpoint, pack, read_records, tokenize,
};

use crate::{Error, Result};

/// What to train: a run file and command-line overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct TrainJob {
    config: Option<PathBuf>,
    model: Option<String>,
    data: Option<PathBuf>,
    out: Option<PathBuf>,
    resume: bool,
}

impl TrainJob {
    /// No run file, no overrides (every default: LoRA r 8 on q/v, 100 steps).
    pub fn new() -> Self {
        Self {
            resume: true,
            ..Self::default()
        }
    }
    /// The TOML run file (its relative paths are relative to its folder).
    pub fn with_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }
    /// Overrides `model` (`default`, a `.gguf` file, a Hugging Face folder).
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
    /// Overrides the data: a JSONL file, or a folder holding `train.jsonl`
    /// and optionally `valid.jsonl` (mlx-lm's and `forge mine`'s layout).
    pub fn with_data(mut self, path: impl Into<PathBuf>) -> Self {
        self.data = Some(path.into());
        self
    }
    /// Overrides the run directory.
    pub fn with_out(mut self, path: impl Into<PathBuf>) -> Self {
        self.out = Some(path.into());
        self
    }
    /// Whether to continue from the run directory's latest checkpoint (default yes).
    pub fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The resolved configuration.
    pub fn resolve(&self) -> Result<RunConfig> {
        let cwd = std::env::current_dir().unwrap_or_default();
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                cwd.join(p)
            }
        };
        let (mut file, base) = match &self.config {
            Some(p) => (
                RunFile::from_file(p)?,
                abs(p).parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            None => (RunFile::default(), cwd.clone()),
        };
        if let Some(m) = &self.model {
            file.model = Some(m.clone());
        }
        if let Some(d) = &self.data {
            let d = abs(d);
            if d.is_dir() {
                file.data.train = Some(d.join("train.jsonl"));
                let valid = d.join("valid.jsonl");
                file.data.valid = valid.exists().then_some(valid);
            } else {
                file.data.train = Some(d);
            }
        }
        if let Some(o) = &self.out {
            file.output_dir = Some(abs(o));
        }
        Ok(file.resolve(base)?)
    }
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// The run directory (if any).
    pub output_dir: Option<PathBuf>,
    /// Training examples (after packing).
    pub examples: usize,
    /// Trainable parameters.
    pub trainable: usize,
    /// The checkpoint resumed from.
    pub resumed_from: Option<PathBuf>,
    /// Metrics of every step of this call.
    pub steps: Vec<StepMetrics>,
    /// Adapter folders written: PEFT layout, then mlx-lm layout (when the
    /// targeting fits mlx-lm's).
    pub saved: Vec<PathBuf>,
}

impl fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} examples, {} trainable parameters",
            self.examples, self.trainable
        )?;
        if let Some(r) = &self.resumed_from {
            writeln!(f, "resumed from {}", r.display())?;
        }
        if let (Some(a), Some(b)) = (self.steps.first(), self.steps.last()) {
            let tps = self.steps.iter().map(|m| m.tokens as f64).sum::<f64>()
                / self
                    .steps
                    .iter()
                    .map(|m| m.tokens as f64 / m.tokens_per_s.max(1e-9))
                    .sum::<f64>()
                    .max(1e-9);
            writeln!(
                f,
                "steps {}..{}: loss {:.4} -> {:.4}, {tps:.1} tokens/s, peak RSS {:.2} GiB",
                a.step,
                b.step,
                a.loss,
                b.loss,
                b.peak_rss as f64 / f64::from(1u32 << 30)
            )?;
            if let Some(v) = self.steps.iter().rev().find_map(|m| m.val_loss) {
                writeln!(f, "last validation loss {v:.4} (perplexity {:.2})", v.exp())?;
            }
        }
        for s in &self.saved {
            writeln!(f, "adapters: {}", s.display())?;
        }
        Ok(())
    }
}

/// Runs `job`, calling `progress` after each step.
pub fn run(job: &TrainJob, progress: impl FnMut(&StepMetrics) + 'static) -> Result<TrainSummary> {
    run_config(&job.resolve()?, job.resume, progress)
}

/// Runs a resolved configuration (the pipeline's entry point), resuming from the
/// run directory's latest checkpoint when `resume` is set.
pub fn run_config(
    cfg: &RunConfig,
    resume: bool,
    progress: impl FnMut(&StepMetrics) + 'static,
) -> Result<TrainSummary> {
    let mut load = LoadOptions::new();
    if let Some(dtype) = cfg.train.compute_dtype.resolve() {
        load = load.with_dtype(dtype);
    }
    let loaded = forge_model::load(&ModelSource::parse(&cfg.model), &load)?;
    let tok = loaded.tokenizer.ok_or_else(|| {
        Error::Peft(forge_peft::Error::InvalidOption {
            name: "model",
            found: cfg.model.clone(),
            expected: "a model with a tokenizer (tokenizer.json or GGUF metadata)".into(),
        })
    })?;
    let d = &cfg.data;
    let examples = |path: &Path| -> Result<Vec<Example>> {
        let records = read_records(path)?;
        let ex = tokenize(&records, &tok, d.prompt_style, d.mask_prompt, d.max_seq_len)?;
        Ok(if d.packing {
            pack(&ex, d.max_seq_len)
        } else {
            ex
        })
    };
    let train = examples(&d.train)?;
    let valid = match &d.valid {
        Some(v) => examples(v)?,
        None => Vec::new(),
    };
    let pad = tok.eos_ids().first().copied().unwrap_or(0);
    let mut peft = if cfg.adapter.method == Method::Cloq {
        // Calibration: the first few training batches.
        let batches: Vec<mlx_rs::Array> = train
            .chunks(cfg.train.batch_size.max(1))
            .take(4)
            .map(|c| collate(&c.iter().collect::<Vec<_>>(), pad).inputs)
            .collect();
        PeftModel::with_calibration(loaded.model, cfg.adapter.clone(), &batches)?
    } else {
        PeftModel::new(loaded.model, cfg.adapter.clone())?
    };
    let resumed_from = match (&cfg.train.output_dir, resume) {
        (Some(o), true) => latest_checkpoint(o),
        _ => None,
    };
    let report = Trainer::new(cfg.train.clone())
        .with_progress(progress)
        .run(&mut peft, &train, &valid, pad, resumed_from.as_deref())?;
    let mut saved = Vec::new();
    if let Some(o) = &cfg.train.output_dir {
        saved.push(peft.save_peft(o.join("adapters"), &cfg.model)?);
        // mlx-lm's layout only expresses "the same keys on the last N blocks".
        if let Ok(p) = peft.save_mlx_lm(o.join("mlx-lm")) {
            saved.push(p);
        }
    }
    Ok(TrainSummary {
        output_dir: cfg.train.output_dir.clone(),
        examples: train.len(),
        trainable: peft.num_trainable(),
        resumed_from,
        steps: report.steps,
        saved,
    })
}
