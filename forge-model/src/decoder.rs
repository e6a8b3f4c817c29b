//! Llama-family decoder-only transformers: `llama`, `qwen2`, `mistral`.
//!
//! - LLaMA: Touvron et al. 2023, *LLaMA: Open and Efficient Foundation
//!   Language Models* (arXiv:2302.13971), and *Llama 2* (arXiv:2307.09288):
//!   pre-normalisation with RMSNorm, SwiGLU MLP, rotary embeddings.
//! - RMSNorm: Zhang & Sennrich 2019 (arXiv:1910.07467),
//!   `y = x / sqrt(mean(x²) + ε) ⊙ g`.
//! - SwiGLU: Shazeer 2020, *GLU Variants Improve Transformer*
//!   (arXiv:2002.05202), `MLP(x) = W_down (silu(W_gate x) ⊙ W_up x)` with
//!   `silu(z) = z·σ(z)`.
//! - RoPE: Su et al. 2021, *RoFormer* (arXiv:2104.09864); see `rope.rs`.
//! - Grouped-query attention: Ainslie et al. 2023, *GQA: Training Generalized
//!   Multi-Query Transformer Models from Multi-Head Checkpoints*
//!   (arXiv:2305.13245): `n_heads` query heads share `n_kv_heads` key/value
//!   heads, head `h` reading kv head `h / (n_heads / n_kv_heads)`.
//! - Qwen2: Yang et al. 2024, *Qwen2 Technical Report* (arXiv:2407.10671):
//!   the same block with biases on the q/k/v projections.
//! - Mistral: Jiang et al. 2023, *Mistral 7B* (arXiv:2310.06825): the same
//!   block with GQA; its sliding window is not applied (full causal attention,
//!   as mlx-lm does), which is exact for contexts within the window.
//!
//! One layer, with `h` the residual stream:
//!
//! ```text
//! a = softmax(RoPE(q) RoPE(k)ᵀ / √d_head + M_causal) v,  (q,k,v) = RMSNorm(h) (W_q, W_k, W_v) + b
//! h = h + W_o a
//! h = h + W_down (silu(W_gate RMSNorm(h)) ⊙ W_up RMSNorm(h))
//! ```
//!
//! and `logits = RMSNorm(h_L) W_headᵀ` with `W_head = W_embed` when the
//! embeddings are tied.
//!
//! Field names are the checkpoint's tensor names: the flattened parameters of
//! [`Model`] are exactly `model.embed_tokens.weight`,
//! `model.layers.{i}.self_attn.{q,k,v,o}_proj.{weight,bias}`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `model.layers.{i}.{input,post_attention}_layernorm.weight`,
//! `model.norm.weight` and (untied) `lm_head.weight`.

use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, ModuleParameters as _, Param};
use mlx_rs::nn::{Embedding, Linear, RmsNorm};
use mlx_rs::ops::indexing::IndexOp;

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::rope::Rope;

/// A linear layer with zero (lazy, never materialised) parameters; the loader
/// or the random factory fills them.
fn linear(input: usize, output: usize, bias: bool) -> Result<Linear> {
    let (i, o) = (input as i32, output as i32);
    Ok(Linear {
        weight: Param::new(mlx_rs::ops::zeros::<f32>(&[o, i])?),
        bias: Param::new(if bias {
            Some(mlx_rs::ops::zeros::<f32>(&[o])?)
        } else {
            None
        }),
    })
}

fn rms_norm(dim: usize, eps: f32) -> Result<RmsNorm> {
    Ok(RmsNorm {
        weight: Param::new(mlx_rs::ops::ones::<f32>(&[dim as i32])?),
        eps,
    })
}

/// Multi-head attention with grouped key/value heads and rotary positions.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Attention {
    /// Query projection `[n_heads·d_head, hidden]`.
    #[param]
    pub q_proj: Linear,
    /// Key projection `[n_kv_heads·d_head, hidden]`.
    #[param]
    pub k_proj: Linear,
    /// Value projection `[n_kv_heads·d_head, hidden]`.
    #[param]
    pub v_proj: Linear,
    /// Output projection `[hidden, n_heads·d_head]`.
    #[param]
    pub o_proj: Linear,
    rope: Rope,
    num_heads: i32,
    num_kv_heads: i32,
    head_dim: i32,
    scale: f32,
}

