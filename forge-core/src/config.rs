//! `forge.toml`: the one configuration file of a Forge project.
//!
//! [`ForgeFile`] mirrors the file (every table and key, `deny_unknown_fields`
//! everywhere, so a misspelt key is an error that names it with its line);
//! [`ForgeFile::resolve`] validates it and fills every default into a
//! [`ForgeConfig`], with paths made absolute against the file's folder.
//! [`DEFAULT_FORGE_TOML`] is the commented file `forge init` writes: every key
//! with its default and what it does.
//!
//! The `[adapter]` and `[train]` tables are forge-peft's own run-file tables
//! ([`forge_peft::AdapterFile`], [`forge_peft::TrainOptions`]); `[[judge.rule]]`
//! is forge-judge's gate rule ([`forge_judge::Rule`]). forge-core only adds the
//! tables that belong to the pipeline.

use std::path::{Path, PathBuf};

use forge_gguf::export::FileType;
use forge_judge::{Gate, Rule};
use forge_miner::{Budget, DatasetConfig, Format, MinerConfig, TaskSet};
use forge_peft::{AdapterFile, DataFile, PromptStyle, RunFile, TrainOptions};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The file name of a project's configuration.
pub const CONFIG_FILE: &str = "forge.toml";

/// The commented default configuration (`forge init`).
pub const DEFAULT_FORGE_TOML: &str = include_str!("default_forge.toml");

/// `[repo]`: what to learn from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoFile {
    /// The repository (or folder) to mine, relative to `forge.toml` (default `.`).
    pub path: Option<PathBuf>,
    /// Globs (repo-relative, `**` crosses folders) of the files to mine; default: every file.
    pub include: Option<Vec<String>>,
    /// Globs of files never mined (applied after `include`).
    pub exclude: Option<Vec<String>>,
}

/// `[model]`: the base model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// `default` (SmolLM2-135M-Instruct from `cargo xtask model`), a `.gguf` file or a
    /// Hugging Face folder (relative to `forge.toml`).
    pub source: Option<String>,
}

/// `[dataset]`: how mined units become training records (forge-miner).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetFile {
    /// Tasks, comma separated: `completion,fim,explain,doc_to_code,raft` or `all`.
    pub tasks: Option<String>,
    /// Record format of the split files (`messages`, `text`, `completions`, …).
    pub format: Option<String>,
    /// Unit size budget in characters.
    pub budget: Option<usize>,
    /// Seed of every random choice (RAFT, FIM spans, splits).
    pub seed: Option<u64>,
    /// Fraction of files in the validation split.
    pub valid_fraction: Option<f64>,
    /// Fraction of files in the test split (the judge's held-out files).
    pub test_fraction: Option<f64>,
    /// Keep at most this many training records (the first after a seeded shuffle); 0 = all.
    pub max_train_records: Option<usize>,
}

/// `[data]`: how records are tokenized for training and perplexity (forge-peft's `[data]`
/// without the file paths, which the pipeline supplies).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// `chat` or `plain`.
    pub prompt_style: Option<PromptStyle>,
    /// Count only the answer tokens in the loss.
    pub mask_prompt: Option<bool>,
    /// Pack examples into full rows.
    pub packing: Option<bool>,
    /// Longest sequence in tokens.
    pub max_seq_len: Option<usize>,
}

/// `[judge]`: evaluation of the base model against the fine-tuned one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeFile {
    /// Measure perplexity on the test split.
    pub perplexity: Option<bool>,
    /// Use at most this many test records for perplexity.
    pub max_examples: Option<usize>,
    /// Sequences per forward pass for perplexity.
    pub batch_size: Option<usize>,
    /// Reconstruct at most this many functions of the test files (0 = off).
    pub reconstruct_units: Option<usize>,
    /// Most generated tokens per reconstructed body.
    pub max_tokens: Option<usize>,
    /// The gate; when absent, forge-judge's default rules.
    pub rule: Option<Vec<Rule>>,
}

