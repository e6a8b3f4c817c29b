//! [`Forge`]: a project (a `forge.toml` and its state folder) and what can be done
//! with it: run the pipeline, show the status, roll back.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{CONFIG_FILE, DEFAULT_FORGE_TOML, ForgeConfig, ForgeFile, OllamaMode};
use crate::lock::PipelineLock;
use crate::pipeline::{Pipeline, RunManifest, RunOptions, RunReport, read_run, run_ids};
use crate::registry::{Deployment, ModelRecord, Registry};
use crate::util::{on_path, write_atomic};
use crate::{Error, Result};

/// A Forge project.
///
/// ```rust,no_run
/// use forge_core::Forge;
/// use forge_core::pipeline::RunOptions;
/// # fn main() -> forge_core::Result<()> {
/// let forge = Forge::open(".")?;            // ./forge.toml
/// let report = forge.run(RunOptions::new())?;
/// println!("{report}");
/// println!("{}", forge.status()?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Forge {
    config: ForgeConfig,
}

/// What `forge status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The configuration file.
    pub config: PathBuf,
    /// The active model.
    pub active: Option<ModelRecord>,
    /// Every registered model, newest first.
    pub models: Vec<ModelRecord>,
    /// The deployment log, newest first.
    pub deployments: Vec<Deployment>,
    /// The latest runs, newest first.
    pub runs: Vec<RunManifest>,
    /// The pipeline lock's holder (pid, since), when a pipeline runs.
    pub running: Option<(u32, String)>,
    /// `forge watch`'s last trained commit.
    pub watch_baseline: Option<String>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "project: {}", self.config.display())?;
        match &self.running {
            Some((pid, since)) => writeln!(f, "pipeline: running (pid {pid}, since {since})")?,
            None => writeln!(f, "pipeline: idle")?,
        }
        match &self.active {
            Some(m) => {
                writeln!(
                    f,
                    "active model: {} (run {}, commit {}, registered {})",
                    m.id,
                    m.run_id,
                    m.git_commit
                        .as_deref()
                        .map_or("none", |c| &c[..c.len().min(12)]),
                    m.created_at
                )?;
                writeln!(f, "  gguf:   {}", m.gguf_path.display())?;
                if let Some(r) = &m.report_path {
                    writeln!(f, "  report: {}", r.display())?;
                }
            }
            None => writeln!(f, "active model: none")?,
        }
        if !self.models.is_empty() {
            writeln!(f, "models:")?;
            for m in &self.models {
                let metrics = m
                    .metrics
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter_map(|(k, v)| v.as_f64().map(|v| format!("{k} {v:.4}")))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  {:>3}  {}  gate {}  run {}  {}",
                    m.id,
                    m.created_at,
                    if m.gate_passed { "pass" } else { "FAIL" },
                    m.run_id,
                    metrics
                )?;
            }
        }
        if !self.deployments.is_empty() {
            writeln!(f, "deployments:")?;
            for d in &self.deployments {
                writeln!(
                    f,
                    "  {}  {:<8} model {:>3}  {}  {}",
                    d.at, d.action, d.model_id, d.target, d.note
                )?;
            }
        }
        if !self.runs.is_empty() {
            writeln!(f, "runs:")?;
            for r in &self.runs {
                writeln!(f, "  {}  {:<9} {}", r.id, r.status.to_string(), r.trigger)?;
            }
        }
        if let Some(b) = &self.watch_baseline {
            writeln!(f, "watch: last trained commit {b}")?;
        }
        Ok(())
    }
}

impl Forge {
    /// Opens the project of `path`: a `forge.toml` file, or a folder holding one.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join(CONFIG_FILE)
        } else {
            path.to_path_buf()
        };
        if !file.is_file() {
            return Err(Error::Config {
                path: file,
                key: String::new(),
                message: "not found; create one with `forge init`".into(),
            });
        }
        Ok(Self {
            config: ForgeConfig::from_file(&file)?,
        })
    }

    /// A project from an already resolved configuration.
    pub fn from_config(config: ForgeConfig) -> Self {
        Self { config }
    }

    /// Writes the commented default `forge.toml` into `dir` (refusing to replace one
    /// unless `force`); returns its path.
    pub fn init(dir: impl AsRef<Path>, force: bool) -> Result<PathBuf> {
        let path = dir.as_ref().join(CONFIG_FILE);
        if path.exists() && !force {
            return Err(Error::Config {
                path,
                key: String::new(),
                message: "already exists (use --force to overwrite it)".into(),
            });
        }
        // The shipped default must parse: a broken template is a bug, not user data.
        ForgeFile::from_toml_str(DEFAULT_FORGE_TOML, &path)?;
        write_atomic(&path, DEFAULT_FORGE_TOML.as_bytes())?;
        Ok(path)
    }

    /// The configuration.
    pub fn config(&self) -> &ForgeConfig {
        &self.config
    }

    /// Opens the registry (migrating it).
    pub fn registry(&self) -> Result<Registry> {
        Registry::open(self.config.registry_path())
    }

    /// Runs the pipeline under the lock; fails with [`Error::Locked`] when another
    /// pipeline of this project runs.
    pub fn run(&self, options: RunOptions) -> Result<RunReport> {
        let lock = PipelineLock::acquire(self.config.lock_path())?;
        if let Some(pid) = lock.stale_pid {
            options
                .observer
                .message(&format!("took over a stale lock left by pid {pid}"));
        }
        let registry = self.registry()?;
        let report = Pipeline::new(&self.config, &registry, options)?.run();
        drop(lock);
        report
    }

    /// The registry, the runs and the lock.
    pub fn status(&self) -> Result<Status> {
        let registry = self.registry()?;
        let running = match PipelineLock::acquire(self.config.lock_path()) {
            Ok(_) => None,
            Err(Error::Locked { pid, since, .. }) => Some((pid, since)),
            Err(e) => return Err(e),
        };
        let runs_dir = self.config.runs_dir();
        let runs = run_ids(&runs_dir)
            .into_iter()
            .rev()
            .take(10)
            .filter_map(|id| read_run(&runs_dir, &id).ok())
            .collect();
        Ok(Status {
            config: self.config.origin.clone(),
            active: registry.active()?,
            models: registry.models()?,
            deployments: registry.deployments()?,
            runs,
            running,
            watch_baseline: registry.watch_get("baseline")?,
        })
    }

    /// Makes an earlier model active again: `to`, or the model active before the
    /// current one. Re-creates it in Ollama when deploy uses Ollama and it is on the
    /// PATH. Takes the pipeline lock, so it never races a deploy.
    pub fn rollback(&self, to: Option<i64>) -> Result<(ModelRecord, String)> {
        let _lock = PipelineLock::acquire(self.config.lock_path())?;
        let registry = self.registry()?;
        let name = &self.config.deploy.name;
        let m = registry.rollback_target(to)?;
        let mut target = "registry".to_string();
        let mut note = String::new();
        if let Some(mf) = &m.modelfile {
            let cmd = format!("ollama create {name} -f {}", mf.display());
            match (self.config.deploy.ollama, on_path("ollama")) {
                (OllamaMode::Auto, Some(bin)) => {
                    let ok = std::process::Command::new(bin)
                        .args(["create", name, "-f"])
                        .arg(mf)
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        target = format!("ollama:{name}");
                        note = format!("created in Ollama as {name}");
                    } else {
                        note = format!("`{cmd}` failed");
                    }
                }
                _ => note = format!("to serve it with Ollama: {cmd}"),
            }
        }
        let m = registry.rollback(Some(m.id), &target)?;
        Ok((m, note))
    }
}
