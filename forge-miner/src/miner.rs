//! The entry point: [`Miner`] walks, parses, extracts, sizes and (in [`Miner::run`])
//! builds and writes datasets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::extract::{self, Diagnostic, FileUnits};
use crate::language::Registry;
use crate::progress::{Progress, Stage};
use crate::sizing::Budget;
use crate::unit::{Chunk, Unit};
use crate::walk::{self, FilterConfig, Skip, SkipReason, SkipSummary, SourceFile};

/// The on-disk configuration of a mining run (JSON), mirrored by [`Miner`]'s builders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MinerConfig {
    /// File filters and limits.
    pub filters: FilterConfig,
    /// Size budget of a unit, in characters (or tokens when `tokenizer` is set).
    pub budget: usize,
    /// A `tokenizer.json`: when set, the budget and the length filter count its tokens.
    pub tokenizer: Option<PathBuf>,
    /// Only mine files changed since this git revision (needs the `git` feature).
    pub since: Option<String>,
    /// Dataset building.
    pub dataset: crate::dataset::DatasetConfig,
}

impl Default for MinerConfig {
    fn default() -> Self {
        Self {
            filters: FilterConfig::default(),
            budget: 2000,
            tokenizer: None,
            since: None,
            dataset: crate::dataset::DatasetConfig::default(),
        }
    }
}

/// Mines a repository into units and datasets.
///
/// ```no_run
/// # fn main() -> forge_miner::Result<()> {
/// use forge_miner::{Format, Miner, NoProgress};
/// let report = Miner::new("path/to/repo")
///     .with_format(Format::Messages)
///     .with_units_file("out/units.jsonl")
///     .run("out", &NoProgress)?;
/// println!("{report}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Miner {
    root: PathBuf,
    config: MinerConfig,
    registry: Registry,
    budget: Budget,
    tokenizer: Option<Arc<Tokenizer>>,
    teacher: Arc<dyn crate::teacher::Teacher>,
    units_file: Option<PathBuf>,
}

impl std::fmt::Debug for Miner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miner")
            .field("root", &self.root)
            .field("config", &self.config)
            .field("budget", &self.budget)
            .field("units_file", &self.units_file)
            .finish_non_exhaustive()
    }
}

/// What [`Miner::mine`] found: the units of every mined file and the skipped files.
#[derive(Debug, Clone, Default)]
pub struct Mined {
    /// Mined files in path order.
    pub files: Vec<FileUnits>,
    /// Skipped files in path order.
    pub skipped: Vec<Skip>,
    /// Files the walk listed.
    pub files_seen: usize,
}