/// `[export]`: GGUF files written after judging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    /// File types: `f32`, `f16`, `bf16`, `q8_0`, `q4_k_m`, `q5_k_m`; the first is deployed.
    pub types: Option<Vec<String>>,
    /// Write an Ollama Modelfile beside the deployed GGUF.
    pub modelfile: Option<bool>,
}

/// `[deploy]`: where a model that passed the gate goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployFile {
    /// `auto`: run `ollama create` when `ollama` is on the PATH, else print the command;
    /// `never`: only register the model.
    pub ollama: Option<String>,
    /// The Ollama model name.
    pub name: Option<String>,
}

/// `[watch]`: when `forge watch` runs the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchFile {
    /// Run when at least this many mined files changed since the last trained commit.
    pub min_changed_files: Option<usize>,
    /// Also run when a new tag matching this glob appears (e.g. `v*`).
    pub tag_pattern: Option<String>,
    /// Seconds between polls.
    pub interval_s: Option<u64>,
}

/// The whole `forge.toml`, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeFile {
    /// Where runs, the registry and the lock live (default `.forge`, relative to the file).
    pub state_dir: Option<PathBuf>,
    /// `[repo]`.
    #[serde(default)]
    pub repo: RepoFile,
    /// `[model]`.
    #[serde(default)]
    pub model: ModelFile,
    /// `[dataset]`.
    #[serde(default)]
    pub dataset: DatasetFile,
    /// `[data]`.
    #[serde(default)]
    pub data: DataSection,
    /// `[adapter]` (forge-peft).
    #[serde(default)]
    pub adapter: AdapterFile,
    /// `[train]` (forge-peft).
    #[serde(default)]
    pub train: TrainOptions,
    /// `[judge]`.
    #[serde(default)]
    pub judge: JudgeFile,
    /// `[export]`.
    #[serde(default)]
    pub export: ExportFile,
    /// `[deploy]`.
    #[serde(default)]
    pub deploy: DeployFile,
    /// `[watch]`.
    #[serde(default)]
    pub watch: WatchFile,
}

/// Whether and how deploy calls Ollama.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OllamaMode {
    /// `ollama create` when `ollama` is on the PATH, else print the command.
    Auto,
    /// Never call Ollama.
    Never,
}

/// The judge settings, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeConfig {
    /// Measure perplexity.
    pub perplexity: bool,
    /// Test records used for perplexity.
    pub max_examples: usize,
    /// Perplexity batch size.
    pub batch_size: usize,
    /// Functions reconstructed (0 = off).
    pub reconstruct_units: usize,
    /// Tokens per reconstructed body.
    pub max_tokens: usize,
    /// The gate.
    pub gate: Gate,
}

/// The export settings, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportConfig {
    /// GGUF types, the deployed one first (their `name()`s).
    #[serde(serialize_with = "ser_types")]
    pub types: Vec<FileType>,
    /// Write a Modelfile.
    pub modelfile: bool,
}

fn ser_types<S: serde::Serializer>(t: &[FileType], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(t.iter().map(|t| t.as_str()))
}

/// The deploy settings, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployConfig {
    /// Ollama use.
    pub ollama: OllamaMode,
    /// Ollama model name.
    pub name: String,
}

/// The watch settings, resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchConfig {
    /// Changed-file threshold.
    pub min_changed_files: usize,
    /// Tag glob.
    pub tag_pattern: Option<String>,
    /// Poll interval.
    pub interval_s: u64,
}

