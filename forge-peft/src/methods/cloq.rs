//! CLoQ: calibrated LoRA initialisation for quantized LLMs.
//!
//! Deng et al. 2025, *CLoQ: Enhancing Fine-Tuning of Quantized LLMs via
//! Calibrated LoRA Initialization* (arXiv:2501.18475), eq. (3) and Theorem 3.1.
//! For a quantized base `Q = Q(W)` and calibration activations `X ∈ ℝ^{n×in}`
//! (the layer's inputs on a few batches), choose `A, B` minimising
//!
//! ```text
//! ‖X (W − Q − s·BA)ᵀ‖_F² = ‖R (ΔWᵀ − s·AᵀBᵀ)‖_F²,  ΔW = W − Q,  H = XᵀX = R²
//! ```
//!
//! Closed form: with `R = (H + λI)^{½}` (λ = `lambda`·mean diag(H), the Gram
//! regularisation that keeps `R` invertible) and the top-r SVD
//! `R ΔWᵀ ≈ U_r Σ_r V_rᵀ`,
//!
//! ```text
//! A = Σ_r^{½} U_rᵀ R⁻¹ / √s ∈ ℝ^{r×in}     B = V_r Σ_r^{½} / √s ∈ ℝ^{out×r}
//! ```
//!
//! so `s·AᵀBᵀ = R⁻¹ U_r Σ_r V_rᵀ`, the best rank-r fit in the `R`-weighted norm
//! (Eckart–Young). The Gram `H` is accumulated on MLX in f32; the square
//! roots, products and SVD run in f32/f64 on the CPU.

use mlx_rs::Array;

use crate::error::Result;
use crate::linalg::{svd_host, sym_sqrt_and_inv};
use crate::util::{from_f64, host_f64};

/// `(A, B)` for the residual `delta = W − Q(W)` (`[out, in]`) under the Gram
/// `gram` (`[in, in]`).
pub(crate) fn init(
    delta: &Array,
    gram: &Array,
    rank: usize,
    scale: f32,
    lambda: f32,
) -> Result<(Array, Array)> {
    let (out, inp) = (delta.dim(0) as usize, delta.dim(1) as usize);
    let mut h = host_f64(gram)?;
    let mean_diag = (0..inp).map(|i| h[i * inp + i]).sum::<f64>() / inp as f64;
    let reg = f64::from(lambda) * mean_diag.max(f64::MIN_POSITIVE);
    for i in 0..inp {
        h[i * inp + i] += reg;
    }
    let (rt, rinv) = sym_sqrt_and_inv(&h, inp)?;
    let d = host_f64(delta)?;
    // M = R ΔWᵀ: [in, out]
    let mut m = vec![0.0f64; inp * out];
    for i in 0..inp {
        for k in 0..inp {
            let rik = rt[i * inp + k];
            if rik == 0.0 {
                continue;
            }
            for j in 0..out {
                m[i * out + j] += rik * d[j * inp + k];
            }
        }
    }
    let (u, s, vt) = svd_host(&m, inp, out)?;
    let r = rank.min(inp).min(out);
    let sc = f64::from(scale);
    // A[k, :] = sqrt(σ_k/s) · (U_kᵀ R⁻¹)  ;  B[:, k] = V_k sqrt(σ_k/s)
    let mut a = vec![0.0f64; r * inp];
    let mut b = vec![0.0f64; out * r];
    for k in 0..r {
        let root = (f64::from(s[k]) / sc).sqrt();
        for j in 0..inp {
            let mut acc = 0.0;
            for i in 0..inp {
                acc += f64::from(u[i * inp + k]) * rinv[i * inp + j];
            }
            a[k * inp + j] = root * acc;
        }
        for j in 0..out {
            b[j * r + k] = f64::from(vt[k * out + j]) * root;
        }
    }
    Ok((
        from_f64(&a, &[r as i32, inp as i32]),
        from_f64(&b, &[out as i32, r as i32]),
    ))
}

/// The CLoQ objective `‖X Dᵀ‖_F² = tr(D H Dᵀ)` for `D = W − base − s·BA`,
/// given the Gram `H = XᵀX` (host f64, for tests and reports).
pub fn weighted_error(
    w: &Array,
    base: &Array,
    a: &Array,
    b: &Array,
    scale: f32,
    gram: &Array,
) -> Result<f64> {
    let delta = w
        .subtract(base)?
        .subtract(b.matmul(a)?.multiply(Array::from_f32(scale))?)?;
    let (out, inp) = (delta.dim(0) as usize, delta.dim(1) as usize);
    let d = host_f64(&delta)?;
    let h = host_f64(gram)?;
    let mut total = 0.0;
    for r in 0..out {
        let row = &d[r * inp..(r + 1) * inp];
        for i in 0..inp {
            let mut acc = 0.0;
            for j in 0..inp {
                acc += h[i * inp + j] * row[j];
            }
            total += row[i] * acc;
        }
    }
    Ok(total)
}
