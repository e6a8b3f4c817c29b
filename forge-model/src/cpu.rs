//! A CPU inference engine that runs a GGUF file's weights as stored.
//!
//! The MLX [`Model`](crate::Model) is the model Forge trains; it dequantizes a
//! GGUF file to f32 and its matrix products read 4 bytes per weight. On a CPU,
//! generation is bound by memory bandwidth, so this engine keeps every matrix
//! in its GGML block type (Q4_1: 5 bits per weight) and multiplies with
//! [`forge_quant::matmul`], which quantizes the activations the way ggml's CPU
//! backend does (Q8_0/Q8_1 integer dot products). It computes the same
//! decoder as [`crate::decoder`] (same equations, see there), in llama.cpp's
//! arithmetic:
//!
//! - RMSNorm with the sum of squares in f64 (`ggml_rms_norm`), then the gain;
//! - RoPE on the file's layout: llama.cpp's converter permutes the Q/K rows of
//!   `llama`/`mistral` so that rotated pairs are adjacent (`(x₂ᵢ, x₂ᵢ₊₁)`,
//!   GGML rope mode 0), while `qwen2` keeps the halves layout
//!   (`(xᵢ, xᵢ₊d/2)`, NeoX mode); angle `θᵢ = p·s·b^(−2i/d) / fᵢ` with the
//!   linear scale `s` and Llama 3's per-pair factors `fᵢ` (`rope_freqs.weight`);
//! - keys and values cached as f16 (llama.cpp's default cache type) and
//!   attention as llama.cpp's CPU flash attention computes it (its default;
//!   Dao et al. 2022, *FlashAttention*, arXiv:2205.14135): the query rounded
//!   to f16, `sⱼ = q·kⱼ/√d` in f32, one pass with a running maximum `M` and
//!   sum `S = Σ e^(sⱼ−M)`, the value accumulator `o = Σ e^(sⱼ−M) vⱼ` held
//!   in f16 (rounded after every update, rescaled by `e^(M_old−M)` when `M`
//!   grows), and `o/S` at the end;
//! - SwiGLU with `silu(x) = x / (1 + e^(−x))`.
//!
//! Batch size one, any number of new tokens per call (a prompt is one call:
//! every matrix is read once for all its tokens).

use std::path::{Path, PathBuf};

use forge_gguf::GgufFile;
use forge_quant::{ActivationFormat, Activations, GgmlType};

use crate::config::{Architecture, ModelConfig, RopeScaling};
use crate::error::{Error, Result};
use crate::gguf::GgufSource;

/// A matrix in its GGML block type: `rows` rows of `cols` values.
#[derive(Debug, Clone)]
struct Matrix {
    name: String,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl Matrix {
    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// `x` (`t × cols`, converted for this type) times this matrixᵀ.
    fn apply(&self, x: &Activations, path: &Path) -> Result<Vec<f32>> {
        let mut out = vec![0f32; x.rows() * self.rows];
        forge_quant::matmul(self.ty, &self.data, self.rows, self.cols, x, &mut out).map_err(
            |e| Error::GgufTensor {
                path: path.to_path_buf(),
                tensor: self.name.clone(),
                message: e.to_string(),
            },
        )?;
        Ok(out)
    }

    /// Row `r` as f32 (an embedding lookup).
    fn row(&self, r: usize, path: &Path) -> Result<Vec<f32>> {
        let rb = self.row_bytes();
        let mut out = vec![0f32; self.cols];
        forge_quant::dequantize_row_into(self.ty, &self.data[r * rb..(r + 1) * rb], &mut out)
            .map_err(|e| Error::GgufTensor {
                path: path.to_path_buf(),
                tensor: self.name.clone(),
                message: e.to_string(),
            })?;
        Ok(out)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// Precision of the key/value cache and of the attention arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Halves, as llama.cpp's default cache: keys, values, the query and
    /// the value accumulator rounded to f16.
    #[default]
    F16,
    /// Full f32 (llama.cpp's `--cache-type-k/v f32`).
    F32,
}

/// `Σ aᵢbᵢ` in f32.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// RoPE angles in ggml's order of operations: `θ₀ = p`, `θᵢ = θᵢ₋₁·b^(−2/d)`
/// (repeated multiplication, as `ggml_rope_cache_init`), angle
/// `s · θᵢ / fᵢ`.
#[derive(Debug, Clone)]
struct RopeAngles {
    theta_scale: f32,
    factors: Vec<f32>,
    freq_scale: f32,
}

/// How RoPE pairs the features of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeMode {
    /// `(x₂ᵢ, x₂ᵢ₊₁)`: llama.cpp's permuted Q/K rows.
    Adjacent,
    /// `(xᵢ, xᵢ₊d/2)`: the Hugging Face layout.
    Halves,
}

/// A decoder that runs a GGUF file's tensors in their stored types on the CPU
/// (see the module docs). Generation with it: [`crate::Generator::new`].
#[derive(Debug, Clone)]
pub struct CpuModel {
    path: PathBuf,
    config: ModelConfig,
    rope_mode: RopeMode,
    rope: RopeAngles,
    kv_type: KvType,
    embed: Matrix,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Option<Matrix>,
}

/// The cache of a [`CpuModel`]: keys and values (rounded to the model's
/// [`KvType`]), per layer `[position][kv_head][head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct CpuCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl CpuCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.k
            .iter_mut()
            .chain(self.v.iter_mut())
            .for_each(Vec::clear);
        self.len = 0;
    }
}

