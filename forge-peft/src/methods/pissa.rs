//! PiSSA and QPiSSA initialisation.
//!
//! Meng, Wang & Zhang 2024, *PiSSA: Principal Singular Values and Singular
//! Vectors Adaptation of Large Language Models* (arXiv:2404.02948), eqs.
//! (2)–(5). With `W = U S Vᵀ` (here `W ∈ ℝ^{out×in}`, PyTorch layout):
//!
//! ```text
//! A = S_r^{½} V_rᵀ / √s  ∈ ℝ^{r×in}     B = U_r S_r^{½} / √s  ∈ ℝ^{out×r}
//! W_res = W − s·B A = U_{[r:]} S_{[r:]} V_{[r:]}ᵀ
//! ```
//!
//! (the paper's `A = U_r S_r^{½}`, `B = S_r^{½} V_rᵀ` for `Y = XW` with
//! `W ∈ ℝ^{in×out}`, transposed; dividing by `√s` as PEFT does makes `s·BA`
//! the principal part for any `α`). The forward is unchanged at step 0:
//! `W_res + s·BA = W` up to f32 rounding.
//!
//! QPiSSA (same paper, §4.3): the SVD is done on the full-precision `W`, then
//! the residual is quantized, `y = x Q(W_res)ᵀ + s·x AᵀBᵀ`; its error
//! `‖W − Q(W_res) − sBA‖` is below QLoRA's `‖W − Q(W)‖` because the residual
//! has a smaller range.
//!
//! The top-r SVD is exact (`SvdMode::Full`) or randomized with power
//! iterations (`SvdMode::Randomized`, as PEFT's `pissa_niter_k`).

use mlx_rs::Array;

use crate::error::Result;
use crate::linalg::{SvdMode, top_r_svd};
use crate::util::{fnv1a, from_f64, host_f64};

/// `(A, B, W_res)` for `w` (`[out, in]`) at rank `r` and scale `s`.
pub(crate) fn init(
    name: &str,
    w: &Array,
    rank: usize,
    scale: f32,
    mode: SvdMode,
    seed: u64,
) -> Result<(Array, Array, Array)> {
    let (out, inp) = (w.dim(0) as usize, w.dim(1) as usize);
    let t = top_r_svd(w, rank, mode, seed ^ fnv1a(name))?;
    let r = t.r;
    let s = f64::from(scale);
    let mut a = vec![0.0f64; r * inp];
    let mut b = vec![0.0f64; out * r];
    for k in 0..r {
        let root = (f64::from(t.s[k]) / s).sqrt();
        for j in 0..inp {
            a[k * inp + j] = root * f64::from(t.vt[k * inp + j]);
        }
        for i in 0..out {
            b[i * r + k] = f64::from(t.u[i * r + k]) * root;
        }
    }
    // Residual in f64 from the f32-rounded A, B actually used: W − s·B A.
    let (a32, b32) = (
        from_f64(&a, &[r as i32, inp as i32]),
        from_f64(&b, &[out as i32, r as i32]),
    );
    let (af, bf) = (host_f64(&a32)?, host_f64(&b32)?);
    let wf = host_f64(w)?;
    let mut res = wf;
    for i in 0..out {
        for k in 0..r {
            let bik = s * bf[i * r + k];
            if bik == 0.0 {
                continue;
            }
            let row = &mut res[i * inp..(i + 1) * inp];
            for (x, &akj) in row.iter_mut().zip(&af[k * inp..(k + 1) * inp]) {
                *x -= bik * akj;
            }
        }
    }
    Ok((a32, b32, from_f64(&res, &[out as i32, inp as i32])))
}
