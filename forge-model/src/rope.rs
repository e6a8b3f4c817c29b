//! Rotary position embedding (RoPE).
//!
//! Su et al. 2021, *RoFormer: Enhanced Transformer with Rotary Position
//! Embedding* (arXiv:2104.09864). Each pair of features `(x_i, x_{i+d/2})`
//! of a head at position `m` is rotated by the angle `m·θ_i`, with
//! `θ_i = base^{-2i/d}`:
//!
//! ```text
//! x'_i       = x_i cos(mθ_i) − x_{i+d/2} sin(mθ_i)
//! x'_{i+d/2} = x_i sin(mθ_i) + x_{i+d/2} cos(mθ_i)
//! ```
//!
//! so `⟨q'_m, k'_n⟩` depends only on `m − n`. Hugging Face checkpoints use
//! this "half-split" pairing (MLX's non-traditional mode).
//!
//! Scalings: `linear` divides positions by `factor`; `llama3` (Llama 3.1,
//! Meta 2024) keeps high-frequency components, divides low-frequency ones by
//! `factor` and interpolates in between: with wavelength `λ_i = 2π/θ_i`,
//! `L = original_max_position_embeddings`, `λ_lo = L/low_freq_factor`,
//! `λ_hi = L/high_freq_factor`:
//!
//! ```text
//! θ'_i = θ_i                          if λ_i < λ_hi
//! θ'_i = θ_i / factor                 if λ_i > λ_lo
//! θ'_i = (1 − s) θ_i / factor + s θ_i otherwise, s = (L/λ_i − low) / (high − low)
//! ```
//!
//! The computation is `mlx_rs::fast::rope`.

use mlx_rs::Array;

use crate::config::RopeScaling;
use crate::error::Result;

/// Rotary embedding of one attention layer (shared with forge-peft).
#[derive(Debug, Clone)]
pub struct Rope {
    dims: i32,
    base: Option<f32>,
    scale: f32,
    /// Per-pair periods `1/θ'_i` when the scaling is frequency dependent.
    freqs: Option<Array>,
}

impl Rope {
    /// The embedding for heads of `head_dim` features, base `theta` and `scaling`.
    pub fn new(head_dim: usize, theta: f32, scaling: RopeScaling) -> Self {
        let dims = head_dim as i32;
        match scaling {
            RopeScaling::None => Self {
                dims,
                base: Some(theta),
                scale: 1.0,
                freqs: None,
            },
            RopeScaling::Linear { factor } => Self {
                dims,
                base: Some(theta),
                scale: 1.0 / factor,
                freqs: None,
            },
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_ctx,
            } => {
                let low_wavelen = old_ctx / low_freq_factor;
                let high_wavelen = old_ctx / high_freq_factor;
                let periods: Vec<f32> = (0..head_dim / 2)
                    .map(|i| {
                        // MLX's `freqs` are periods: angle = position / period.
                        let period = theta.powf((2 * i) as f32 / head_dim as f32);
                        let wavelen = 2.0 * std::f32::consts::PI * period;
                        if wavelen > low_wavelen {
                            period * factor
                        } else if wavelen > high_wavelen && wavelen < low_wavelen {
                            let smooth = (old_ctx / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            period / ((1.0 - smooth) / factor + smooth)
                        } else {
                            period
                        }
                    })
                    .collect();
                let n = periods.len() as i32;
                Self {
                    dims,
                    base: None,
                    scale: 1.0,
                    freqs: Some(Array::from_slice(&periods, &[n])),
                }
            }
        }
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]`, whose first
    /// position is `offset`.
    pub fn apply(&self, x: &Array, offset: i32) -> Result<Array> {
        Ok(mlx_rs::fast::rope(
            x,
            self.dims,
            false,
            self.base,
            self.scale,
            offset,
            self.freqs.as_ref(),
        )?)
    }
}