impl CpuModel {
    /// Opens `path` and copies its tensors (in their stored types) into memory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = GgufFile::open(path)?;
        Self::from_file(&file, path)
    }

    /// Builds the engine from an opened [`GgufSource`].
    pub fn from_source(source: &GgufSource) -> Result<Self> {
        Self::from_file(source.file(), source.path())
    }

    fn from_file(file: &GgufFile, path: &Path) -> Result<Self> {
        let config = crate::gguf::config_from_gguf_allowing_rope_freqs(file, path)?;
        if config.attention_out_bias || config.mlp_bias {
            return Err(Error::Unsupported(format!(
                "{}: biases on the attention output or the MLP are not supported by the CPU engine",
                path.display()
            )));
        }
        let rope_mode = match config.architecture {
            Architecture::Llama | Architecture::Mistral => RopeMode::Adjacent,
            Architecture::Qwen2 => RopeMode::Halves,
        };
        let (h, kv, hd) = (
            config.hidden_size,
            config.num_kv_heads * config.head_dim,
            config.head_dim,
        );
        let q_dim = config.num_heads * hd;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<Matrix> {
            let t = file.tensor(name).ok_or_else(|| Error::GgufTensor {
                path: path.to_path_buf(),
                tensor: name.into(),
                message: "missing".into(),
            })?;
            let shape = t.shape();
            if shape != [cols as u64, rows as u64] {
                return Err(Error::GgufTensor {
                    path: path.to_path_buf(),
                    tensor: name.into(),
                    message: format!("shape {shape:?}, expected [{cols}, {rows}]"),
                });
            }
            let ty = t.ggml_type();
            if !forge_quant::is_supported(ty) || !cols.is_multiple_of(ty.block_size()) {
                return Err(Error::GgufTensor {
                    path: path.to_path_buf(),
                    tensor: name.into(),
                    message: format!("type {} is not supported for matrix products", ty.name()),
                });
            }
            Ok(Matrix {
                name: name.into(),
                ty,
                rows,
                cols,
                data: t.data().to_vec(),
            })
        };
        let vector = |name: &str, n: usize| -> Result<Vec<f32>> {
            let m = matrix_1d(file, path, name, n)?;
            Ok(m)
        };
        let optional = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
            if file.tensor(name).is_some() {
                vector(name, n).map(Some)
            } else {
                Ok(None)
            }
        };
        let layers = (0..config.num_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}");
                Ok(Layer {
                    attn_norm: vector(&n("attn_norm.weight"), h)?,
                    q: matrix(&n("attn_q.weight"), q_dim, h)?,
                    k: matrix(&n("attn_k.weight"), kv, h)?,
                    v: matrix(&n("attn_v.weight"), kv, h)?,
                    o: matrix(&n("attn_output.weight"), h, q_dim)?,
                    q_bias: optional(&n("attn_q.bias"), q_dim)?,
                    k_bias: optional(&n("attn_k.bias"), kv)?,
                    v_bias: optional(&n("attn_v.bias"), kv)?,
                    ffn_norm: vector(&n("ffn_norm.weight"), h)?,
                    gate: matrix(&n("ffn_gate.weight"), config.intermediate_size, h)?,
                    up: matrix(&n("ffn_up.weight"), config.intermediate_size, h)?,
                    down: matrix(&n("ffn_down.weight"), h, config.intermediate_size)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = matrix("token_embd.weight", config.vocab_size, h)?;
        let output = if file.tensor("output.weight").is_some() {
            Some(matrix("output.weight", config.vocab_size, h)?)
        } else {
            None
        };
        let factors = optional("rope_freqs.weight", hd / 2)?;
        let scale = match config.rope_scaling {
            RopeScaling::Linear { factor } => 1.0 / factor,
            _ => 1.0,
        };
        let rope = RopeAngles {
            theta_scale: config.rope_theta.powf(-2.0 / hd as f32),
            factors: factors.unwrap_or_else(|| vec![1.0; hd / 2]),
            freq_scale: scale,
        };
        Ok(Self {
            path: path.to_path_buf(),
            rope_mode,
            rope,
            kv_type: KvType::F16,
            embed,
            layers,
            norm: vector("output_norm.weight", h)?,
            output,
            config,
        })
    }

    /// Sets the precision of the key/value cache (default
    /// [`KvType::F16`], as llama.cpp).
    #[must_use]
    pub fn with_kv_type(mut self, kv_type: KvType) -> Self {
        self.kv_type = kv_type;
        self
    }

    /// The runtime configuration read from the file.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// An empty cache for this model.
    pub fn new_cache(&self) -> CpuCache {
        CpuCache {
            k: vec![Vec::new(); self.layers.len()],
            v: vec![Vec::new(); self.layers.len()],
            len: 0,
        }
    }

    /// Bytes of weights held (in their stored types).
    pub fn weight_bytes(&self) -> usize {
        let m = |m: &Matrix| m.data.len();
        m(&self.embed)
            + self.output.as_ref().map_or(0, m)
            + self
                .layers
                .iter()
                .map(|l| m(&l.q) + m(&l.k) + m(&l.v) + m(&l.o) + m(&l.gate) + m(&l.up) + m(&l.down))
                .sum::<usize>()
    }

    /// Runs `tokens` after the cached positions, appends their keys and
    /// values to `cache`, and returns the logits of the last one.
    pub fn forward_last(&self, tokens: &[u32], cache: &mut CpuCache) -> Result<Vec<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(Error::InvalidOption {
                name: "tokens",
                found: "none".into(),
                expected: "at least one token",
            });
        }
        if cache.k.len() != self.layers.len() {
            return Err(Error::InvalidOption {
                name: "cache",
                found: format!("a cache for {} layers", cache.k.len()),
                expected: "a cache from CpuModel::new_cache",
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::InvalidOption {
                name: "tokens",
                found: format!("token id {bad}"),
                expected: "ids below the model's vocab_size",
            });
        }
        let (t, h) = (tokens.len(), c.hidden_size);
        let p0 = cache.len;
        let mut x = Vec::with_capacity(t * h);
        for &tok in tokens {
            x.extend(self.embed.row(tok as usize, &self.path)?);
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let normed = rms_norm(&x, &layer.attn_norm, c.rms_norm_eps);
            let attn = self.attention(li, layer, &normed, t, p0, cache)?;
            let acts = Activations::new(
                ActivationFormat::for_weights(layer.o.ty),
                &attn,
                layer.o.cols,
            )
            .map_err(|e| self.tensor_error(&layer.o, e))?;
            let o = layer.o.apply(&acts, &self.path)?;
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let normed = rms_norm(&x, &layer.ffn_norm, c.rms_norm_eps);
            let acts = self.activations(&normed, &layer.gate)?;
            let gate = layer.gate.apply(&acts, &self.path)?;
            let up = if layer.up.ty == layer.gate.ty {
                layer.up.apply(&acts, &self.path)?
            } else {
                layer
                    .up
                    .apply(&self.activations(&normed, &layer.up)?, &self.path)?
            };
            let hidden: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let acts = self.activations(&hidden, &layer.down)?;
            let down = layer.down.apply(&acts, &self.path)?;
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        cache.len += t;
        let last = rms_norm(&x[(t - 1) * h..], &self.norm, c.rms_norm_eps);
        let head = self.output.as_ref().unwrap_or(&self.embed);
        let acts = self.activations(&last, head)?;
        head.apply(&acts, &self.path)
    }

    fn tensor_error(&self, m: &Matrix, e: forge_quant::Error) -> Error {
        Error::GgufTensor {
            path: self.path.clone(),
            tensor: m.name.clone(),
            message: e.to_string(),
        }
    }

    fn activations(&self, x: &[f32], m: &Matrix) -> Result<Activations> {
        Activations::new(ActivationFormat::for_weights(m.ty), x, m.cols)
            .map_err(|e| self.tensor_error(m, e))
    }

    /// Attention of `t` new positions (`x` normed, `t × hidden`): returns
    /// `t × (heads·head_dim)` before the output projection.
    fn attention(
        &self,
        li: usize,
        layer: &Layer,
        x: &[f32],
        t: usize,
        p0: usize,
        cache: &mut CpuCache,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let hd = c.head_dim;
        let (nh, nkv) = (c.num_heads, c.num_kv_heads);
        let acts = self.activations(x, &layer.q)?;
        let same = |m: &Matrix| m.ty == layer.q.ty;
        let mut q = layer.q.apply(&acts, &self.path)?;
        let mut k = if same(&layer.k) {
            layer.k.apply(&acts, &self.path)?
        } else {
            layer.k.apply(&self.activations(x, &layer.k)?, &self.path)?
        };
        let mut v = if same(&layer.v) {
            layer.v.apply(&acts, &self.path)?
        } else {
            layer.v.apply(&self.activations(x, &layer.v)?, &self.path)?
        };
        for (out, bias) in [
            (&mut q, &layer.q_bias),
            (&mut k, &layer.k_bias),
            (&mut v, &layer.v_bias),
        ] {
            if let Some(b) = bias {
                for row in out.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                }
            }
        }
        for ti in 0..t {
            let pos = (p0 + ti) as f32;
            for head in q[ti * nh * hd..(ti + 1) * nh * hd].chunks_exact_mut(hd) {
                self.rope(head, pos);
            }
            for head in k[ti * nkv * hd..(ti + 1) * nkv * hd].chunks_exact_mut(hd) {
                self.rope(head, pos);
            }
        }
        let half = self.kv_type == KvType::F16;
        let r = |x: &mut [f32]| {
            if half {
                forge_quant::round_to_f16(x);
            }
        };
        r(&mut k);
        r(&mut v);
        let (kc, vc) = (&mut cache.k[li], &mut cache.v[li]);
        kc.extend_from_slice(&k);
        vc.extend_from_slice(&v);
        let scale = (hd as f32).powf(-0.5);
        let group = nh / nkv;
        let mut out = vec![0f32; t * nh * hd];
        let mut qr = vec![0f32; hd];
        let mut acc = vec![0f32; hd];
        for ti in 0..t {
            let n = p0 + ti + 1;
            for hh in 0..nh {
                let kvh = hh / group;
                let qh = &q[(ti * nh + hh) * hd..(ti * nh + hh + 1) * hd];
                qr.copy_from_slice(qh);
                r(&mut qr);
                // llama.cpp's CPU flash attention (its default): one pass
                // over the cache with a running maximum M and sum S; the
                // value accumulator has the cache's precision and is
                // rescaled when M grows.
                let (mut m, mut sum) = (f32::NEG_INFINITY, 0f32);
                acc.iter_mut().for_each(|a| *a = 0.0);
                for j in 0..n {
                    let at = (j * nkv + kvh) * hd;
                    let s = dot(&qr, &kc[at..at + hd]) * scale;
                    let (mut ms, mut vs) = (1f32, 1f32);
                    if s > m {
                        let old = m;
                        m = s;
                        ms = (old - m).exp();
                        acc.iter_mut().for_each(|a| *a *= ms);
                        r(&mut acc);
                    } else {
                        vs = (s - m).exp();
                    }
                    acc.iter_mut()
                        .zip(&vc[at..at + hd])
                        .for_each(|(a, v)| *a = v.mul_add(vs, *a));
                    r(&mut acc);
                    sum = sum * ms + vs;
                }
                let inv = 1.0 / sum;
                let o = &mut out[(ti * nh + hh) * hd..(ti * nh + hh + 1) * hd];
                o.iter_mut().zip(&acc).for_each(|(o, a)| *o = a * inv);
            }
        }
        Ok(out)
    }

    fn rope(&self, x: &mut [f32], pos: f32) {
        let half = x.len() / 2;
        let mut theta = pos;
        for (i, f) in self.rope.factors.iter().enumerate() {
            let (sin, cos) = (self.rope.freq_scale * (theta / f)).sin_cos();
            theta *= self.rope.theta_scale;
            let (a, b) = match self.rope_mode {
                RopeMode::Adjacent => (2 * i, 2 * i + 1),
                RopeMode::Halves => (i, i + half),
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * cos - x1 * sin;
            x[b] = x0 * sin + x1 * cos;
        }
    }
}

fn matrix_1d(file: &GgufFile, path: &Path, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = file.tensor(name).ok_or_else(|| Error::GgufTensor {
        path: path.to_path_buf(),
        tensor: name.into(),
        message: "missing".into(),
    })?;
    if t.shape() != [n as u64] {
        return Err(Error::GgufTensor {
            path: path.to_path_buf(),
            tensor: name.into(),
            message: format!("shape {:?}, expected [{n}]", t.shape()),
        });
    }
    forge_quant::dequantize(t.ggml_type(), t.data(), n).map_err(|e| Error::GgufTensor {
        path: path.to_path_buf(),
        tensor: name.into(),
        message: e.to_string(),
    })
}

/// `ggml_rms_norm` then the gain, row by row.
fn rms_norm(x: &[f32], gain: &[f32], eps: f32) -> Vec<f32> {
    let n = gain.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / n as f64) as f32;
        let s = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(gain).map(|(v, g)| v * s * g));
    }
    out
}