/// A validated configuration with every default filled and paths absolute.
#[derive(Debug, Clone)]
pub struct ForgeConfig {
    /// The file it came from (or the folder, for the built-in default).
    pub origin: PathBuf,
    /// The folder relative paths resolve against.
    pub base_dir: PathBuf,
    /// The state folder (`.forge`).
    pub state_dir: PathBuf,
    /// The repository root.
    pub repo: PathBuf,
    /// Include globs as written.
    pub include: Vec<String>,
    /// Exclude globs as written.
    pub exclude: Vec<String>,
    include_set: Option<GlobSet>,
    exclude_set: GlobSet,
    /// The base model source (paths absolute).
    pub model: String,
    /// forge-miner's configuration (budget, dataset).
    pub miner: MinerConfig,
    /// Training records kept (0 = all).
    pub max_train_records: usize,
    /// forge-peft's run file (data paths and output folder are the pipeline's).
    pub run_file: RunFile,
    /// Judge.
    pub judge: JudgeConfig,
    /// Export.
    pub export: ExportConfig,
    /// Deploy.
    pub deploy: DeployConfig,
    /// Watch.
    pub watch: WatchConfig,
    /// The file as parsed (recorded in manifests).
    pub file: ForgeFile,
}

fn invalid(origin: &Path, key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        path: origin.to_path_buf(),
        key: key.to_string(),
        message: message.into(),
    }
}

