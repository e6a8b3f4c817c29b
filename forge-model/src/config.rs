//! Model configuration: [`HfConfig`] mirrors a Hugging Face `config.json`;
//! [`ModelConfig`] is the resolved runtime configuration with every field
//! filled, which the model is built from.
//!
//! Defaults for keys a `config.json` may omit follow the Hugging Face
//! `transformers` configuration classes (`LlamaConfig`, `Qwen2Config`,
//! `MistralConfig`): that is what a checkpoint's authors wrote against.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A decoder family Forge builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// LLaMA 1/2/3.x, SmolLM2, TinyLlama (`LlamaForCausalLM`).
    Llama,
    /// Qwen2 / Qwen2.5 / Qwen2.5-Coder (`Qwen2ForCausalLM`): q/k/v biases.
    Qwen2,
    /// Mistral 7B and relatives (`MistralForCausalLM`).
    Mistral,
}

impl Architecture {
    /// Every supported architecture.
    pub const ALL: [Architecture; 3] = [Self::Llama, Self::Qwen2, Self::Mistral];

    /// The `model_type` value in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Mistral => "mistral",
        }
    }

    /// The `architectures[0]` value in `config.json`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Mistral => "MistralForCausalLM",
        }
    }

    /// Parses a `model_type` value.
    pub fn from_model_type(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.model_type() == s)
    }

    fn from_hf_class(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.hf_class() == s)
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}

