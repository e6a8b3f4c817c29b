//! GGUF checkpoints: the runtime [`ModelConfig`] from GGUF metadata and a
//! [`WeightSource`] that yields the tensors under their Hugging Face names.
//!
//! Per tensor: the GGUF name is mapped with forge-gguf's
//! [`gguf_to_hf`](forge_gguf::gguf_to_hf); the data are dequantized to `f32`
//! with forge-quant (bit-exact with gguf-py), the GGUF shape (fastest axis
//! first) is reversed into the Hugging Face shape (the bytes are already the
//! row-major matrix), the q/k rows that llama.cpp's converter permuted for
//! RoPE are un-permuted (`llama`, `mistral`; `qwen2` is not permuted), and the
//! array is cast to the requested dtype. A file without `output.weight` has
//! tied embeddings.
//!
//! Metadata keys read (`{arch}` = `general.architecture`):
//!
//! | key | config field | required |
//! |---|---|---|
//! | `general.architecture` | architecture (`llama`, `qwen2`, `mistral`) | yes |
//! | `{arch}.block_count` | `num_layers` | yes |
//! | `{arch}.embedding_length` | `hidden_size` | yes |
//! | `{arch}.feed_forward_length` | `intermediate_size` | yes |
//! | `{arch}.attention.head_count` | `num_heads` | yes |
//! | `{arch}.attention.head_count_kv` | `num_kv_heads` | no (= heads) |
//! | `{arch}.attention.key_length` | `head_dim` | no (= hidden / heads) |
//! | `{arch}.attention.layer_norm_rms_epsilon` | `rms_norm_eps` | yes |
//! | `{arch}.rope.freq_base` | `rope_theta` | no (10000) |
//! | `{arch}.rope.dimension_count` | must equal `head_dim` | no |
//! | `{arch}.rope.scaling.type`, `.factor` | `rope_scaling` (`none`, `linear`) | no |
//! | `{arch}.context_length` | `max_position_embeddings` | no |
//! | `tokenizer.ggml.tokens` (length), else `{arch}.vocab_size` | `vocab_size` | one of them |
//! | `tokenizer.ggml.bos_token_id`, `.eos_token_id` | special tokens | no |

use std::path::{Path, PathBuf};

use forge_gguf::{GgmlType, GgufFile, NameArch, Value};
use mlx_rs::{Array, Dtype};

use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::error::{Error, Result};
use crate::weights::{NamedTensor, WeightSource};

/// A GGUF file as a [`WeightSource`].
#[derive(Debug)]
pub struct GgufSource {
    path: PathBuf,
    file: GgufFile,
    config: ModelConfig,
}

impl GgufSource {
    /// Opens (memory-maps) `path` and reads its model configuration.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = GgufFile::open(path)?;
        Self::from_file(file, path)
    }

    /// Wraps an already opened file; `path` is used in messages.
    pub fn from_file(file: GgufFile, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let config = config_from_gguf(&file, &path)?;
        Ok(Self { path, file, config })
    }

    /// The runtime configuration from the metadata.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The parsed file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn name_arch(a: Architecture) -> NameArch {
    match a {
        Architecture::Llama => NameArch::Llama,
        Architecture::Qwen2 => NameArch::Qwen2,
        Architecture::Mistral => NameArch::Mistral,
    }
}

/// Reads metadata values with errors naming the key.
struct Meta<'a> {
    file: &'a GgufFile,
    path: &'a Path,
}

