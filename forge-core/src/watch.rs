//! `forge watch`: poll the repository's git history and run the pipeline when enough
//! has changed.
//!
//! The watcher keeps a *baseline*: the commit the model was last trained at (the
//! `HEAD` it first saw, when it starts on a project without one). At each poll it
//! reads `HEAD` with gix, compares the trees of the baseline and `HEAD` blob by blob,
//! and counts the changed paths that `[repo] include/exclude` select (inside the
//! repository folder, when it is a sub-folder of the work tree). Changes accumulate
//! across commits until the count reaches `watch.min_changed_files`, or until a tag
//! matching `watch.tag_pattern` appears that was not there before; then it runs the
//! pipeline (under the pipeline lock: when another run holds it, the poll reports
//! `busy` and tries again next time). After a run — deployed, rejected by the gate,
//! or failed — the baseline moves to that `HEAD`, so one bad commit does not retrain
//! at every poll; the gate alone decides deployment, and a failure never touches the
//! active model. The state lives in the registry (`watch_state`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use globset::Glob;
use serde::Serialize;

use crate::pipeline::{RunOptions, RunReport};
use crate::{Error, Forge, Result};

/// What one poll did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PollOutcome {
    /// First poll: the baseline is now `commit`.
    Started {
        /// `HEAD`.
        commit: String,
    },
    /// Nothing new since the baseline.
    Unchanged {
        /// `HEAD`.
        commit: String,
    },
    /// Changes below the threshold (they keep accumulating).
    Below {
        /// `HEAD`.
        commit: String,
        /// Changed selected files since the baseline.
        changed: usize,
        /// `watch.min_changed_files`.
        threshold: usize,
    },
    /// The pipeline ran (deployed or rejected: see the report's status).
    Ran {
        /// Why it ran.
        trigger: String,
        /// The run.
        report: Box<RunReport>,
    },
    /// The pipeline ran and failed; the active model is unchanged.
    Failed {
        /// Why it ran.
        trigger: String,
        /// The error.
        error: String,
    },
    /// Another pipeline holds the lock; try again at the next poll.
    Busy {
        /// The holder's pid.
        pid: u32,
    },
}

/// Polls a project's repository.
#[derive(Debug, Clone)]
pub struct Watcher {
    forge: Forge,
    options: RunOptions,
}

fn git_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Git {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn tree_blobs(
    repo: &gix::Repository,
    rev: &str,
    path: &Path,
) -> Result<BTreeMap<String, gix::ObjectId>> {
    let id = repo
        .rev_parse_single(rev)
        .map_err(|e| git_err(path, format!("revision {rev:?}: {e}")))?;
    let tree = id
        .object()
        .map_err(|e| git_err(path, format!("revision {rev:?}: {e}")))?
        .peel_to_tree()
        .map_err(|e| git_err(path, format!("revision {rev:?} has no tree: {e}")))?;
    let mut rec = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut rec)
        .map_err(|e| git_err(path, format!("reading the tree of {rev:?}: {e}")))?;
    Ok(rec
        .records
        .into_iter()
        .filter(|e| e.mode.is_blob())
        .map(|e| (e.filepath.to_string(), e.oid))
        .collect())
}

impl Watcher {
    /// A watcher of `forge`'s repository; `options` (observer, …) apply to each run.
    pub fn new(forge: Forge, options: RunOptions) -> Self {
        Self { forge, options }
    }

    fn open_repo(&self) -> Result<(gix::Repository, String)> {
        let root = &self.forge.config().repo;
        let repo = gix::discover(root).map_err(|e| git_err(root, e))?;
        let workdir = repo
            .workdir()
            .ok_or_else(|| git_err(root, "bare repository: no work tree"))?
            .canonicalize()
            .map_err(|e| Error::io(root, e))?;
        let abs = root.canonicalize().map_err(|e| Error::io(root, e))?;
        let prefix = abs
            .strip_prefix(&workdir)
            .map_err(|_| git_err(root, "outside the work tree"))?
            .to_string_lossy()
            .replace('\\', "/");
        Ok((repo, prefix))
    }

    /// Tags matching `watch.tag_pattern` (short names).
    fn tags(&self, repo: &gix::Repository) -> Result<BTreeSet<String>> {
        let cfg = self.forge.config();
        let root = &cfg.repo;
        let Some(pattern) = &cfg.watch.tag_pattern else {
            return Ok(BTreeSet::new());
        };
        let glob = Glob::new(pattern)
            .map_err(|e| git_err(root, e))?
            .compile_matcher();
        let refs = repo.references().map_err(|e| git_err(root, e))?;
        let mut out = BTreeSet::new();
        for r in refs.tags().map_err(|e| git_err(root, e))? {
            let r = r.map_err(|e| git_err(root, e))?;
            let name = r.name().shorten().to_string();
            if glob.is_match(&name) {
                out.insert(name);
            }
        }
        Ok(out)
    }