/// One token id or a list of them (`eos_token_id` may be either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// A Hugging Face `config.json`, as written on disk.
///
/// Every key is optional here so that [`HfConfig::resolve`] can name a missing
/// required key; keys Forge does not use are kept in [`HfConfig::extra`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HfConfig {
    /// `architectures`, e.g. `["LlamaForCausalLM"]`.
    pub architectures: Option<Vec<String>>,
    /// `model_type`: `llama`, `qwen2` or `mistral`.
    pub model_type: Option<String>,
    /// `vocab_size`.
    pub vocab_size: Option<usize>,
    /// `hidden_size`.
    pub hidden_size: Option<usize>,
    /// `intermediate_size` (the MLP width).
    pub intermediate_size: Option<usize>,
    /// `num_hidden_layers`.
    pub num_hidden_layers: Option<usize>,
    /// `num_attention_heads`.
    pub num_attention_heads: Option<usize>,
    /// `num_key_value_heads` (GQA); defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// `head_dim`; defaults to `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// `max_position_embeddings`.
    pub max_position_embeddings: Option<usize>,
    /// `rms_norm_eps`; defaults to 1e-6.
    pub rms_norm_eps: Option<f64>,
    /// `rope_theta`; defaults to 10000.
    pub rope_theta: Option<f64>,
    /// `rope_scaling`: `null`, `{"rope_type": "linear", "factor": …}` or
    /// `{"rope_type": "llama3", …}`.
    pub rope_scaling: Option<serde_json::Value>,
    /// `tie_word_embeddings`; defaults to false.
    pub tie_word_embeddings: Option<bool>,
    /// `attention_bias` (llama, mistral): biases on q/k/v/o.
    pub attention_bias: Option<bool>,
    /// `mlp_bias` (llama): biases on gate/up/down.
    pub mlp_bias: Option<bool>,
    /// `hidden_act`; only `silu` is supported.
    pub hidden_act: Option<String>,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id`: one id or a list.
    pub eos_token_id: Option<TokenIds>,
    /// `torch_dtype`, informational.
    pub torch_dtype: Option<String>,
    /// Keys Forge does not read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl HfConfig {
    /// Reads a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses `config.json` text; `path` is used in error messages.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            if key.is_empty() || key == "." || inner.is_syntax() || inner.is_eof() {
                Error::Json {
                    path: path.to_path_buf(),
                    source: inner,
                }
            } else {
                Error::invalid(path, key, "of the wrong type", inner.to_string())
            }
        })
    }

    /// Resolves into a [`ModelConfig`] with every field filled, checking the
    /// values; `path` is used in error messages.
    pub fn resolve(&self, path: impl AsRef<Path>) -> Result<ModelConfig> {
        let path = path.as_ref();
        let missing = |key: &str| Error::MissingConfigKey {
            path: path.to_path_buf(),
            key: key.to_string(),
        };
        let architecture = match (&self.model_type, &self.architectures) {
            (Some(mt), _) => Architecture::from_model_type(mt).ok_or_else(|| {
                Error::invalid(path, "model_type", format!("{mt:?}"), SUPPORTED_MODEL_TYPES)
            })?,
            (None, Some(classes)) => {
                let class = classes.first().map(String::as_str).unwrap_or("");
                Architecture::from_hf_class(class).ok_or_else(|| {
                    Error::invalid(
                        path,
                        "architectures",
                        format!("{classes:?}"),
                        "LlamaForCausalLM, Qwen2ForCausalLM or MistralForCausalLM",
                    )
                })?
            }
            (None, None) => return Err(missing("model_type")),
        };
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(Error::invalid(
                path,
                "hidden_act",
                format!("{act:?}"),
                "\"silu\"",
            ));
        }
        let vocab_size = self.vocab_size.ok_or_else(|| missing("vocab_size"))?;
        let hidden_size = self.hidden_size.ok_or_else(|| missing("hidden_size"))?;
        let intermediate_size = self
            .intermediate_size
            .ok_or_else(|| missing("intermediate_size"))?;
        let num_layers = self
            .num_hidden_layers
            .ok_or_else(|| missing("num_hidden_layers"))?;
        let num_heads = self
            .num_attention_heads
            .ok_or_else(|| missing("num_attention_heads"))?;
        let rope_scaling = RopeScaling::from_json(self.rope_scaling.as_ref(), path)?;
        let mut config = ModelConfig::new(
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
        )
        .with_rope_scaling(rope_scaling);
        if let Some(kv) = self.num_key_value_heads {
            config.num_kv_heads = kv;
        }
        if let Some(hd) = self.head_dim {
            config.head_dim = hd;
        }
        if let Some(v) = self.max_position_embeddings {
            config.max_position_embeddings = v;
        }
        if let Some(v) = self.rms_norm_eps {
            config.rms_norm_eps = v as f32;
        }
        if let Some(v) = self.rope_theta {
            config.rope_theta = v as f32;
        }
        if let Some(v) = self.tie_word_embeddings {
            config.tie_word_embeddings = v;
        }
        if architecture != Architecture::Qwen2
            && let Some(v) = self.attention_bias
        {
            config.attention_qkv_bias = v;
            config.attention_out_bias = v;
        }
        if let Some(v) = self.mlp_bias {
            config.mlp_bias = v;
        }
        config.bos_token_id = self.bos_token_id;
        config.eos_token_ids = self
            .eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default();
        config.validate(path)?;
        Ok(config)
    }
}

const SUPPORTED_MODEL_TYPES: &str = "one of \"llama\", \"qwen2\", \"mistral\"";

/// Rotary-embedding frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScaling {
    /// Plain RoPE.
    #[default]
    None,
    /// Positions divided by `factor` (`rope_type: "linear"`).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3.1 frequency-dependent scaling (`rope_type: "llama3"`).
    Llama3 {
        /// `factor`.
        factor: f32,
        /// `low_freq_factor`.
        low_freq_factor: f32,
        /// `high_freq_factor`.
        high_freq_factor: f32,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f32,
    },
}

impl RopeScaling {
    fn from_json(value: Option<&serde_json::Value>, path: &Path) -> Result<Self> {
        let Some(value) = value else {
            return Ok(Self::None);
        };
        if value.is_null() {
            return Ok(Self::None);
        }
        let obj = value.as_object().ok_or_else(|| {
            Error::invalid(path, "rope_scaling", value.to_string(), "an object or null")
        })?;
        let kind = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::MissingConfigKey {
                path: path.to_path_buf(),
                key: "rope_scaling.rope_type".into(),
            })?;
        let num = |key: &str, default: Option<f32>| -> Result<f32> {
            match obj.get(key) {
                Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| {
                    Error::invalid(
                        path,
                        format!("rope_scaling.{key}"),
                        v.to_string(),
                        "a number",
                    )
                }),
                None => default.ok_or_else(|| Error::MissingConfigKey {
                    path: path.to_path_buf(),
                    key: format!("rope_scaling.{key}"),
                }),
            }
        };
        match kind {
            "default" => Ok(Self::None),
            "linear" => Ok(Self::Linear {
                factor: num("factor", None)?,
            }),
            "llama3" => Ok(Self::Llama3 {
                factor: num("factor", None)?,
                low_freq_factor: num("low_freq_factor", Some(1.0))?,
                high_freq_factor: num("high_freq_factor", Some(4.0))?,
                original_max_position_embeddings: num(
                    "original_max_position_embeddings",
                    Some(8192.0),
                )?,
            }),
            other => Err(Error::invalid(
                path,
                "rope_scaling.rope_type",
                format!("{other:?}"),
                "one of \"default\", \"linear\", \"llama3\"",
            )),
        }
    }

    fn to_json(self) -> serde_json::Value {
        match self {
            Self::None => serde_json::Value::Null,
            Self::Linear { factor } => serde_json::json!({"rope_type": "linear", "factor": factor}),
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
        }
    }
}

/// The runtime configuration of a decoder: every field filled.
///
/// Build one with [`ModelConfig::new`] and the `with_*` setters, or resolve a
/// [`HfConfig`]; a GGUF reader fills the same fields from `llama.*` /
/// `qwen2.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The decoder family.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (GQA); divides `num_heads`.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RoPE base θ.
    pub rope_theta: f32,
    /// RoPE frequency scaling.
    pub rope_scaling: RopeScaling,
    /// RMSNorm ε.
    pub rms_norm_eps: f32,
    /// Whether the output projection reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (always for qwen2).
    pub attention_qkv_bias: bool,
    /// Bias on the attention output projection.
    pub attention_out_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// Context length the model was trained for.
    pub max_position_embeddings: usize,
    /// Beginning-of-sequence token id, if the config names one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids named by the config.
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// A configuration with the architecture's defaults for every optional
    /// field (no GQA, θ = 10000, ε = 1e-6, untied embeddings, qwen2 q/k/v biases).
    #[must_use]
    pub fn new(
        architecture: Architecture,
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_layers: usize,
        num_heads: usize,
    ) -> Self {
        let qwen = architecture == Architecture::Qwen2;
        Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads: num_heads,
            head_dim: hidden_size.checked_div(num_heads).unwrap_or(0),
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: false,
            attention_qkv_bias: qwen,
            attention_out_bias: false,
            mlp_bias: false,
            max_position_embeddings: if qwen { 32_768 } else { 4_096 },
            bos_token_id: None,
            eos_token_ids: Vec::new(),
        }
    }

    /// Sets the number of key/value heads.
    #[must_use]
    pub fn with_num_kv_heads(mut self, n: usize) -> Self {
        self.num_kv_heads = n;
        self
    }

    /// Sets the head width.
    #[must_use]
    pub fn with_head_dim(mut self, d: usize) -> Self {
        self.head_dim = d;
        self
    }

    /// Sets the RoPE base θ.
    #[must_use]
    pub fn with_rope_theta(mut self, theta: f32) -> Self {
        self.rope_theta = theta;
        self
    }

    /// Sets the RoPE scaling.
    #[must_use]
    pub fn with_rope_scaling(mut self, scaling: RopeScaling) -> Self {
        self.rope_scaling = scaling;
        self
    }

    /// Sets the RMSNorm ε.
    #[must_use]
    pub fn with_rms_norm_eps(mut self, eps: f32) -> Self {
        self.rms_norm_eps = eps;
        self
    }

    /// Ties (or unties) the output projection to the embedding.
    #[must_use]
    pub fn with_tie_word_embeddings(mut self, tie: bool) -> Self {
        self.tie_word_embeddings = tie;
        self
    }

    /// Sets the q/k/v bias flag.
    #[must_use]
    pub fn with_attention_qkv_bias(mut self, bias: bool) -> Self {
        self.attention_qkv_bias = bias;
        self
    }

    /// Sets the bos and eos token ids.
    #[must_use]
    pub fn with_special_tokens(mut self, bos: Option<u32>, eos: impl Into<Vec<u32>>) -> Self {
        self.bos_token_id = bos;
        self.eos_token_ids = eos.into();
        self
    }

    /// Checks that the values describe a buildable model; `path` names the
    /// source in error messages.
    pub fn validate(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(Error::invalid(path, key, "0", "a positive integer"))
            } else {
                Ok(())
            }
        };
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_layers)?;
        positive("num_attention_heads", self.num_heads)?;
        positive("num_key_value_heads", self.num_kv_heads)?;
        positive("head_dim", self.head_dim)?;
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::invalid(
                path,
                "num_key_value_heads",
                self.num_kv_heads.to_string(),
                format!("a divisor of num_attention_heads ({})", self.num_heads),
            ));
        }
        if self.head_dim * self.num_heads != self.hidden_size
            && self.head_dim == self.hidden_size / self.num_heads
        {
            return Err(Error::invalid(
                path,
                "hidden_size",
                self.hidden_size.to_string(),
                format!(
                    "a multiple of num_attention_heads ({}) or an explicit head_dim",
                    self.num_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::invalid(
                path,
                "head_dim",
                self.head_dim.to_string(),
                "an even number (RoPE rotates pairs)",
            ));
        }
        if self.rms_norm_eps.is_nan() || self.rms_norm_eps <= 0.0 {
            return Err(Error::invalid(
                path,
                "rms_norm_eps",
                self.rms_norm_eps.to_string(),
                "a positive number",
            ));
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return Err(Error::invalid(
                path,
                "rope_theta",
                self.rope_theta.to_string(),
                "a positive number",
            ));
        }
        let too_big = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_heads * self.head_dim),
        ];
        for (key, v) in too_big {
            if i32::try_from(v).is_err() {
                return Err(Error::invalid(path, key, v.to_string(), "below 2^31"));
            }
        }
        Ok(())
    }

    /// The `config.json` a Hugging Face loader (transformers, mlx-lm) reads
    /// back into this configuration.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.to_json(),
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        if let Some(obj) = v.as_object_mut() {
            if self.architecture != Architecture::Qwen2 {
                obj.insert("attention_bias".into(), self.attention_qkv_bias.into());
                obj.insert("mlp_bias".into(), self.mlp_bias.into());
            }
            if let Some(bos) = self.bos_token_id {
                obj.insert("bos_token_id".into(), bos.into());
            }
            match self.eos_token_ids.as_slice() {
                [] => {}
                [one] => {
                    obj.insert("eos_token_id".into(), (*one).into());
                }
                many => {
                    obj.insert("eos_token_id".into(), many.to_vec().into());
                }
            }
        }
        v
    }
}

/// Reads and resolves `config.json` in one step.
pub(crate) fn read_model_config(path: &Path) -> Result<ModelConfig> {
    HfConfig::from_file(path)?.resolve(path)
}

/// The path used in messages for configurations built in memory.
pub(crate) fn memory_path() -> PathBuf {
    PathBuf::from("<memory>")
}
