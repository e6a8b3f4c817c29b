//! The run configuration: a TOML file (like mlx-lm's YAML) mirrored by
//! [`RunFile`], resolved into [`RunConfig`] with every field filled and
//! paths made absolute relative to the file.
//!
//! ```toml
//! model = "default"                 # forge-model source: "default", a folder, a .gguf
//! output_dir = "runs/lora"          # metrics.jsonl and checkpoints/
//!
//! [data]
//! train = "data/train.jsonl"        # any forge-miner / mlx-lm JSONL format
//! valid = "data/valid.jsonl"        # optional
//! prompt_style = "chat"             # chat | plain
//! mask_prompt = true                # loss on the answer only
//! packing = false                   # concatenate examples into max_seq_len rows
//! max_seq_len = 512
//!
//! [adapter]
//! method = "lora"                   # lora | rs-lora (rora) | pissa | dora | cloq
//! rank = 8
//! alpha = 16.0
//! targets = ["q_proj", "v_proj"]    # names, "all-linear", "re:<regex>"
//! rules = [{ pattern = "o_proj", rank = 16, alpha = 32.0 }]  # per-pattern overrides, tried first
//! layers = [14, 30]                 # only these layers (start, end)
//! quantize_bits = 4                 # quantized base (QLoRA, QPiSSA, CLoQ)
//! quantize_group = 64
//! svd = "randomized"                # PiSSA: full | randomized
//! svd_niter = 4
//! seed = 0
//!
//! [train]                           # every field of TrainOptions
//! steps = 1000
//! batch_size = 4
//! lr = 1e-4
//! warmup = 10
//! schedule = "cosine"               # constant | cosine | linear
//! save_every = 100
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::PeftConfig;
use crate::error::{Error, Result};
use crate::linalg::SvdMode;
use crate::methods::Method;
use crate::quant::QuantSpec;
use crate::target::TargetRule;
use crate::train::data::PromptStyle;
use crate::train::trainer::TrainOptions;

/// `[data]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// Training file.
    pub train: Option<PathBuf>,
    /// Validation file.
    pub valid: Option<PathBuf>,
    /// `chat` or `plain`.
    pub prompt_style: Option<PromptStyle>,
    /// Mask the prompt out of the loss.
    pub mask_prompt: Option<bool>,
    /// Pack examples into full rows.
    pub packing: Option<bool>,
    /// Longest sequence.
    pub max_seq_len: Option<usize>,
}

/// `[adapter]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterFile {
    /// Method name.
    pub method: Option<String>,
    /// Rank.
    pub rank: Option<usize>,
    /// Alpha.
    pub alpha: Option<f32>,
    /// Target patterns.
    pub targets: Option<Vec<String>>,
    /// Per-pattern overrides (tried before `targets`).
    pub rules: Option<Vec<TargetRule>>,
    /// `[start, end)` layers.
    pub layers: Option<(usize, usize)>,
    /// Quantized base bits.
    pub quantize_bits: Option<i32>,
    /// Quantized base group size.
    pub quantize_group: Option<i32>,
    /// `full` or `randomized`.
    pub svd: Option<String>,
    /// Power iterations of the randomized SVD.
    pub svd_niter: Option<usize>,
    /// Seed.
    pub seed: Option<u64>,
}

/// The TOML file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// Model source.
    pub model: Option<String>,
    /// Run directory.
    pub output_dir: Option<PathBuf>,
    /// `[data]`.
    #[serde(default)]
    pub data: DataFile,
    /// `[adapter]`.
    #[serde(default)]
    pub adapter: AdapterFile,
    /// `[train]`.
    #[serde(default)]
    pub train: TrainOptions,
}

/// Resolved data options.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// Training file (absolute).
    pub train: PathBuf,
    /// Validation file (absolute).
    pub valid: Option<PathBuf>,
    /// Prompt style.
    pub prompt_style: PromptStyle,
    /// Mask the prompt.
    pub mask_prompt: bool,
    /// Packing.
    pub packing: bool,
    /// Longest sequence.
    pub max_seq_len: usize,
}

/// The resolved run configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Model source (`default`, a folder, a `.gguf`).
    pub model: String,
    /// Data.
    pub data: DataConfig,
    /// Adapters.
    pub adapter: PeftConfig,
    /// Training (its `output_dir` resolved).
    pub train: TrainOptions,
}

impl RunFile {
    /// Parses a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// Parses TOML text; `path` names it in errors.
    pub fn from_toml_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Toml {
            path: path.as_ref().to_path_buf(),
            message: e.to_string().trim().to_string(),
        })
    }

    /// Fills every default and resolves paths against `base_dir`.
    pub fn resolve(&self, base_dir: impl AsRef<Path>) -> Result<RunConfig> {
        let base = base_dir.as_ref();
        let abs = |p: &PathBuf| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        };
        let d = &self.data;
        let train =
            d.train.as_ref().map(abs).ok_or_else(|| {
                Error::invalid("data.train", "missing", "the training JSONL file")
            })?;
        let a = &self.adapter;
        let method = Method::parse(a.method.as_deref().unwrap_or("lora"))?;
        let rank = a.rank.unwrap_or(8);
        let mut cfg = PeftConfig::new(method, rank, a.alpha.unwrap_or(2.0 * rank as f32));
        let mut rules = a.rules.clone().unwrap_or_default();
        rules.extend(
            a.targets
                .clone()
                .unwrap_or_else(|| vec!["q_proj".into(), "v_proj".into()])
                .into_iter()
                .map(TargetRule::new),
        );
        cfg = cfg.with_target_rules(rules).with_seed(a.seed.unwrap_or(0));
        if let Some((lo, hi)) = a.layers {
            cfg = cfg.with_layers(lo..hi);
        }
        if let Some(bits) = a.quantize_bits {
            cfg = cfg.with_quantized_base(
                QuantSpec::new(bits).with_group_size(a.quantize_group.unwrap_or(64)),
            );
        }
        cfg = cfg.with_svd(match a.svd.as_deref().unwrap_or("randomized") {
            "full" => SvdMode::Full,
            "randomized" => SvdMode::Randomized {
                niter: a.svd_niter.unwrap_or(4),
                oversample: 8,
            },
            other => {
                return Err(Error::invalid(
                    "adapter.svd",
                    format!("{other:?}"),
                    "\"full\" or \"randomized\"",
                ));
            }
        });
        cfg.validate()?;
        let mut t = self.train.clone();
        t.output_dir = self.output_dir.as_ref().map(abs);
        Ok(RunConfig {
            model: self.model.clone().unwrap_or_else(|| "default".into()),
            data: DataConfig {
                train,
                valid: d.valid.as_ref().map(abs),
                prompt_style: d.prompt_style.unwrap_or_default(),
                mask_prompt: d.mask_prompt.unwrap_or(true),
                packing: d.packing.unwrap_or(false),
                max_seq_len: d.max_seq_len.unwrap_or(512),
            },
            adapter: cfg,
            train: t,
        })
    }
}

impl RunConfig {
    /// Reads and resolves a TOML file (paths relative to its folder).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        RunFile::from_file(path)?.resolve(dir)
    }
}
