//! Loading a model: [`ModelSource`], [`LoadOptions`], [`load`] and the key
//! matching of [`load_weights`].
//!
//! Rules (unlike mlx-rs's `load_safetensors`, which skips what it does not
//! know):
//! - every model parameter must be present in the checkpoint, else
//!   [`Error::KeyMismatch`] lists the missing names;
//! - a checkpoint tensor with no parameter is an error too (listed as
//!   unexpected) unless [`LoadOptions::with_allow_unexpected`] is set, in which
//!   case the names are returned in [`LoadReport::unexpected`];
//! - two buffers are always skipped and reported in [`LoadReport::ignored`]:
//!   `*.rotary_emb.inv_freq` (recomputed from the config) and `lm_head.weight`
//!   when the embeddings are tied (some exporters save the shared matrix twice);
//! - a shape difference is [`Error::ShapeMismatch`] naming file, tensor and
//!   both shapes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};

use crate::config::read_model_config;
use crate::cpu::CpuModel;
use crate::decoder::Model;
use crate::error::{Error, Result};
use crate::gguf::GgufSource;
use crate::tokenizer::Tokenizer;
use crate::weights::{SafetensorsSource, WeightSource};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelSource {
    /// A Hugging Face folder: `config.json`, `model.safetensors` (or
    /// `model.safetensors.index.json` and its shards), and optionally
    /// `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`.
    HfDir(PathBuf),
    /// A GGUF file (llama.cpp's format), dequantized to the requested dtype
    /// with its tokenizer built from the metadata.
    Gguf(PathBuf),
    /// The default model: SmolLM2-135M-Instruct as GGUF (Q4_1), fetched by
    /// `cargo xtask model`; see [`default_model_path`].
    #[default]
    Default,
}

impl ModelSource {
    /// Interprets a command-line argument: `default`, a `.gguf` file, or a
    /// folder.
    pub fn parse(arg: &str) -> Self {
        let path = Path::new(arg);
        if arg == "default" {
            Self::Default
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            Self::Gguf(path.to_path_buf())
        } else {
            Self::HfDir(path.to_path_buf())
        }
    }
}

/// Options for [`load`] and [`load_weights`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct LoadOptions {
    dtype: Dtype,
    allow_unexpected: bool,
    tokenizer: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadOptions {
    /// f32 weights, unexpected tensors are an error, tokenizer loaded when
    /// present.
    pub fn new() -> Self {
        Self {
            dtype: Dtype::Float32,
            allow_unexpected: false,
            tokenizer: true,
        }
    }

    /// Converts every tensor to `dtype` (f32, f16 or bf16).
    pub fn with_dtype(mut self, dtype: Dtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Accepts checkpoint tensors the model has no parameter for (they are
    /// listed in the report instead).
    pub fn with_allow_unexpected(mut self, allow: bool) -> Self {
        self.allow_unexpected = allow;
        self
    }

    /// Whether [`load`] reads the tokenizer files.
    pub fn with_tokenizer(mut self, load: bool) -> Self {
        self.tokenizer = load;
        self
    }

    /// The weight dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
}

/// What [`load_weights`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of parameters filled.
    pub loaded: usize,
    /// Checkpoint tensors without a parameter (only when allowed), sorted.
    pub unexpected: Vec<String>,
    /// Known buffers skipped by rule, sorted.
    pub ignored: Vec<String>,
}

/// A loaded model with its tokenizer (when the source has one).
#[derive(Debug)]
pub struct LoadedModel {
    /// The model.
    pub model: Model,
    /// The tokenizer, if requested and the source has one (`tokenizer.json`
    /// of a folder, the metadata of a GGUF file).
    pub tokenizer: Option<Tokenizer>,
    /// What the weight loading did.
    pub report: LoadReport,
}

/// Loads a model (and its tokenizer) from `source`.
pub fn load(source: &ModelSource, options: &LoadOptions) -> Result<LoadedModel> {
    match source {
        ModelSource::HfDir(dir) => load_hf_dir(dir, options),
        ModelSource::Gguf(path) => load_gguf(path, options),
        ModelSource::Default => load_gguf(&default_model_path()?, options),
    }
}

/// The file name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where [`ModelSource::Default`] is read from: `$FORGE_DEFAULT_MODEL` when
/// set, else `models/SmolLM2-135M-Instruct.Q4_1.gguf` under
/// `$FORGE_PEERS_DIR` or the workspace's `.forge/peers` (where
/// `cargo xtask model` puts it). A missing file is
/// [`Error::DefaultModelMissing`].
pub fn default_model_path() -> Result<PathBuf> {
    let path = if let Some(p) = std::env::var_os("FORGE_DEFAULT_MODEL") {
        PathBuf::from(p)
    } else {
        std::env::var_os("FORGE_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
            .join("models")
            .join(DEFAULT_MODEL_FILE)
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::DefaultModelMissing { path })
    }
}

/// Loads a GGUF source (a file or [`ModelSource::Default`]) into the CPU
/// engine [`CpuModel`], which keeps the stored quantized types, with its
/// tokenizer. A Hugging Face folder is [`Error::Unsupported`]: the engine
/// runs GGUF files (export one, or use [`load`]).
pub fn load_cpu(source: &ModelSource) -> Result<(CpuModel, Tokenizer)> {
    let path = match source {
        ModelSource::Gguf(p) => p.clone(),
        ModelSource::Default => default_model_path()?,
        ModelSource::HfDir(dir) => {
            return Err(Error::Unsupported(format!(
                "{}: the CPU engine runs GGUF files; load a Hugging Face folder with the MLX model",
                dir.display()
            )));
        }
    };
    let source = GgufSource::open(&path)?;
    let tokenizer = Tokenizer::from_gguf(source.file(), &path)?;
    Ok((CpuModel::from_source(&source)?, tokenizer))
}

fn load_gguf(path: &Path, options: &LoadOptions) -> Result<LoadedModel> {
    let source = GgufSource::open(path)?;
    let mut model = Model::new(source.config().clone())?;
    let report = load_weights(&mut model, &source, options)?;
    let tokenizer = if options.tokenizer {
        Some(Tokenizer::from_gguf(source.file(), path)?)
    } else {
        None
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        report,
    })
}

