//! The model registry and deployment log: an SQLite database
//! (`.forge/registry.sqlite`) with versioned migrations.
//!
//! Every model the pipeline judged is a row of `models` (run, git commit, dataset
//! hash, base model, GGUF and its SHA-256, Modelfile, judge report, gate verdict,
//! metrics). Every change of the active model is a row of `deployments`
//! (`deploy`, `rollback`) and every model the gate refused is logged as
//! `rejected`. The active model is the model of the latest `deploy` or `rollback`
//! row: a failure never writes one, so it never replaces the active model.
//!
//! Schema versions live in SQLite's `user_version`; [`MIGRATIONS`] runs the
//! missing steps in one transaction each. A database from a newer Forge (a
//! version above the last migration) is refused rather than guessed at.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::util::utc_now;
use crate::{Error, Result};

/// The schema steps; step `i` moves `user_version` from `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: models and the deployment log.
    "CREATE TABLE models (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        git_commit TEXT,
        dataset_hash TEXT NOT NULL,
        base_model TEXT NOT NULL,
        gguf_path TEXT NOT NULL,
        gguf_sha256 TEXT NOT NULL,
        report_path TEXT,
        gate_passed INTEGER NOT NULL,
        metrics TEXT NOT NULL
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model_id INTEGER NOT NULL REFERENCES models(id),
        at TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('deploy', 'rollback', 'rejected')),
        target TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );",
    // 2: the Modelfile of a model, the runs, and `forge watch`'s state.
    "ALTER TABLE models ADD COLUMN modelfile TEXT;
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL,
        trigger TEXT NOT NULL,
        git_commit TEXT
    );
    CREATE TABLE watch_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
];

/// A model as registered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRecord {
    /// Registry id (assigned on insert).
    pub id: i64,
    /// The run that produced it.
    pub run_id: String,
    /// When it was registered (UTC).
    pub created_at: String,
    /// The repository commit it was trained on.
    pub git_commit: Option<String>,
    /// SHA-256 of the training dataset.
    pub dataset_hash: String,
    /// The base model source.
    pub base_model: String,
    /// The GGUF file.
    pub gguf_path: PathBuf,
    /// Its SHA-256.
    pub gguf_sha256: String,
    /// The Ollama Modelfile, if written.
    pub modelfile: Option<PathBuf>,
    /// The judge's HTML report.
    pub report_path: Option<PathBuf>,
    /// Whether the gate passed.
    pub gate_passed: bool,
    /// The candidate's metrics (JSON object).
    pub metrics: serde_json::Value,
}

/// What to register (the id and time are the registry's).
#[derive(Debug, Clone, PartialEq)]
pub struct NewModel {
    /// The run.
    pub run_id: String,
    /// The commit.
    pub git_commit: Option<String>,
    /// The dataset hash.
    pub dataset_hash: String,
    /// The base model.
    pub base_model: String,
    /// The GGUF file.
    pub gguf_path: PathBuf,
    /// Its SHA-256.
    pub gguf_sha256: String,
    /// The Modelfile.
    pub modelfile: Option<PathBuf>,
    /// The report.
    pub report_path: Option<PathBuf>,
    /// The verdict.
    pub gate_passed: bool,
    /// Metrics.
    pub metrics: serde_json::Value,
}

/// One row of the deployment log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    /// Row id.
    pub id: i64,
    /// The model.
    pub model_id: i64,
    /// When (UTC).
    pub at: String,
    /// `deploy`, `rollback` or `rejected`.
    pub action: String,
    /// Where (`registry`, `ollama:<name>`).
    pub target: String,
    /// Free text (why it was rejected, the ollama command, …).
    pub note: String,
}

/// The registry database.
pub struct Registry {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish()
    }
}

const MODEL_COLUMNS: &str = "id, run_id, created_at, git_commit, dataset_hash, base_model, \
     gguf_path, gguf_sha256, modelfile, report_path, gate_passed, metrics";

fn model_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModelRecord> {
    let metrics: String = r.get(11)?;
    Ok(ModelRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        created_at: r.get(2)?,
        git_commit: r.get(3)?,
        dataset_hash: r.get(4)?,
        base_model: r.get(5)?,
        gguf_path: PathBuf::from(r.get::<_, String>(6)?),
        gguf_sha256: r.get(7)?,
        modelfile: r.get::<_, Option<String>>(8)?.map(PathBuf::from),
        report_path: r.get::<_, Option<String>>(9)?.map(PathBuf::from),
        gate_passed: r.get::<_, i64>(10)? != 0,
        metrics: serde_json::from_str(&metrics).unwrap_or(serde_json::Value::Null),
    })
}

fn deployment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
    Ok(Deployment {
        id: r.get(0)?,
        model_id: r.get(1)?,
        at: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        note: r.get(5)?,
    })
}