impl Attention {
    fn new(c: &ModelConfig) -> Result<Self> {
        let q_dim = c.num_heads * c.head_dim;
        let kv_dim = c.num_kv_heads * c.head_dim;
        Ok(Self {
            q_proj: linear(c.hidden_size, q_dim, c.attention_qkv_bias)?,
            k_proj: linear(c.hidden_size, kv_dim, c.attention_qkv_bias)?,
            v_proj: linear(c.hidden_size, kv_dim, c.attention_qkv_bias)?,
            o_proj: linear(q_dim, c.hidden_size, c.attention_out_bias)?,
            rope: Rope::new(c.head_dim, c.rope_theta, c.rope_scaling),
            num_heads: c.num_heads as i32,
            num_kv_heads: c.num_kv_heads as i32,
            head_dim: c.head_dim as i32,
            scale: (c.head_dim as f32).powf(-0.5),
        })
    }

    fn forward(
        &mut self,
        x: &Array,
        layer: usize,
        offset: i32,
        cache: Option<&mut KvCache>,
    ) -> Result<Array> {
        let (b, l) = (x.dim(0), x.dim(1));
        let split = |a: Array, heads: i32| -> Result<Array> {
            Ok(a.reshape(&[b, l, heads, self.head_dim])?
                .transpose_axes(&[0, 2, 1, 3])?)
        };
        let q = split(self.q_proj.forward(x)?, self.num_heads)?;
        let k = split(self.k_proj.forward(x)?, self.num_kv_heads)?;
        let v = split(self.v_proj.forward(x)?, self.num_kv_heads)?;
        let q = self.rope.apply(&q, offset)?;
        let k = self.rope.apply(&k, offset)?;
        let (k, v) = match cache {
            Some(cache) => cache.update(layer, k, v)?,
            None => (k, v),
        };
        let mask = (l > 1).then_some(ScaledDotProductAttentionMask::Causal);
        let out = mlx_rs::fast::scaled_dot_product_attention(&q, &k, &v, self.scale, mask, None)?;
        let out =
            out.transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[b, l, self.num_heads * self.head_dim])?;
        Ok(self.o_proj.forward(&out)?)
    }
}

/// The SwiGLU feed-forward block.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Mlp {
    /// Gate projection `[intermediate, hidden]`.
    #[param]
    pub gate_proj: Linear,
    /// Up projection `[intermediate, hidden]`.
    #[param]
    pub up_proj: Linear,
    /// Down projection `[hidden, intermediate]`.
    #[param]
    pub down_proj: Linear,
}

impl Mlp {
    fn new(c: &ModelConfig) -> Result<Self> {
        Ok(Self {
            gate_proj: linear(c.hidden_size, c.intermediate_size, c.mlp_bias)?,
            up_proj: linear(c.hidden_size, c.intermediate_size, c.mlp_bias)?,
            down_proj: linear(c.intermediate_size, c.hidden_size, c.mlp_bias)?,
        })
    }

    fn forward(&mut self, x: &Array) -> Result<Array> {
        let gate = self.gate_proj.forward(x)?;
        let silu = gate.multiply(mlx_rs::ops::sigmoid(&gate)?)?;
        let up = self.up_proj.forward(x)?;
        Ok(self.down_proj.forward(&silu.multiply(&up)?)?)
    }
}

/// One pre-norm transformer block.
#[derive(Debug, Clone, ModuleParameters)]
pub struct DecoderLayer {
    /// Attention.
    #[param]
    pub self_attn: Attention,
    /// Feed-forward block.
    #[param]
    pub mlp: Mlp,
    /// RMSNorm before attention.
    #[param]
    pub input_layernorm: RmsNorm,
    /// RMSNorm before the MLP.
    #[param]
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(c: &ModelConfig) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(c)?,
            mlp: Mlp::new(c)?,
            input_layernorm: rms_norm(c.hidden_size, c.rms_norm_eps)?,
            post_attention_layernorm: rms_norm(c.hidden_size, c.rms_norm_eps)?,
        })
    }

    fn forward(
        &mut self,
        h: &Array,
        layer: usize,
        offset: i32,
        cache: Option<&mut KvCache>,
    ) -> Result<Array> {
        let normed = self.input_layernorm.forward(h)?;
        let h = h.add(self.self_attn.forward(&normed, layer, offset, cache)?)?;
        let normed = self.post_attention_layernorm.forward(&h)?;
        Ok(h.add(self.mlp.forward(&normed)?)?)
    }
}

