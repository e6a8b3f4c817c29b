//! The neutral model description of an export and its `general.*` /
//! `<arch>.*` metadata.
//!
//! Keys and their order follow what llama.cpp's `convert_hf_to_gguf.py`
//! writes for `LlamaModel` / `Qwen2Model` (the SmolLM2 GGUF of the peers is
//! such a file), plus `general.quantization_version` as `llama-quantize`
//! adds it.

use crate::file::GgufFile;
use crate::metadata::Metadata;
use crate::names::NameArch;
use crate::value::Value;
use crate::{Error, Result};

use super::tokenizer::TokenizerSpec;

/// RoPE frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScalingSpec {
    /// Plain RoPE.
    #[default]
    None,
    /// Positions divided by `factor` (`rope.scaling.type = linear`).
    Linear {
        /// The divisor.
        factor: f32,
    },
    /// Llama 3.1 scaling: written as the `rope_freqs.weight` tensor of
    /// per-frequency divisors, as llama.cpp's converter does.
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

/// The hyper-parameters llama.cpp needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HyperParams {
    /// `context_length`.
    pub context_length: u32,
    /// `embedding_length` (hidden size).
    pub embedding_length: u32,
    /// `feed_forward_length`.
    pub feed_forward_length: u32,
    /// `block_count`.
    pub block_count: u32,
    /// `attention.head_count`.
    pub head_count: u32,
    /// `attention.head_count_kv`.
    pub head_count_kv: u32,
    /// Width of one head (`attention.key_length` when it is not
    /// `embedding_length / head_count`).
    pub head_dim: u32,
    /// `attention.layer_norm_rms_epsilon`.
    pub rms_norm_eps: f32,
    /// `rope.freq_base`.
    pub rope_freq_base: f32,
    /// RoPE scaling.
    pub rope_scaling: RopeScalingSpec,
    /// Rows of the token embedding.
    pub vocab_size: u32,
}

/// Everything about a model an export writes besides its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The decoder family.
    pub arch: NameArch,
    /// Hyper-parameters.
    pub hparams: HyperParams,
    /// Whether the output projection is the token embedding (no
    /// `output.weight` is written).
    pub tied_embeddings: bool,
    /// The tokenizer.
    pub tokenizer: TokenizerSpec,
    /// Descriptive `general.*` keys (`general.name`, `general.license`, …)
    /// in order; the export writes `general.architecture`, `general.type`,
    /// `general.file_type` and `general.quantization_version` itself.
    pub general: Vec<(String, Value)>,
}

/// Keys the export computes itself and never copies from a source.
const OWN_GENERAL: &[&str] = &[
    "general.architecture",
    "general.type",
    "general.file_type",
    "general.quantization_version",
    "general.alignment",
];

impl ModelSpec {
    /// A description with a `general.name` and nothing else descriptive.
    pub fn new(
        arch: NameArch,
        hparams: HyperParams,
        tied_embeddings: bool,
        tokenizer: TokenizerSpec,
        name: impl Into<String>,
    ) -> Self {
        Self {
            arch,
            hparams,
            tied_embeddings,
            tokenizer,
            general: vec![("general.name".to_string(), Value::String(name.into()))],
        }
    }

    /// The description stored in a GGUF model file: hyper-parameters,
    /// tokenizer and descriptive `general.*` keys. Tied embeddings when the
    /// file has no `output.weight`.
    pub fn from_gguf<D: AsRef<[u8]>>(file: &GgufFile<D>) -> Result<Self> {
        let arch_name: &str = file.get("general.architecture")?;
        let arch = NameArch::parse(arch_name).map_err(|e| Error::Export(e.to_string()))?;
        let k = |s: &str| format!("{arch_name}.{s}");
        let u32_key = |s: &str| -> Result<u32> { file.get::<u32>(&k(s)) };
        let embedding_length = u32_key("embedding_length")?;
        let head_count = u32_key("attention.head_count")?;
        let head_count_kv = file
            .get_opt::<u32>(&k("attention.head_count_kv"))?
            .unwrap_or(head_count);
        let head_dim = match file.get_opt::<u32>(&k("attention.key_length"))? {
            Some(d) => d,
            None => embedding_length
                .checked_div(head_count)
                .ok_or_else(|| Error::Export(format!("`{}` is 0", k("attention.head_count"))))?,
        };
        let tokenizer = TokenizerSpec::from_gguf(file)?;
        let vocab_size = match file.get_opt::<u32>(&k("vocab_size"))? {
            Some(v) => v,
            None => tokenizer.tokens.len() as u32,
        };
        let rope_scaling = match file.get_opt::<&str>(&k("rope.scaling.type"))? {
            None | Some("none") => RopeScalingSpec::None,
            Some("linear") => RopeScalingSpec::Linear {
                factor: file.get(&k("rope.scaling.factor"))?,
            },
            Some(other) => {
                return Err(Error::Export(format!(
                    "`{}` is {other:?}; export handles none and linear",
                    k("rope.scaling.type")
                )));
            }
        };
        let hparams = HyperParams {
            context_length: file.get_opt(&k("context_length"))?.unwrap_or(4096),
            embedding_length,
            feed_forward_length: u32_key("feed_forward_length")?,
            block_count: u32_key("block_count")?,
            head_count,
            head_count_kv,
            head_dim,
            rms_norm_eps: file.get(&k("attention.layer_norm_rms_epsilon"))?,
            rope_freq_base: file.get_opt(&k("rope.freq_base"))?.unwrap_or(10_000.0),
            rope_scaling,
            vocab_size,
        };
        let general = file
            .metadata()
            .iter()
            .filter(|(key, _)| key.starts_with("general.") && !OWN_GENERAL.contains(key))
            .map(|(key, v)| (key.to_string(), v.clone()))
            .collect();
        Ok(Self {
            arch,
            hparams,
            tied_embeddings: file.tensor("output.weight").is_none(),
            tokenizer,
            general,
        })
    }

