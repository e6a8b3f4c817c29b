//! 8-bit AdamW: the optimizer moments stored block-wise quantized.
//!
//! Dettmers, Lewis, Shleifer & Zettlemoyer 2022, *8-bit Optimizers via
//! Block-wise Quantization* (ICLR 2022, arXiv:2110.02861), §2.
//!
//! Each moment tensor is cut into blocks of `B` values. Block `b` keeps its
//! absolute maximum `N_b = max_i |x_i|` in f32 and, per value, the 8-bit index
//! of the nearest entry of a sorted quantization map `Q` (256 values in
//! `[-1, 1]`):
//!
//! ```text
//! quantize:    q_i = argmin_j |Q_j − x_i / N_b|        dequantize:  x̂_i = N_b · Q[q_i]
//! step t:      m = β₁·deq(m̄) + (1−β₁)·g                v = β₂·deq(v̄) + (1−β₂)·g²
//!              θ ← θ − η (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε) − η λ θ
//!              m̄ ← quant(m)                              v̄ ← quant(v)
//! ```
//!
//! The update itself runs in f32 (the paper's "dequantize, update in 32 bits,
//! requantize"); only the stored state is 8-bit. `Q` is the paper's dynamic
//! (tree) map: a value is `±10^{-e}·f` where the exponent `e ∈ 0..7` is spent
//! in unary and the remaining bits give a linear fraction `f ∈ (0.1, 1)`, so
//! small magnitudes keep relative precision. The first moment uses the signed
//! map (per decade `e` from 10⁻⁶ up, 2^k fractions of each sign, k = 0..6, plus
//! 0 and 1); the second moment, never negative, the unsigned map (2^{k+1}
//! positive fractions per decade, plus 0 and 1): 256 codes each.
//!
//! Block size: **2048**, the paper's choice for optimizer states (§2.1):
//! an outlier only coarsens its own 2048 values, the per-block absmax costs
//! 4 bytes per 2048 (0.2 %), and blocks stay independent (parallel). 256 would
//! track outliers more closely at 8× the absmax overhead; the paper found 2048
//! as stable as 32-bit Adam. As bitsandbytes does, tensors smaller than
//! `min_8bit_size` (default 4096 values) keep 32-bit moments: their saving is
//! negligible and they are the most sensitive (biases, norms).
//!
//! State memory: 8-bit tensors `2·(n + 4⌈n/B⌉)` bytes instead of `8n`.

use std::collections::BTreeMap;
use std::path::Path;

use mlx_rs::Array;

use crate::error::{Error, Result};
use crate::train::optim::decays;

/// Values per quantization block.
pub const BLOCK: usize = 2048;

/// The dynamic quantization map (256 sorted values in `[-1, 1]`).
pub fn dynamic_map(signed: bool) -> Vec<f32> {
    let mut q: Vec<f64> = vec![0.0, 1.0];
    for k in 0..7u32 {
        let decade = 10f64.powi(k as i32 - 6);
        let n = if signed {
            1usize << k
        } else {
            1usize << (k + 1)
        };
        // Midpoints of n equal intervals of [0.1, 1].
        for j in 0..n {
            let lo = 0.1 + 0.9 * j as f64 / n as f64;
            let hi = 0.1 + 0.9 * (j + 1) as f64 / n as f64;
            let f = decade * (lo + hi) / 2.0;
            q.push(f);
            if signed {
                q.push(-f);
            }
        }
    }
    let mut q: Vec<f32> = q.into_iter().map(|x| x as f32).collect();
    q.sort_by(f32::total_cmp);
    q
}

/// A block-wise quantized tensor: one code per value, one absmax per block.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized8 {
    /// Indices into the map.
    pub codes: Vec<u8>,
    /// Per-block absmax.
    pub absmax: Vec<f32>,
}

fn nearest(map: &[f32], x: f32) -> u8 {
    let i = map.partition_point(|&v| v < x);
    let i = if i == 0 {
        0
    } else if i == map.len() {
        map.len() - 1
    } else if (map[i] - x) < (x - map[i - 1]) {
        i
    } else {
        i - 1
    };
    i as u8
}

impl Quantized8 {
    /// Quantizes `x` against `map` in blocks of [`BLOCK`].
    pub fn quantize(x: &[f32], map: &[f32]) -> Self {
        let mut codes = Vec::with_capacity(x.len());
        let mut absmax = Vec::with_capacity(x.len().div_ceil(BLOCK));
        for block in x.chunks(BLOCK) {
            let n = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            absmax.push(n);
            let inv = if n > 0.0 { 1.0 / n } else { 0.0 };
            codes.extend(block.iter().map(|&v| nearest(map, v * inv)));
        }
        Self { codes, absmax }
    }

