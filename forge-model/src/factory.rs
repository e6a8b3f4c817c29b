//! A tiny random model factory for tests and examples.
//!
//! [`random_model`] fills any [`ModelConfig`] with values drawn from a
//! SplitMix64 stream seeded by `(seed, parameter name)`, so the same seed gives
//! bit-identical weights on every run and platform, independent of MLX's RNG
//! and of parameter order. [`write_hf_dir`] saves a model as a Hugging Face
//! folder that Forge, transformers and mlx-lm all load.

use std::path::Path;

use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;

use crate::config::{Architecture, ModelConfig};
use crate::decoder::Model;
use crate::error::{Error, Result};
use crate::tokenizer::{CHATML_TEMPLATE, byte_level_tokenizer_json};
use crate::util::{SplitMix64, fnv1a, write_atomic};
use crate::weights::write_safetensors;

/// Vocabulary of the tiny byte-level tokenizer [`write_hf_dir`] writes:
/// three special tokens (`<|endoftext|>` = 0, `<|im_start|>` = 1,
/// `<|im_end|>` = 2) and the 256 bytes.
pub const TINY_TOKENIZER_VOCAB: usize = 259;

/// A small configuration of `architecture` for tests: vocabulary 272, width 64,
/// MLP 128, 2 layers, 4 query heads over 2 key/value heads, eos id 0, and the
/// architecture's bias flags.
pub fn tiny_config(architecture: Architecture) -> ModelConfig {
    ModelConfig::new(architecture, 272, 64, 128, 2, 4)
        .with_num_kv_heads(2)
        .with_rms_norm_eps(1e-5)
        .with_special_tokens(None, vec![0])
}

/// A model of `config` with seeded random weights (f32).
///
/// Matrices are uniform in `±√(3/fan_in)` (unit-variance outputs), the
/// embedding uniform in `±1`, norm gains `1 ± 0.1`, biases `±0.1`.
pub fn random_model(config: ModelConfig, seed: u64) -> Result<Model> {
    let mut model = Model::new(config)?;
    let mut params = model.parameters_mut().flatten();
    for (name, param) in params.iter_mut() {
        let shape = param.shape().to_vec();
        let n: usize = shape.iter().map(|&d| d as usize).product();
        let mut rng = SplitMix64::new(seed ^ fnv1a(name));
        let (center, half_width) = if name.ends_with("norm.weight") {
            (1.0, 0.1)
        } else if name.ends_with(".bias") {
            (0.0, 0.1)
        } else if name.contains("embed_tokens") {
            (0.0, 1.0)
        } else {
            let fan_in = shape.last().copied().unwrap_or(1).max(1) as f64;
            (0.0, (3.0 / fan_in).sqrt())
        };
        let values: Vec<f32> = (0..n)
            .map(|_| (center + half_width * (2.0 * rng.next_f64() - 1.0)) as f32)
            .collect();
        **param = Array::from_slice(&values, &shape);
    }
    drop(params);
    Ok(model)
}

/// Writes `model` as a Hugging Face folder: `config.json`,
/// `model.safetensors` (the parameters in their dtype),
/// `generation_config.json`, and a byte-level `tokenizer.json` with
/// `tokenizer_config.json` (ChatML template, eos `<|endoftext|>`).
///
/// The tokenizer covers ids `0..259`; the model's vocabulary must be at least
/// [`TINY_TOKENIZER_VOCAB`].
pub fn write_hf_dir(model: &Model, dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    let config = model.config();
    if config.vocab_size < TINY_TOKENIZER_VOCAB {
        return Err(Error::InvalidOption {
            name: "vocab_size",
            found: config.vocab_size.to_string(),
            expected: "at least 259 (the tiny tokenizer's vocabulary)",
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    write_atomic(&dir.join("config.json"), &json(&config.to_hf_json()))?;
    let mut tensors: Vec<(String, Array)> = model
        .parameters()
        .flatten()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    let mut gen_config = serde_json::json!({ "eos_token_id": config.eos_token_ids });
    if let (Some(bos), Some(obj)) = (config.bos_token_id, gen_config.as_object_mut()) {
        obj.insert("bos_token_id".into(), bos.into());
    }
    write_atomic(&dir.join("generation_config.json"), &json(&gen_config))?;
    write_atomic(
        &dir.join("tokenizer.json"),
        &json(&byte_level_tokenizer_json()),
    )?;
    let tok_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": config.max_position_embeddings,
        "chat_template": CHATML_TEMPLATE,
    });
    write_atomic(&dir.join("tokenizer_config.json"), &json(&tok_config))?;
    Ok(())
}