    /// Selected repo-relative paths that differ between commits `a` and `b`.
    pub fn changed_files(&self, a: &str, b: &str) -> Result<Vec<String>> {
        let (repo, prefix) = self.open_repo()?;
        let root = &self.forge.config().repo;
        let ta = tree_blobs(&repo, a, root)?;
        let tb = tree_blobs(&repo, b, root)?;
        let paths: BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
        Ok(paths
            .into_iter()
            .filter(|p| ta.get(*p) != tb.get(*p))
            .filter_map(|p| {
                if prefix.is_empty() {
                    Some(p.clone())
                } else {
                    p.strip_prefix(&format!("{prefix}/")).map(str::to_string)
                }
            })
            .filter(|p| self.forge.config().selects(p))
            .collect())
    }

    /// One poll: compare `HEAD` with the baseline and run the pipeline when the
    /// threshold or a new tag says so.
    pub fn poll_once(&self) -> Result<PollOutcome> {
        let cfg = self.forge.config();
        let registry = self.forge.registry()?;
        let (repo, _) = self.open_repo()?;
        let head = repo
            .head_id()
            .map_err(|e| git_err(&cfg.repo, format!("HEAD: {e}")))?
            .to_string();
        let tags = self.tags(&repo)?;
        drop(repo);
        let save = |commit: &str| -> Result<()> {
            registry.watch_set("baseline", commit)?;
            registry.watch_set(
                "tags",
                &serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into()),
            )
        };
        let Some(baseline) = registry.watch_get("baseline")? else {
            save(&head)?;
            tracing::info!(commit = %head, "watch: baseline set");
            return Ok(PollOutcome::Started { commit: head });
        };
        let seen: BTreeSet<String> = registry
            .watch_get("tags")?
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let new_tags: Vec<&String> = tags.difference(&seen).collect();
        let changed = if baseline == head {
            Vec::new()
        } else {
            self.changed_files(&baseline, &head)?
        };
        let threshold = cfg.watch.min_changed_files;
        let trigger = if !new_tags.is_empty() {
            let names: Vec<&str> = new_tags.iter().map(|s| s.as_str()).collect();
            format!(
                "watch: new tag {} at {}",
                names.join(", "),
                &head[..head.len().min(12)]
            )
        } else if changed.len() >= threshold {
            format!(
                "watch: {} files changed since {} (threshold {threshold}) at {}",
                changed.len(),
                &baseline[..baseline.len().min(12)],
                &head[..head.len().min(12)]
            )
        } else if changed.is_empty() && baseline == head {
            return Ok(PollOutcome::Unchanged { commit: head });
        } else {
            tracing::info!(
                changed = changed.len(),
                threshold,
                "watch: below the threshold"
            );
            return Ok(PollOutcome::Below {
                commit: head,
                changed: changed.len(),
                threshold,
            });
        };
        tracing::info!(%trigger, "watch: running the pipeline");
        drop(registry);
        let result = self
            .forge
            .run(self.options.clone().with_trigger(trigger.clone()));
        let registry = self.forge.registry()?;
        let save = |commit: &str| -> Result<()> {
            registry.watch_set("baseline", commit)?;
            registry.watch_set(
                "tags",
                &serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into()),
            )
        };
        match result {
            Ok(report) => {
                save(&head)?;
                Ok(PollOutcome::Ran {
                    trigger,
                    report: Box::new(report),
                })
            }
            Err(Error::Locked { pid, .. }) => Ok(PollOutcome::Busy { pid }),
            Err(e) => {
                save(&head)?;
                Ok(PollOutcome::Failed {
                    trigger,
                    error: e.to_string(),
                })
            }
        }
    }

    /// Polls every `watch.interval_s` seconds, `max_polls` times (forever when
    /// `None`), calling `on_poll` after each.
    pub fn run(
        &self,
        max_polls: Option<usize>,
        mut on_poll: impl FnMut(&PollOutcome),
    ) -> Result<()> {
        let interval = Duration::from_secs(self.forge.config().watch.interval_s);
        let mut n = 0usize;
        loop {
            let outcome = self.poll_once()?;
            on_poll(&outcome);
            n += 1;
            if max_polls.is_some_and(|m| n >= m) {
                return Ok(());
            }
            std::thread::sleep(interval);
        }
    }
}
