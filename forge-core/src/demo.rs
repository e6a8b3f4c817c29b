//! The MLX smoke checks and the table of pipeline stages.
//!
//! `cargo xtask demo` runs this (`forge demo`) first, then the real pipeline on
//! the embedded default project (`forge run examples/demo`, see
//! [`crate::pipeline`]).

use std::fmt;

use forge_mlx::smoke::{self, SmokeReport};

use crate::{Error, Result};

/// Whether a pipeline stage exists yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageStatus {
    /// The stage is built and runs in `forge run` (and so in `cargo xtask demo`).
    Built,
    /// The stage's library exists (usable from its crate and the CLI) but the
    /// demo does not run it yet.
    Library,
    /// The stage is specified but not implemented yet.
    NotBuilt,
}

/// One stage of the pipeline and its state.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Stage name, e.g. `mine`.
    pub name: &'static str,
    /// What it does.
    pub what: &'static str,
    /// Whether it is built.
    pub status: StageStatus,
    /// Which crate owns it.
    pub owner: &'static str,
}

/// The pipeline as it stands.
pub fn stages() -> Vec<Stage> {
    use StageStatus::Built;
    vec![
        Stage {
            name: "mlx",
            what: "MLX runtime smoke run",
            status: Built,
            owner: "forge-mlx",
        },
        Stage {
            name: "mine",
            what: "repository -> semantic units -> dataset",
            status: Built,
            owner: "forge-miner",
        },
        Stage {
            name: "load",
            what: "pretrained model from GGUF / Hugging Face",
            status: Built,
            owner: "forge-model",
        },
        Stage {
            name: "train",
            what: "adapter fine-tuning",
            status: Built,
            owner: "forge-peft",
        },
        Stage {
            name: "judge",
            what: "perplexity, CodeBLEU, pass@k, gate",
            status: Built,
            owner: "forge-judge",
        },
        Stage {
            name: "export",
            what: "GGUF + Ollama Modelfile",
            status: Built,
            owner: "forge-gguf",
        },
        Stage {
            name: "deploy",
            what: "registry (SQLite), Modelfile, Ollama",
            status: Built,
            owner: "forge-core",
        },
    ]
}

/// Demo settings.
#[derive(Debug, Clone)]
#[must_use]
pub struct Demo {
    seed: u64,
}

impl Default for Demo {
    fn default() -> Self {
        Self::new()
    }
}

impl Demo {
    /// The default demo (seed 42).
    pub fn new() -> Self {
        Self { seed: 42 }
    }

    /// Seed for every random input.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Runs what is built; fails if a smoke check is out of tolerance.
    pub fn run(&self) -> Result<DemoReport> {
        let smoke = smoke::run(self.seed)?;
        if !smoke.passed() {
            return Err(Error::SmokeFailed(smoke.to_string()));
        }
        Ok(DemoReport {
            smoke,
            stages: stages(),
        })
    }
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The MLX smoke run.
    pub smoke: SmokeReport,
    /// The pipeline stages and which are built.
    pub stages: Vec<Stage>,
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Forge demo")?;
        writeln!(f, "{}", self.smoke)?;
        writeln!(f, "Pipeline stages:")?;
        for s in &self.stages {
            let status = match s.status {
                StageStatus::Built => "built",
                StageStatus::Library => "library only",
                StageStatus::NotBuilt => "not built yet",
            };
            writeln!(
                f,
                "  {:<7} {:<42} {:<14} ({})",
                s.name, s.what, status, s.owner
            )?;
        }
        Ok(())
    }
}