impl Meta<'_> {
    fn missing(&self, key: &str) -> Error {
        Error::MissingConfigKey {
            path: self.path.to_path_buf(),
            key: key.to_string(),
        }
    }

    fn uint(&self, key: &str) -> Result<Option<usize>> {
        match self.file.value(key) {
            None => Ok(None),
            Some(v) => v
                .to_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::invalid(self.path, key, describe(v), "a single non-negative integer")
                }),
        }
    }

    fn req_uint(&self, key: &str) -> Result<usize> {
        self.uint(key)?.ok_or_else(|| self.missing(key))
    }

    fn float(&self, key: &str) -> Result<Option<f32>> {
        match self.file.value(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x)),
            Some(Value::F64(x)) => Ok(Some(*x as f32)),
            Some(v) => Err(Error::invalid(self.path, key, describe(v), "a float")),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.file.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(Error::invalid(self.path, key, describe(v), "a string")),
        }
    }
}

fn describe(v: &Value) -> String {
    let text = format!("{v:?}");
    let short: String = text.chars().take(60).collect();
    format!("{} ({short})", v.type_name())
}

/// Builds the runtime configuration of a GGUF model from its metadata (see the
/// module table); `path` names the file in errors.
pub fn config_from_gguf(file: &GgufFile, path: &Path) -> Result<ModelConfig> {
    config_impl(file, path, false)
}

/// [`config_from_gguf`] for the CPU engine, which applies Llama 3's
/// `rope_freqs.weight` factors itself.
pub(crate) fn config_from_gguf_allowing_rope_freqs(
    file: &GgufFile,
    path: &Path,
) -> Result<ModelConfig> {
    config_impl(file, path, true)
}

fn config_impl(file: &GgufFile, path: &Path, allow_rope_freqs: bool) -> Result<ModelConfig> {
    let m = Meta { file, path };
    let arch_key = "general.architecture";
    let arch_name = m.string(arch_key)?.ok_or_else(|| m.missing(arch_key))?;
    let architecture = Architecture::from_model_type(arch_name).ok_or_else(|| {
        Error::invalid(
            path,
            arch_key,
            format!("{arch_name:?}"),
            "one of \"llama\", \"qwen2\", \"mistral\"",
        )
    })?;
    let k = |suffix: &str| format!("{arch_name}.{suffix}");
    let layers = m.req_uint(&k("block_count"))?;
    let hidden = m.req_uint(&k("embedding_length"))?;
    let ffn = m.req_uint(&k("feed_forward_length"))?;
    let heads = m.req_uint(&k("attention.head_count"))?;
    let vocab_key = "tokenizer.ggml.tokens";
    let vocab = match file.value(vocab_key) {
        Some(Value::Array(a)) => a.len(),
        Some(v) => {
            return Err(Error::invalid(
                path,
                vocab_key,
                describe(v),
                "an array of strings",
            ));
        }
        None => m
            .uint(&k("vocab_size"))?
            .ok_or_else(|| m.missing(&format!("{vocab_key} (or {arch_name}.vocab_size)")))?,
    };
    let mut config = ModelConfig::new(architecture, vocab, hidden, ffn, layers, heads);
    if let Some(kv) = m.uint(&k("attention.head_count_kv"))? {
        config.num_kv_heads = kv;
    }
    if let Some(d) = m.uint(&k("attention.key_length"))? {
        config.head_dim = d;
    }
    let eps_key = k("attention.layer_norm_rms_epsilon");
    config.rms_norm_eps = m.float(&eps_key)?.ok_or_else(|| m.missing(&eps_key))?;
    if let Some(theta) = m.float(&k("rope.freq_base"))? {
        config.rope_theta = theta;
    }
    if let Some(ctx) = m.uint(&k("context_length"))? {
        config.max_position_embeddings = ctx;
    }
    let rope_dims_key = k("rope.dimension_count");
    if let Some(d) = m.uint(&rope_dims_key)?
        && d != config.head_dim
    {
        return Err(Error::invalid(
            path,
            rope_dims_key,
            d.to_string(),
            format!(
                "the head width {} (partial rotary embeddings are not supported)",
                config.head_dim
            ),
        ));
    }
    let scaling_key = k("rope.scaling.type");
    config.rope_scaling = match m.string(&scaling_key)? {
        None | Some("none") => RopeScaling::None,
        Some("linear") => {
            let factor_key = k("rope.scaling.factor");
            let factor = m
                .float(&factor_key)?
                .ok_or_else(|| m.missing(&factor_key))?;
            if factor == 1.0 || factor == 0.0 {
                RopeScaling::None
            } else {
                RopeScaling::Linear { factor }
            }
        }
        Some(other) => {
            return Err(Error::invalid(
                path,
                scaling_key,
                format!("{other:?}"),
                "\"none\" or \"linear\"",
            ));
        }
    };
    if !allow_rope_freqs && file.tensor("rope_freqs.weight").is_some() {
        return Err(Error::Unsupported(format!(
            "{}: tensor `rope_freqs.weight` (Llama 3 frequency-dependent RoPE scaling stored \
             as factors) is not supported by the MLX model yet (the CPU engine, `CpuModel`, applies it)",
            path.display()
        )));
    }
    config.tie_word_embeddings = file.tensor("output.weight").is_none();
    if architecture != Architecture::Qwen2 {
        config.attention_qkv_bias = file.tensor("blk.0.attn_q.bias").is_some();
    }
    config.attention_out_bias = file.tensor("blk.0.attn_output.bias").is_some();
    config.mlp_bias = file.tensor("blk.0.ffn_up.bias").is_some();
    config.bos_token_id = m
        .uint("tokenizer.ggml.bos_token_id")?
        .and_then(|x| u32::try_from(x).ok());
    config.eos_token_ids = m
        .uint("tokenizer.ggml.eos_token_id")?
        .and_then(|x| u32::try_from(x).ok())
        .into_iter()
        .collect();
    config.validate(path)?;
    Ok(config)
}