impl Mined {
    /// Every unit, in path then source order.
    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.files.iter().flat_map(|f| f.units.iter())
    }

    /// Counts of skipped files per reason.
    pub fn skip_summary(&self) -> SkipSummary {
        let mut s = BTreeMap::new();
        for k in &self.skipped {
            *s.entry(k.reason).or_insert(0) += 1;
        }
        s
    }

    /// Every diagnostic, in path order.
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.files.iter().flat_map(|f| f.diagnostics.iter())
    }

    /// Bytes of source mined.
    pub fn bytes(&self) -> usize {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

impl Miner {
    /// A miner for the repository (or any directory) at `root`, with defaults:
    /// 2000-character budget, all tasks, `messages` format, seed 42.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            config: MinerConfig::default(),
            registry: Registry::new(),
            budget: Budget::default(),
            tokenizer: None,
            teacher: Arc::new(crate::teacher::TemplateTeacher),
            units_file: None,
        }
    }

    /// A miner from an on-disk configuration (loads its tokenizer, if any).
    pub fn from_config(root: impl Into<PathBuf>, config: MinerConfig) -> Result<Self> {
        let mut m = Self::new(root);
        m.budget = Budget::chars(config.budget);
        if let Some(path) = &config.tokenizer {
            let tok = Tokenizer::from_file(path)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
            let tok = Arc::new(tok);
            m.budget = Budget::tokens(tok.clone(), config.budget);
            m.tokenizer = Some(tok);
        }
        m.config = config;
        Ok(m)
    }

    /// Reads a JSON configuration file.
    pub fn config_from_file(path: impl AsRef<Path>) -> Result<MinerConfig> {
        let path = path.as_ref();
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&s).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: e.line(),
            message: e.to_string(),
        })
    }

    /// The configuration (budget as a number, as it would be written to disk).
    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The size budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Sets the size budget (characters or tokens).
    #[must_use]
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.config.budget = budget.max();
        if let Budget::Tokens { tokenizer, .. } = &budget {
            self.tokenizer.get_or_insert_with(|| tokenizer.clone());
        }
        self.budget = budget;
        self
    }

    /// Counts tokens with `tokenizer` for the length filter and the dataset card
    /// (without it, tokens are estimated as ⌈characters / 4⌉).
    #[must_use]
    pub fn with_tokenizer(mut self, tokenizer: impl Into<Arc<Tokenizer>>) -> Self {
        self.tokenizer = Some(tokenizer.into());
        self
    }

    /// Sets the file filters.
    #[must_use]
    pub fn with_filters(mut self, filters: FilterConfig) -> Self {
        self.config.filters = filters;
        self
    }

    /// Replaces the language registry.
    #[must_use]
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Only mines files changed since the git revision `rev` (`HEAD~3`, a tag, a hash).
    #[must_use]
    pub fn with_since(mut self, rev: impl Into<String>) -> Self {
        self.config.since = Some(rev.into());
        self
    }

    /// Also writes every unit's metadata as JSONL to `path`.
    #[must_use]
    pub fn with_units_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.units_file = Some(path.into());
        self
    }

    /// Sets the dataset configuration.
    #[must_use]
    pub fn with_dataset(mut self, dataset: crate::dataset::DatasetConfig) -> Self {
        self.config.dataset = dataset;
        self
    }

    /// Sets the output format.
    #[must_use]
    pub fn with_format(mut self, format: crate::dataset::Format) -> Self {
        self.config.dataset.format = format;
        self
    }

    /// Sets which tasks are built.
    #[must_use]
    pub fn with_tasks(mut self, tasks: crate::dataset::TaskSet) -> Self {
        self.config.dataset.tasks = tasks;
        self
    }

    /// Sets the seed of every random choice.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.config.dataset.seed = seed;
        self
    }

    /// Replaces the teacher that writes RAFT questions and answers.
    #[must_use]
    pub fn with_teacher(mut self, teacher: impl crate::teacher::Teacher + 'static) -> Self {
        self.teacher = Arc::new(teacher);
        self
    }

    pub(crate) fn teacher(&self) -> &dyn crate::teacher::Teacher {
        self.teacher.as_ref()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn tokenizer(&self) -> Option<&Arc<Tokenizer>> {
        self.tokenizer.as_ref()
    }

    pub(crate) fn units_file(&self) -> Option<&Path> {
        self.units_file.as_deref()
    }

    /// Parses, extracts and sizes one file's text (language from the path).
    pub fn mine_text(&self, path: &str, text: &str) -> Result<FileUnits> {
        let lang = self
            .registry
            .by_path(path)
            .ok_or_else(|| Error::UnknownLanguage {
                path: path.to_string(),
            })?;
        let tree = extract::parse(lang.as_ref(), path, text)?;
        Ok(extract::extract(
            lang.as_ref(),
            path,
            text,
            &tree,
            &self.budget,
        ))
    }

    /// Cover mode for one file: cAST chunks that re-join to `text` exactly.
    pub fn cover_text(&self, path: &str, text: &str) -> Result<Vec<Chunk>> {
        let lang = self
            .registry
            .by_path(path)
            .ok_or_else(|| Error::UnknownLanguage {
                path: path.to_string(),
            })?;
        let tree = extract::parse(lang.as_ref(), path, text)?;
        Ok(extract::cover(path, text, &tree, &self.budget))
    }

    /// The files a walk of the root lists (`.gitignore` honoured, hidden files
    /// per the filters), as `(repo-relative path, absolute path)` in path order.
    pub fn list_files(&self) -> Result<Vec<(String, PathBuf)>> {
        walk::list_files(&self.root, &self.config.filters)
    }

    /// Reads, classifies and mines one listed file (see [`Miner::list_files`]):
    /// its units, or the reason it is skipped.
    pub fn mine_file(&self, rel: &str, abs: &Path) -> std::result::Result<FileUnits, Skip> {
        self.mine_one(rel, abs, None)
    }

    /// Walks, reads, parses and extracts the repository (in parallel; the result
    /// is in path order and identical across runs).
    pub fn mine(&self, progress: &dyn Progress) -> Result<Mined> {
        progress.start(Stage::Walk, 0);
        let listed = walk::list_files(&self.root, &self.config.filters)?;
        progress.finish(Stage::Walk);
        let files_seen = listed.len();
        let changed = match &self.config.since {
            Some(rev) => Some(self.changed_since(rev, &listed)?),
            None => None,
        };
        progress.start(Stage::Parse, listed.len() as u64);
        let results: Vec<std::result::Result<FileUnits, Skip>> = listed
            .par_iter()
            .map(|(rel, abs)| {
                let r = self.mine_one(rel, abs, changed.as_ref());
                progress.advance(1);
                r
            })
            .collect();
        progress.finish(Stage::Parse);
        let mut mined = Mined {
            files_seen,
            ..Mined::default()
        };
        for r in results {
            match r {
                Ok(f) => mined.files.push(f),
                Err(s) => mined.skipped.push(s),
            }
        }
        Ok(mined)
    }

    fn mine_one(
        &self,
        rel: &str,
        abs: &Path,
        changed: Option<&std::collections::BTreeSet<String>>,
    ) -> std::result::Result<FileUnits, Skip> {
        if let Some(changed) = changed
            && !changed.contains(rel)
        {
            return Err(Skip {
                path: rel.to_string(),
                reason: SkipReason::Unchanged,
                detail: String::new(),
            });
        }
        let SourceFile {
            path,
            text,
            language,
        } = walk::classify(rel, abs, &self.registry, &self.config.filters)?;
        let tree = extract::parse(language.as_ref(), &path, &text).map_err(|e| Skip {
            path: path.clone(),
            reason: SkipReason::ParseErrors,
            detail: e.to_string(),
        })?;
        let file = extract::extract(language.as_ref(), &path, &text, &tree, &self.budget);
        match &file.rejected {
            Some(why) => Err(Skip {
                path,
                reason: SkipReason::ParseErrors,
                detail: why.clone(),
            }),
            None => Ok(file),
        }
    }

    #[cfg(feature = "git")]
    fn changed_since(
        &self,
        rev: &str,
        listed: &[(String, PathBuf)],
    ) -> Result<std::collections::BTreeSet<String>> {
        crate::git::changed_since(&self.root, rev, listed)
    }

    #[cfg(not(feature = "git"))]
    fn changed_since(
        &self,
        _rev: &str,
        _listed: &[(String, PathBuf)],
    ) -> Result<std::collections::BTreeSet<String>> {
        Err(Error::Config(
            "incremental mining needs the `git` feature of forge-miner".into(),
        ))
    }
}