fn glob_set(origin: &Path, key: &str, globs: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = Glob::new(g).map_err(|e| invalid(origin, key, format!("glob {g:?}: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| invalid(origin, key, format!("globs: {e}")))
}

impl ForgeFile {
    /// Reads and parses `path` (not yet validated: see [`ForgeFile::resolve`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let origin = origin.as_ref();
            let key = e
                .message()
                .split('`')
                .nth(1)
                .map(str::to_string)
                .unwrap_or_default();
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            Error::Config {
                path: origin.to_path_buf(),
                key,
                message: match line {
                    Some(l) => format!("line {l}: {}", e.message().trim()),
                    None => e.message().trim().to_string(),
                },
            }
        })
    }

    /// Validates every key and fills the defaults; relative paths resolve against
    /// `base_dir`, errors name `origin` and the key.
    pub fn resolve(
        &self,
        base_dir: impl AsRef<Path>,
        origin: impl AsRef<Path>,
    ) -> Result<ForgeConfig> {
        let base = base_dir.as_ref();
        let origin = origin.as_ref();
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let bad = |key: &str, m: String| invalid(origin, key, m);

        // [repo]
        let repo = abs(self.repo.path.as_deref().unwrap_or(Path::new(".")));
        if !repo.is_dir() {
            return Err(bad(
                "repo.path",
                format!("{} is not a folder", repo.display()),
            ));
        }
        let include = self.repo.include.clone().unwrap_or_default();
        let exclude = self.repo.exclude.clone().unwrap_or_default();
        let include_set = if include.is_empty() {
            None
        } else {
            Some(glob_set(origin, "repo.include", &include)?)
        };
        let exclude_set = glob_set(origin, "repo.exclude", &exclude)?;

        // [model]
        let source = self
            .model
            .source
            .clone()
            .unwrap_or_else(|| "default".into());
        if source.trim().is_empty() {
            return Err(bad(
                "model.source",
                "empty: use \"default\", a .gguf file or a folder".into(),
            ));
        }
        let model = if source == "default" {
            source
        } else {
            let p = abs(Path::new(&source));
            if !p.exists() {
                return Err(bad(
                    "model.source",
                    format!("{} does not exist", p.display()),
                ));
            }
            p.to_string_lossy().into_owned()
        };

        // [dataset]
        let d = &self.dataset;
        let mut dataset = DatasetConfig::default();
        if let Some(t) = &d.tasks {
            dataset.tasks = t
                .parse::<TaskSet>()
                .map_err(|e| bad("dataset.tasks", e.to_string()))?;
        }
        if let Some(f) = &d.format {
            dataset.format = f
                .parse::<Format>()
                .map_err(|e| bad("dataset.format", e.to_string()))?;
        }
        if let Some(s) = d.seed {
            dataset.seed = s;
        }
        for (key, v, slot) in [
            (
                "dataset.valid_fraction",
                d.valid_fraction,
                &mut dataset.valid_fraction,
            ),
            (
                "dataset.test_fraction",
                d.test_fraction,
                &mut dataset.test_fraction,
            ),
        ] {
            if let Some(v) = v {
                if !(0.0..1.0).contains(&v) {
                    return Err(bad(key, format!("{v} is not in [0, 1)")));
                }
                *slot = v;
            }
        }
        if dataset.valid_fraction + dataset.test_fraction >= 1.0 {
            return Err(bad(
                "dataset.test_fraction",
                "valid_fraction + test_fraction must leave files for training".into(),
            ));
        }
        let budget = d.budget.unwrap_or(2000);
        if budget == 0 {
            return Err(bad("dataset.budget", "must be at least 1".into()));
        }
        let mut miner = MinerConfig {
            budget,
            dataset,
            ..MinerConfig::default()
        };
        miner.since = None;

        // [data], [adapter], [train]: forge-peft's run file.
        if self.train.output_dir.is_some() {
            return Err(bad(
                "train.output_dir",
                "the pipeline owns the run folder (.forge/runs/<id>/train); remove the key".into(),
            ));
        }
        if self.train.steps == 0 {
            return Err(bad("train.steps", "must be at least 1".into()));
        }
        if self.train.batch_size == 0 {
            return Err(bad("train.batch_size", "must be at least 1".into()));
        }
        if !(self.train.lr.is_finite() && self.train.lr > 0.0) {
            return Err(bad(
                "train.lr",
                format!("{} is not a positive number", self.train.lr),
            ));
        }
        if self.data.max_seq_len == Some(0) {
            return Err(bad("data.max_seq_len", "must be at least 1".into()));
        }
        let run_file = RunFile {
            model: Some(model.clone()),
            output_dir: None,
            data: DataFile {
                // Placeholder paths: replaced by the dataset stage's files.
                train: Some(PathBuf::from("train.jsonl")),
                valid: None,
                prompt_style: self.data.prompt_style,
                mask_prompt: self.data.mask_prompt,
                packing: self.data.packing,
                max_seq_len: self.data.max_seq_len,
            },
            adapter: self.adapter.clone(),
            train: self.train.clone(),
        };
        // forge-peft validates the adapter table (method, rank, svd, quantization).
        run_file.resolve(base).map_err(|e| match e {
            forge_peft::Error::InvalidOption {
                name,
                found,
                expected,
            } => {
                // forge-peft names the adapter keys without their table.
                let key = if name.contains('.') {
                    name.to_string()
                } else {
                    format!("adapter.{name}")
                };
                bad(&key, format!("{found}: expected {expected}"))
            }
            other => bad("adapter", other.to_string()),
        })?;

        // [judge]
        let j = &self.judge;
        let gate = match &j.rule {
            Some(rules) => {
                Gate::new(rules.clone()).map_err(|e| bad("judge.rule", e.to_string()))?
            }
            None => Gate::default_rules(),
        };
        let judge = JudgeConfig {
            perplexity: j.perplexity.unwrap_or(true),
            max_examples: j.max_examples.unwrap_or(64),
            batch_size: j.batch_size.unwrap_or(4),
            reconstruct_units: j.reconstruct_units.unwrap_or(8),
            max_tokens: j.max_tokens.unwrap_or(96),
            gate,
        };
        if judge.perplexity && judge.max_examples == 0 {
            return Err(bad(
                "judge.max_examples",
                "must be at least 1 when perplexity is on".into(),
            ));
        }
        if judge.batch_size == 0 {
            return Err(bad("judge.batch_size", "must be at least 1".into()));
        }
        if judge.reconstruct_units > 0 && judge.max_tokens == 0 {
            return Err(bad("judge.max_tokens", "must be at least 1".into()));
        }
        if !judge.perplexity && judge.reconstruct_units == 0 {
            return Err(bad(
                "judge",
                "perplexity is off and reconstruct_units is 0: the gate would see no metric".into(),
            ));
        }

        // [export]
        let names = self
            .export
            .types
            .clone()
            .unwrap_or_else(|| vec!["q4_k_m".into()]);
        if names.is_empty() {
            return Err(bad(
                "export.types",
                "empty: name at least one GGUF type".into(),
            ));
        }
        let mut types = Vec::new();
        for n in &names {
            let t: FileType = n
                .parse()
                .map_err(|e: forge_gguf::Error| bad("export.types", e.to_string()))?;
            if types.contains(&t) {
                return Err(bad("export.types", format!("{n:?} is listed twice")));
            }
            types.push(t);
        }
        let export = ExportConfig {
            types,
            modelfile: self.export.modelfile.unwrap_or(true),
        };

        // [deploy]
        let ollama = match self.deploy.ollama.as_deref().unwrap_or("auto") {
            "auto" => OllamaMode::Auto,
            "never" => OllamaMode::Never,
            other => {
                return Err(bad(
                    "deploy.ollama",
                    format!("{other:?}: expected \"auto\" or \"never\""),
                ));
            }
        };
        let name = self
            .deploy
            .name
            .clone()
            .unwrap_or_else(|| "forge-model".into());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
        {
            return Err(bad(
                "deploy.name",
                format!("{name:?}: use letters, digits and - _ . : /"),
            ));
        }

        // [watch]
        let w = &self.watch;
        let min_changed_files = w.min_changed_files.unwrap_or(5);
        if min_changed_files == 0 {
            return Err(bad("watch.min_changed_files", "must be at least 1".into()));
        }
        if let Some(p) = &w.tag_pattern {
            Glob::new(p).map_err(|e| bad("watch.tag_pattern", format!("{p:?}: {e}")))?;
        }
        let interval_s = w.interval_s.unwrap_or(60);
        if interval_s == 0 {
            return Err(bad("watch.interval_s", "must be at least 1".into()));
        }

        Ok(ForgeConfig {
            origin: origin.to_path_buf(),
            base_dir: base.to_path_buf(),
            state_dir: abs(self.state_dir.as_deref().unwrap_or(Path::new(".forge"))),
            repo,
            include,
            exclude,
            include_set,
            exclude_set,
            model,
            max_train_records: d.max_train_records.unwrap_or(0),
            miner,
            run_file,
            judge,
            export,
            deploy: DeployConfig { ollama, name },
            watch: WatchConfig {
                min_changed_files,
                tag_pattern: w.tag_pattern.clone(),
                interval_s,
            },
            file: self.clone(),
        })
    }
}