    /// The values `N_b · Q[q_i]`.
    pub fn dequantize(&self, map: &[f32]) -> Vec<f32> {
        self.codes
            .chunks(BLOCK)
            .zip(&self.absmax)
            .flat_map(|(c, &n)| c.iter().map(move |&q| map[q as usize] * n))
            .collect()
    }

    fn bytes(&self) -> usize {
        self.codes.len() + 4 * self.absmax.len()
    }
}

/// One parameter's moments.
#[derive(Debug, Clone, PartialEq)]
enum Moments {
    /// 32-bit (small tensors).
    Full(Vec<f32>, Vec<f32>),
    /// 8-bit block-wise.
    Q8(Quantized8, Quantized8),
}

/// AdamW with 8-bit block-wise quantized moments, updated on the host.
#[derive(Debug, Clone)]
pub struct AdamW8bit {
    /// β₁, β₂.
    pub betas: (f32, f32),
    /// ε.
    pub eps: f32,
    /// λ.
    pub weight_decay: f32,
    /// Steps taken.
    pub t: u64,
    /// Tensors with fewer values keep 32-bit moments.
    pub min_8bit_size: usize,
    signed: Vec<f32>,
    unsigned: Vec<f32>,
    state: BTreeMap<String, Moments>,
}

fn host(a: &Array) -> Result<Vec<f32>> {
    let a = a.as_type::<f32>()?.contiguous()?;
    a.eval()?;
    Ok(a.try_as_slice::<f32>()
        .map_err(|e| Error::Unsupported(format!("host copy: {e:?}")))?
        .to_vec())
}

impl AdamW8bit {
    /// Fresh state.
    pub fn new(betas: (f32, f32), eps: f32, weight_decay: f32) -> Self {
        Self {
            betas,
            eps,
            weight_decay,
            t: 0,
            min_8bit_size: 4096,
            signed: dynamic_map(true),
            unsigned: dynamic_map(false),
            state: BTreeMap::new(),
        }
    }

    /// Keeps 32-bit moments for tensors below `n` values (0: quantize all).
    #[must_use]
    pub fn with_min_8bit_size(mut self, n: usize) -> Self {
        self.min_8bit_size = n;
        self
    }

    /// Bytes held by the moments (codes, absmax, 32-bit small tensors).
    pub fn state_bytes(&self) -> usize {
        self.state
            .values()
            .map(|m| match m {
                Moments::Full(m, v) => 4 * (m.len() + v.len()),
                Moments::Q8(m, v) => m.bytes() + v.bytes(),
            })
            .sum()
    }

    /// The dequantized `(m, v)` of `name`.
    pub fn moments(&self, name: &str) -> Option<(Vec<f32>, Vec<f32>)> {
        Some(match self.state.get(name)? {
            Moments::Full(m, v) => (m.clone(), v.clone()),
            Moments::Q8(m, v) => (m.dequantize(&self.signed), v.dequantize(&self.unsigned)),
        })
    }

    /// One step: returns the updated parameters.
    pub fn step(
        &mut self,
        params: &BTreeMap<String, Array>,
        grads: &BTreeMap<String, Array>,
        lr: f32,
    ) -> Result<BTreeMap<String, Array>> {
        self.t += 1;
        let (b1, b2) = self.betas;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let mut out = BTreeMap::new();
        for (k, p) in params {
            let Some(g) = grads.get(k) else {
                out.insert(k.clone(), p.clone());
                continue;
            };
            let (mut theta, g) = (host(p)?, host(g)?);
            let n = theta.len();
            let (mut m, mut v) = match self.state.get(k) {
                Some(Moments::Full(m, v)) => (m.clone(), v.clone()),
                Some(Moments::Q8(m, v)) => {
                    (m.dequantize(&self.signed), v.dequantize(&self.unsigned))
                }
                None => (vec![0.0; n], vec![0.0; n]),
            };
            let decay = if self.weight_decay > 0.0 && decays(k) {
                lr * self.weight_decay
            } else {
                0.0
            };
            for i in 0..n {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let update = (m[i] / c1) / ((v[i] / c2).sqrt() + self.eps);
                theta[i] = theta[i] - lr * update - decay * theta[i];
            }
            let state = if n >= self.min_8bit_size {
                Moments::Q8(
                    Quantized8::quantize(&m, &self.signed),
                    Quantized8::quantize(&v, &self.unsigned),
                )
            } else {
                Moments::Full(m, v)
            };
            self.state.insert(k.clone(), state);
            out.insert(k.clone(), Array::from_slice(&theta, p.shape()));
        }
        Ok(out)
    }

