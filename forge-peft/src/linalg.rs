//! Truncated SVD in f32, its factorizations on MLX's CPU stream (MLX's linalg
//! runs on the CPU only) and, for the randomized SVD, its products with W on
//! the default device: the full SVD (`mlx_rs::linalg::svd`), and the randomized SVD of
//! Halko, Martinsson & Tropp 2011 (*Finding structure with randomness*,
//! SIAM Review 53(2), Algorithm 4.4): with a seeded Gaussian `Ω ∈ ℝ^{n×(r+p)}`,
//!
//! ```text
//! Q = qr(W Ω);  repeat niter: Q = qr(W qr(Wᵀ Q))     (power iterations)
//! B = Qᵀ W = Ũ Σ Vᵀ;  U = Q Ũ                         (take the top r)
//! ```

use mlx_rs::{Array, Stream};

use crate::error::Result;
use crate::util::{SplitMix64, host_f32};

/// How PiSSA computes its top-r singular triplets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SvdMode {
    /// Full SVD (exact, slow for big matrices).
    Full,
    /// Randomized SVD with `niter` power iterations and `oversample` extra
    /// columns (PEFT's `pissa_niter_{niter}` is this with no oversampling).
    Randomized {
        /// Power iterations.
        niter: usize,
        /// Extra random columns beyond the rank.
        oversample: usize,
    },
}

impl Default for SvdMode {
    fn default() -> Self {
        SvdMode::Randomized {
            niter: 4,
            oversample: 8,
        }
    }
}

/// Top-`r` singular triplets of `w` (`[m, n]`): `u` `[m][r]` row-major as
/// `m×r`, `s` `[r]`, `vt` `r×n`, all on the host in f32.
#[derive(Debug, Clone)]
pub(crate) struct TopR {
    pub(crate) u: Vec<f32>,
    pub(crate) s: Vec<f32>,
    pub(crate) vt: Vec<f32>,
    pub(crate) r: usize,
}

fn cpu<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    mlx_rs::with_stream(&Stream::cpu(), f)
}

/// Copies the first `r` columns of a row-major `m×k` matrix.
fn first_cols(a: &[f32], m: usize, k: usize, r: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * r);
    for i in 0..m {
        out.extend_from_slice(&a[i * k..i * k + r]);
    }
    out
}

/// Top-`r` SVD of `w` (`[m, n]`, any float dtype, computed in f32).
pub(crate) fn top_r_svd(w: &Array, r: usize, mode: SvdMode, seed: u64) -> Result<TopR> {
    let (m, n) = (w.dim(0) as usize, w.dim(1) as usize);
    let r = r.min(m).min(n);
    let w = w.as_type::<f32>()?;
    match mode {
        SvdMode::Full => cpu(|| {
            let (u, s, vt) = mlx_rs::linalg::svd(&w)?;
            let (u, s, vt) = (host_f32(&u)?, host_f32(&s)?, host_f32(&vt)?);
            Ok(TopR {
                u: first_cols(&u, m, m, r),
                s: s[..r].to_vec(),
                vt: vt[..r * n].to_vec(),
                r,
            })
        }),
        SvdMode::Randomized { niter, oversample } => {
            // The products with W (the O(mnk) work) run on the default
            // device — the GPU when there is one; the thin QRs and the small
            // SVD of B (O(mk²)) on the CPU stream, where MLX's linalg lives.
            // On a CPU-only build both are the CPU: identical results.
            let k = (r + oversample).min(m).min(n);
            let mut rng = SplitMix64::new(seed);
            let omega: Vec<f32> = (0..n * k).map(|_| rng.next_normal() as f32).collect();
            let omega = Array::from_slice(&omega, &[n as i32, k as i32]);
            let orth = |a: &Array| -> Result<Array> { cpu(|| Ok(mlx_rs::linalg::qr(a)?.0)) };
            let mut q = orth(&w.matmul(&omega)?)?;
            let wt = w.t();
            for _ in 0..niter {
                let z = orth(&wt.matmul(&q)?)?;
                q = orth(&w.matmul(&z)?)?;
            }
            let b = q.t().matmul(&w)?; // [k, n]
            let (ub, s, vt) = cpu(|| Ok(mlx_rs::linalg::svd(&b)?))?;
            let u = q.matmul(&ub)?; // [m, k]
            let kk = ub.dim(1) as usize;
            let (u, s, vt) = (host_f32(&u)?, host_f32(&s)?, host_f32(&vt)?);
            Ok(TopR {
                u: first_cols(&u, m, kk, r),
                s: s[..r].to_vec(),
                vt: vt[..r * n].to_vec(),
                r,
            })
        }
    }
}

/// Symmetric square root and inverse square root of a symmetric positive
/// definite `d×d` matrix (host, row-major f64) through `eigh` on the CPU stream.
pub(crate) fn sym_sqrt_and_inv(h: &[f64], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let ha = crate::util::from_f64(h, &[d as i32, d as i32]);
    let (vals, vecs) = cpu(|| Ok(mlx_rs::linalg::eigh(&ha, None)?))?;
    let (vals, vecs) = (host_f32(&vals)?, host_f32(&vecs)?);
    let mut sq = vec![0.0f64; d * d];
    let mut isq = vec![0.0f64; d * d];
    let floor = vals.iter().fold(0.0f32, |a, &b| a.max(b)) as f64 * 1e-12;
    for (j, &lam) in vals.iter().enumerate() {
        let lam = (lam as f64).max(floor.max(f64::MIN_POSITIVE));
        let (s, is) = (lam.sqrt(), 1.0 / lam.sqrt());
        for a in 0..d {
            let va = vecs[a * d + j] as f64;
            for b in 0..d {
                let vb = vecs[b * d + j] as f64;
                sq[a * d + b] += va * s * vb;
                isq[a * d + b] += va * is * vb;
            }
        }
    }
    Ok((sq, isq))
}

/// Full SVD of a host `m×n` matrix (f32 on the CPU stream), returned on the host.
pub(crate) fn svd_host(a: &[f64], m: usize, n: usize) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let arr = crate::util::from_f64(a, &[m as i32, n as i32]);
    cpu(|| {
        let (u, s, vt) = mlx_rs::linalg::svd(&arr)?;
        Ok((host_f32(&u)?, host_f32(&s)?, host_f32(&vt)?))
    })
}