fn load_hf_dir(dir: &Path, options: &LoadOptions) -> Result<LoadedModel> {
    let config = read_model_config(&dir.join("config.json"))?;
    let mut model = Model::new(config)?;
    let source = SafetensorsSource::from_hf_dir(dir)?;
    let report = load_weights(&mut model, &source, options)?;
    let tokenizer = if options.tokenizer && dir.join("tokenizer.json").is_file() {
        Some(Tokenizer::from_hf_dir(dir)?)
    } else {
        None
    };
    Ok(LoadedModel {
        model,
        tokenizer,
        report,
    })
}

fn ignored_by_rule(name: &str, tied: bool) -> bool {
    name.ends_with(".rotary_emb.inv_freq") || (tied && name == "lm_head.weight")
}

/// Fills every parameter of `model` from `source`, matching checkpoint names
/// to parameter names exactly; see the module rules.
pub fn load_weights(
    model: &mut Model,
    source: &dyn WeightSource,
    options: &LoadOptions,
) -> Result<LoadReport> {
    if !matches!(
        options.dtype,
        Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16
    ) {
        return Err(Error::InvalidOption {
            name: "dtype",
            found: format!("{:?}", options.dtype),
            expected: "Float32, Float16 or Bfloat16",
        });
    }
    let tied = model.config().tie_word_embeddings;
    let mut report = LoadReport::default();
    let mut filled: HashMap<String, Array> = HashMap::new();
    let expected: HashMap<String, Vec<i32>> = model.parameter_shapes().into_iter().collect();
    let mut seen = HashSet::new();
    source.for_each_tensor(options.dtype, &mut |t| {
        if !seen.insert(t.name.clone()) {
            return Err(Error::DuplicateTensor {
                path: t.origin,
                tensor: t.name,
            });
        }
        if ignored_by_rule(&t.name, tied) {
            report.ignored.push(t.name);
            return Ok(());
        }
        match expected.get(&t.name) {
            Some(shape) if shape.as_slice() != t.array.shape() => Err(Error::ShapeMismatch {
                path: t.origin,
                tensor: t.name,
                expected: shape.clone(),
                found: t.array.shape().to_vec(),
            }),
            Some(_) => {
                filled.insert(t.name, t.array);
                Ok(())
            }
            None => {
                report.unexpected.push(t.name);
                Ok(())
            }
        }
    })?;
    let mut missing: Vec<String> = expected
        .keys()
        .filter(|k| !filled.contains_key(*k))
        .cloned()
        .collect();
    missing.sort();
    report.unexpected.sort();
    report.ignored.sort();
    if !missing.is_empty() || (!report.unexpected.is_empty() && !options.allow_unexpected) {
        let unexpected = if options.allow_unexpected {
            Vec::new()
        } else {
            report.unexpected
        };
        return Err(Error::KeyMismatch {
            source_name: source.describe(),
            missing,
            unexpected,
        });
    }
    let mut params = model.parameters_mut().flatten();
    for (name, array) in filled {
        if let Some(p) = params.get_mut(name.as_str()) {
            **p = array;
            report.loaded += 1;
        }
    }
    let arrays: Vec<&Array> = model.parameters().flatten().into_values().collect();
    mlx_rs::transforms::eval(arrays)?;
    Ok(report)
}