impl WeightSource for GgufSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn for_each_tensor(
        &self,
        dtype: Dtype,
        visit: &mut dyn FnMut(NamedTensor) -> Result<()>,
    ) -> Result<()> {
        let arch = name_arch(self.config.architecture);
        let permuted = forge_gguf::qk_permuted(arch);
        for t in self.file.tensors() {
            let gguf_name = t.name();
            let name = forge_gguf::gguf_to_hf(arch, gguf_name).map_err(|e| Error::Gguf {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
            let tensor_err = |message: String| Error::GgufTensor {
                path: self.path.clone(),
                tensor: gguf_name.to_string(),
                message,
            };
            let ty = t.ggml_type();
            if !forge_quant::is_supported(ty) {
                return Err(tensor_err(format!(
                    "type {ty:?} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, \
                     Q5_1, Q8_0, Q2_K..Q6_K)"
                )));
            }
            let n = usize::try_from(t.info().n_elements())
                .map_err(|_| tensor_err("too many elements".into()))?;
            let mut values = if ty == GgmlType::F32 {
                t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                forge_quant::dequantize(ty, t.data(), n).map_err(|e| tensor_err(e.to_string()))?
            };
            let shape: Vec<i32> = t
                .shape()
                .iter()
                .rev()
                .map(|&d| i32::try_from(d))
                .collect::<Result<_, _>>()
                .map_err(|_| tensor_err("a dimension of 2^31 or more".into()))?;
            if permuted && let Some(is_q) = forge_gguf::gguf_qk(gguf_name) {
                let heads = if is_q {
                    self.config.num_heads
                } else {
                    self.config.num_kv_heads
                };
                let rows = shape.first().copied().unwrap_or(1) as usize;
                let cols = shape.get(1).copied().unwrap_or(1) as usize;
                values = forge_gguf::unpermute_qk_rows(&values, rows, cols, heads)
                    .map_err(|e| tensor_err(e.to_string()))?;
            }
            let array = Array::from_slice(&values, &shape);
            drop(values);
            let array = if dtype == Dtype::Float32 {
                array
            } else {
                array.as_dtype(dtype)?
            };
            visit(NamedTensor {
                name,
                array,
                origin: self.path.clone(),
            })?;
        }
        Ok(())
    }
}