    /// Writes the state (codes as U8, absmax and 32-bit moments as F32).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut bufs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        for (k, s) in &self.state {
            match s {
                Moments::Full(m, v) => {
                    bufs.push((
                        format!("m.{k}"),
                        safetensors::Dtype::F32,
                        vec![m.len()],
                        f32s(m),
                    ));
                    bufs.push((
                        format!("v.{k}"),
                        safetensors::Dtype::F32,
                        vec![v.len()],
                        f32s(v),
                    ));
                }
                Moments::Q8(m, v) => {
                    for (tag, q) in [("m", m), ("v", v)] {
                        bufs.push((
                            format!("{tag}8.{k}"),
                            safetensors::Dtype::U8,
                            vec![q.codes.len()],
                            q.codes.clone(),
                        ));
                        bufs.push((
                            format!("{tag}8_absmax.{k}"),
                            safetensors::Dtype::F32,
                            vec![q.absmax.len()],
                            f32s(&q.absmax),
                        ));
                    }
                }
            }
        }
        let views = bufs
            .iter()
            .map(|(n, d, s, b)| {
                safetensors::tensor::TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Safetensors {
                        path: path.to_path_buf(),
                        message: format!("tensor `{n}`: {e}"),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, None).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::util::write_atomic(path, &bytes)
    }

    /// Reads a state written by `save`.
    pub(crate) fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |message: String| Error::Safetensors {
            path: path.to_path_buf(),
            message,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let f32v = |name: &str| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, expected F32",
                    t.dtype()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let u8v = |name: &str| -> Result<Vec<u8>> {
            let t = st
                .tensor(name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != safetensors::Dtype::U8 {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, expected U8",
                    t.dtype()
                )));
            }
            Ok(t.data().to_vec())
        };
        self.state.clear();
        for name in st.names() {
            if let Some(k) = name.strip_prefix("m.") {
                self.state.insert(
                    k.to_string(),
                    Moments::Full(f32v(name)?, f32v(&format!("v.{k}"))?),
                );
            } else if let Some(k) = name.strip_prefix("m8.") {
                let q = |tag: &str| -> Result<Quantized8> {
                    let q = Quantized8 {
                        codes: u8v(&format!("{tag}8.{k}"))?,
                        absmax: f32v(&format!("{tag}8_absmax.{k}"))?,
                    };
                    if q.absmax.len() != q.codes.len().div_ceil(BLOCK) {
                        return Err(bad(format!(
                            "tensor `{tag}8_absmax.{k}` has {} blocks for {} codes (block {BLOCK})",
                            q.absmax.len(),
                            q.codes.len()
                        )));
                    }
                    Ok(q)
                };
                self.state
                    .insert(k.to_string(), Moments::Q8(q("m")?, q("v")?));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_have_256_sorted_distinct_codes_in_range() {
        for signed in [true, false] {
            let q = dynamic_map(signed);
            assert_eq!(q.len(), 256);
            assert!(q.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            assert_eq!(q[q.len() - 1], 1.0);
            assert_eq!(q[0], if signed { -0.99296875 } else { 0.0 });
            // Smallest non-zero magnitude: the middle of [0.1, 1] at 10⁻⁶ (signed)
            // or its first half-interval (unsigned).
            let tiny = q.iter().filter(|x| **x > 0.0).fold(1f32, |a, &b| a.min(b));
            let expect = if signed { 0.55e-6 } else { 0.325e-6 };
            assert!((tiny - expect).abs() < 1e-12, "{tiny}");
        }
    }

    #[test]
    fn quantization_error_is_bounded_relative_to_the_block_max() {
        let map = dynamic_map(true);
        let mut s = 1u64;
        let x: Vec<f32> = (0..5000)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e-3
            })
            .collect();
        let q = Quantized8::quantize(&x, &map);
        assert_eq!(q.absmax.len(), 3);
        let y = q.dequantize(&map);
        for (b, (xb, yb)) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).enumerate() {
            let n = q.absmax[b];
            // Gaps in the top decade are 0.9/64, so the error is at most half
            // of that, except at −1, 1 − 0.99296875 below the lowest code.
            let bound = n * (1.0 - 0.992_968_75) * (1.0 + 1e-5);
            for (a, c) in xb.iter().zip(yb) {
                assert!((a - c).abs() <= bound, "{a} {c}");
            }
            // The block's extreme is represented exactly (code ±1).
            let i = xb
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .map(|(i, _)| i)
                .unwrap_or(0);
            if xb[i] > 0.0 {
                assert_eq!(yb[i], xb[i]);
            }
        }
    }
}