impl Registry {
    /// Opens (creating if needed) the database at `path` and migrates it to the latest
    /// schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_at_version(path, MIGRATIONS.len())
    }

    /// Opens the database and migrates it to schema `version` only (tests of old schemas).
    pub fn open_at_version(path: impl AsRef<Path>, version: usize) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let err = |e: rusqlite::Error| Error::Registry {
            path: path.clone(),
            message: e.to_string(),
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err)?;
        let mut reg = Self { conn, path };
        reg.migrate(version.min(MIGRATIONS.len()))?;
        Ok(reg)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::Registry {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The schema version (`user_version`).
    pub fn version(&self) -> Result<usize> {
        let v: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(v.max(0) as usize)
    }

    fn migrate(&mut self, target: usize) -> Result<()> {
        let current = self.version()?;
        if current > MIGRATIONS.len() {
            return Err(Error::Registry {
                path: self.path.clone(),
                message: format!(
                    "schema version {current} is newer than this Forge knows ({}); use a newer forge",
                    MIGRATIONS.len()
                ),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().take(target).skip(current) {
            let path = self.path.clone();
            let err = |e: rusqlite::Error| Error::Registry {
                path: path.clone(),
                message: format!("migration {} failed: {e}", i + 1),
            };
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
            tx.commit().map_err(err)?;
            tracing::info!(registry = %self.path.display(), version = i + 1, "migrated");
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a model; returns its id.
    pub fn register(&self, m: &NewModel) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO models (run_id, created_at, git_commit, dataset_hash, base_model, \
                 gguf_path, gguf_sha256, modelfile, report_path, gate_passed, metrics) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    m.run_id,
                    utc_now(),
                    m.git_commit,
                    m.dataset_hash,
                    m.base_model,
                    m.gguf_path.to_string_lossy(),
                    m.gguf_sha256,
                    m.modelfile
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned()),
                    m.report_path
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned()),
                    i64::from(m.gate_passed),
                    m.metrics.to_string(),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A model by id.
    pub fn model(&self, id: i64) -> Result<Option<ModelRecord>> {
        self.conn
            .query_row(
                &format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = ?1"),
                [id],
                model_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every model, newest first.
    pub fn models(&self) -> Result<Vec<ModelRecord>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {MODEL_COLUMNS} FROM models ORDER BY id DESC"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], model_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The deployment log, newest first.
    pub fn deployments(&self) -> Result<Vec<Deployment>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, model_id, at, action, target, note FROM deployments ORDER BY id DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], deployment_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    fn log(&self, model_id: i64, action: &str, target: &str, note: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO deployments (model_id, at, action, target, note) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![model_id, utc_now(), action, target, note],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Makes `model_id` the active model (a `deploy` row). Refuses a model whose gate
    /// failed.
    pub fn deploy(&self, model_id: i64, target: &str, note: &str) -> Result<()> {
        let m = self
            .model(model_id)?
            .ok_or_else(|| Error::NotFound(format!("no model {model_id} in the registry")))?;
        if !m.gate_passed {
            return Err(Error::NotFound(format!(
                "model {model_id} did not pass the judge's gate; it cannot be deployed"
            )));
        }
        self.log(model_id, "deploy", target, note)
    }

    /// Logs that the gate refused `model_id` (the active model does not change).
    pub fn reject(&self, model_id: i64, note: &str) -> Result<()> {
        self.log(model_id, "rejected", "none", note)
    }

    /// The active model: the model of the latest `deploy` or `rollback`.
    pub fn active(&self) -> Result<Option<ModelRecord>> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT model_id FROM deployments WHERE action IN ('deploy', 'rollback') \
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match id {
            Some(id) => self.model(id),
            None => Ok(None),
        }
    }

    /// Rolls back: to `to` when given (a model that passed its gate), else to the model
    /// that was active before the current one. Returns the newly active model.
    pub fn rollback(&self, to: Option<i64>, target: &str) -> Result<ModelRecord> {
        let m = self.rollback_target(to)?;
        let note = self
            .active()?
            .map_or_else(String::new, |a| format!("from model {}", a.id));
        self.log(m.id, "rollback", target, &note)?;
        Ok(m)
    }

    /// The model [`Registry::rollback`] would make active, checked, without changing
    /// anything.
    pub fn rollback_target(&self, to: Option<i64>) -> Result<ModelRecord> {
        let active = self.active()?;
        let to = match to {
            Some(id) => id,
            None => {
                let current = active
                    .as_ref()
                    .ok_or_else(|| Error::NotFound("no active model to roll back from".into()))?
                    .id;
                self.deployments()?
                    .into_iter()
                    .filter(|d| d.action != "rejected")
                    .skip_while(|d| d.model_id == current)
                    .map(|d| d.model_id)
                    .next()
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "model {current} is the only model ever deployed: nothing to roll back to"
                        ))
                    })?
            }
        };
        let m = self
            .model(to)?
            .ok_or_else(|| Error::NotFound(format!("no model {to} in the registry")))?;
        if !m.gate_passed {
            return Err(Error::NotFound(format!(
                "model {to} did not pass the judge's gate; it cannot be made active"
            )));
        }
        if !m.gguf_path.is_file() {
            return Err(Error::NotFound(format!(
                "model {to}: its GGUF {} is gone",
                m.gguf_path.display()
            )));
        }
        Ok(m)
    }

    /// Records a run's start or end.
    pub fn record_run(
        &self,
        id: &str,
        status: &str,
        trigger: &str,
        git_commit: Option<&str>,
        finished: bool,
    ) -> Result<()> {
        let now = utc_now();
        self.conn
            .execute(
                "INSERT INTO runs (id, started_at, finished_at, status, trigger, git_commit) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(id) DO UPDATE SET status = ?4, finished_at = ?3",
                params![
                    id,
                    now,
                    finished.then_some(&now),
                    status,
                    trigger,
                    git_commit
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Runs as `(id, started, finished, status, trigger, commit)`, newest first.
    #[allow(clippy::type_complexity)]
    pub fn runs(
        &self,
        limit: usize,
    ) -> Result<
        Vec<(
            String,
            String,
            Option<String>,
            String,
            String,
            Option<String>,
        )>,
    > {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, started_at, finished_at, status, trigger, git_commit FROM runs \
                 ORDER BY started_at DESC, id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A value of `forge watch`'s state.
    pub fn watch_get(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM watch_state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Sets a value of `forge watch`'s state.
    pub fn watch_set(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO watch_state (key, value) VALUES (?1, ?2) \
                 ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