impl ForgeConfig {
    /// Reads, parses and validates `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(path, e))?
                .join(path)
        };
        let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        ForgeFile::from_file(&abs)?.resolve(base, &abs)
    }

    /// Whether the repo-relative `path` is mined under `[repo] include/exclude`.
    pub fn selects(&self, path: &str) -> bool {
        self.include_set.as_ref().is_none_or(|s| s.is_match(path))
            && !self.exclude_set.is_match(path)
    }

    /// The unit budget.
    pub fn budget(&self) -> Budget {
        Budget::chars(self.miner.budget)
    }

    /// The runs folder.
    pub fn runs_dir(&self) -> PathBuf {
        self.state_dir.join("runs")
    }

    /// The registry database.
    pub fn registry_path(&self) -> PathBuf {
        self.state_dir.join("registry.sqlite")
    }

    /// The pipeline lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("pipeline.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_and_resolves() -> Result<()> {
        let dir = std::env::temp_dir();
        let f = ForgeFile::from_toml_str(DEFAULT_FORGE_TOML, "forge.toml")?;
        let c = f.resolve(&dir, dir.join("forge.toml"))?;
        assert_eq!(c.model, "default");
        assert_eq!(c.export.types, vec![FileType::Q4_K_M]);
        assert_eq!(c.watch.min_changed_files, 5);
        Ok(())
    }
}
