//! DoRA: weight-decomposed low-rank adaptation.
//!
//! Liu et al. 2024, *DoRA: Weight-Decomposed Low-Rank Adaptation*
//! (arXiv:2402.09353), eq. (5):
//!
//! ```text
//! W' = m · (W₀ + s·BA) / ‖W₀ + s·BA‖_c
//! ```
//!
//! with the magnitude `m ∈ ℝ^{out}` initialised to `‖W₀‖_c` (the norm of each
//! output row in the `[out, in]` layout, the paper's column norm) and `A, B`
//! as LoRA, so `W' = W₀` at step 0. The paper (§4.3) treats the norm as a
//! constant in the backward pass to save memory; PEFT does the same. Forge
//! does so by default (`dora_detach_norm`), and the exact gradient is
//! available for checks. The forward computes
//! `y = (m / ‖W₀ + sBA‖_c) ⊙ (x W₀ᵀ + s·x AᵀBᵀ) + bias`.

use mlx_rs::Array;

use crate::error::Result;

/// Row norms `‖W‖_c` of `w` (`[out, in]`) as `[out]`.
pub(crate) fn row_norms(w: &Array) -> Result<Array> {
    Ok(w.square()?.sum_axis(1, false)?.sqrt()?)
}