    /// Checks the hyper-parameters against each other and the tokenizer.
    pub fn check(&self) -> Result<()> {
        let h = &self.hparams;
        let bad = |m: String| Err(Error::Export(m));
        if h.block_count == 0 || h.embedding_length == 0 || h.head_count == 0 || h.head_dim == 0 {
            return bad(format!("hyper-parameters with a zero size: {h:?}"));
        }
        if h.head_count_kv == 0 || !h.head_count.is_multiple_of(h.head_count_kv) {
            return bad(format!(
                "{} kv heads do not divide {} heads",
                h.head_count_kv, h.head_count
            ));
        }
        if !h.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head width {} is odd; RoPE needs pairs",
                h.head_dim
            ));
        }
        if self.tokenizer.tokens.len() as u32 != h.vocab_size {
            return bad(format!(
                "the tokenizer has {} tokens but the embedding {} rows",
                self.tokenizer.tokens.len(),
                h.vocab_size
            ));
        }
        self.tokenizer.check()
    }

    /// The metadata of the exported file, in the converter's order.
    pub fn metadata(&self, file_type: u32) -> Metadata {
        let a = self.arch.as_str();
        let h = &self.hparams;
        let mut m = Metadata::new();
        m.insert("general.architecture", a);
        m.insert("general.type", "model");
        for (k, v) in &self.general {
            m.insert(k.clone(), v.clone());
        }
        m.insert(format!("{a}.block_count"), h.block_count);
        m.insert(format!("{a}.context_length"), h.context_length);
        m.insert(format!("{a}.embedding_length"), h.embedding_length);
        m.insert(format!("{a}.feed_forward_length"), h.feed_forward_length);
        m.insert(format!("{a}.attention.head_count"), h.head_count);
        m.insert(format!("{a}.attention.head_count_kv"), h.head_count_kv);
        m.insert(format!("{a}.rope.freq_base"), h.rope_freq_base);
        m.insert(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            h.rms_norm_eps,
        );
        if h.head_dim * h.head_count != h.embedding_length {
            m.insert(format!("{a}.attention.key_length"), h.head_dim);
            m.insert(format!("{a}.attention.value_length"), h.head_dim);
        }
        m.insert("general.file_type", file_type);
        if matches!(self.arch, NameArch::Llama | NameArch::Mistral) {
            m.insert(format!("{a}.vocab_size"), h.vocab_size);
            m.insert(format!("{a}.rope.dimension_count"), h.head_dim);
        }
        if let RopeScalingSpec::Linear { factor } = h.rope_scaling {
            m.insert(format!("{a}.rope.scaling.type"), "linear");
            m.insert(format!("{a}.rope.scaling.factor"), factor);
        }
        self.tokenizer.write_metadata(&mut m);
        m.insert("general.quantization_version", QUANTIZATION_VERSION);
        m
    }

    /// Llama 3.1's `rope_freqs.weight` (one divisor per frequency), when the
    /// scaling asks for it.
    pub fn rope_freqs(&self) -> Option<Vec<f32>> {
        let RopeScalingSpec::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } = self.hparams.rope_scaling
        else {
            return None;
        };
        let d = self.hparams.head_dim as usize;
        let base = self.hparams.rope_freq_base as f64;
        let (factor, lo, hi, old) = (
            factor as f64,
            low_freq_factor as f64,
            high_freq_factor as f64,
            old as f64,
        );
        let low_wavelen = old / lo;
        let high_wavelen = old / hi;
        Some(
            (0..d / 2)
                .map(|i| {
                    let freq = 1.0 / base.powf((2 * i) as f64 / d as f64);
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let r = if wavelen < high_wavelen {
                        1.0
                    } else if wavelen > low_wavelen {
                        factor
                    } else {
                        let smooth = (old / wavelen - lo) / (hi - lo);
                        1.0 / ((1.0 - smooth) / factor + smooth)
                    };
                    r as f32
                })
                .collect(),
        )
    }
}

/// `general.quantization_version` (ggml's `GGML_QNT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;