/// The decoder stack (`model.*` in a checkpoint).
#[derive(Debug, Clone, ModuleParameters)]
pub struct Decoder {
    /// Token embedding `[vocab, hidden]`.
    #[param]
    pub embed_tokens: Embedding,
    /// The layers.
    #[param]
    pub layers: Vec<DecoderLayer>,
    /// Final RMSNorm.
    #[param]
    pub norm: RmsNorm,
}

/// A causal language model: decoder stack plus output projection.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Model {
    /// The decoder stack.
    #[param]
    pub model: Decoder,
    /// Output projection `[vocab, hidden]`; `None` when tied to the embedding.
    #[param]
    pub lm_head: Option<Linear>,
    config: ModelConfig,
}

impl Model {
    /// A model with the configuration's shapes and placeholder parameters
    /// (zeros, norms at one). MLX arrays are lazy, so the placeholders cost
    /// nothing until evaluated; load weights or use the random factory.
    pub fn new(config: ModelConfig) -> Result<Self> {
        config.validate(crate::config::memory_path())?;
        let layers = (0..config.num_layers)
            .map(|_| DecoderLayer::new(&config))
            .collect::<Result<Vec<_>>>()?;
        let embed = Embedding {
            weight: Param::new(mlx_rs::ops::zeros::<f32>(&[
                config.vocab_size as i32,
                config.hidden_size as i32,
            ])?),
        };
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(linear(config.hidden_size, config.vocab_size, false)?)
        };
        Ok(Self {
            model: Decoder {
                embed_tokens: embed,
                layers,
                norm: rms_norm(config.hidden_size, config.rms_norm_eps)?,
            },
            lm_head,
            config,
        })
    }

    /// The runtime configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.num_layers)
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]` (int32 or
    /// uint32). With a cache, the tokens continue the cached positions and
    /// their keys/values are appended.
    pub fn forward(&mut self, tokens: &Array, cache: Option<&mut KvCache>) -> Result<Array> {
        self.forward_impl(tokens, cache, false)
    }

    /// Like [`Model::forward`], but the logits of the last position only
    /// (`[batch, 1, vocab]`): generation's prefill skips the output
    /// projection of every other prompt position.
    pub fn forward_last(&mut self, tokens: &Array, cache: Option<&mut KvCache>) -> Result<Array> {
        self.forward_impl(tokens, cache, true)
    }

    fn forward_impl(
        &mut self,
        tokens: &Array,
        mut cache: Option<&mut KvCache>,
        last_only: bool,
    ) -> Result<Array> {
        if tokens.ndim() != 2 {
            return Err(Error::InvalidOption {
                name: "tokens",
                found: format!("shape {:?}", tokens.shape()),
                expected: "a [batch, seq] array of token ids",
            });
        }
        if let Some(c) = cache.as_deref()
            && c.num_layers() != self.model.layers.len()
        {
            return Err(Error::InvalidOption {
                name: "cache",
                found: format!("a cache for {} layers", c.num_layers()),
                expected: "a cache from Model::new_cache",
            });
        }
        let offset = cache.as_deref().map_or(0, KvCache::offset) as i32;
        let mut h = self.model.embed_tokens.forward(tokens)?;
        for (i, layer) in self.model.layers.iter_mut().enumerate() {
            h = layer.forward(&h, i, offset, cache.as_deref_mut())?;
        }
        if let Some(c) = cache {
            c.advance(tokens.dim(1) as usize);
        }
        let h = if last_only && h.dim(1) > 1 {
            let l = h.dim(1);
            h.index((.., l - 1.., ..))
        } else {
            h
        };
        let h = self.model.norm.forward(&h)?;
        Ok(match &mut self.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.model.embed_tokens.as_linear(&h)?,
        })
    }

    /// Names and shapes of every parameter, sorted by name.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<i32>)> {
        let mut v: Vec<_> = self
            .parameters()
            .flatten()
            .into_iter()
            .map(|(k, a)| (k.to_string(), a.shape().to_vec()))
            .collect();
        v.sort();
        v
    }
}

impl Module<&Array> for Model {
    type Error = Exception;
    type Output = Array;

    /// Full-sequence logits without a cache (for training).
    fn forward(&mut self, tokens: &Array) -> Result<Array, Exception> {
        Model::forward(self, tokens, None).map_err(|e| match e {
            Error::Mlx(e) => e,
            other => Exception::custom(other.to_string()),
        })
    }

    fn training_mode(&mut self, _mode: bool) {}
}
