//! Numeric smoke checks of the MLX build, each against an independent reference.
//!
//! These are what `cargo xtask demo` prints and what the test suite asserts:
//! - **matmul** `C = A·B` in f32 on MLX against the same product in f64 with
//!   ndarray; error `‖C − C₆₄‖_F / ‖C₆₄‖_F`.
//! - **SVD** `A = U·diag(σ)·Vᵀ` (LAPACK through MLX's CPU stream); errors
//!   `‖A − U_k diag(σ) V_kᵀ‖_F / ‖A‖_F` and `max |U_kᵀU_k − I|`, checked in f64.
//! - **4-bit affine quantization** (MLX `quantize`, group size g): each group of
//!   g weights is stored as `ŵ = s·q + b` with `q ∈ {0..2^bits−1}`.
//!   `quantized_matmul(x, Ŵ)` must equal `x·Ŵᵀ` computed in f64 from the
//!   dequantized weights (the kernel is exact up to f32 rounding), and the
//!   output error against the unquantized `x·Wᵀ` must match uniform rounding
//!   noise, `‖x(Ŵ−W)ᵀ‖/‖xWᵀ‖ ≈ sqrt(mean(s²)/12) / rms(W)`.
//! - **autodiff**: `value_and_grad` of `f(W) = Σ tanh(X·W)²` against central
//!   finite differences of the same function evaluated in f64 on the host.

use std::fmt;

use mlx_rs::{Array, Stream, linalg, ops, random, transforms};
use ndarray::{Array2, ArrayView2};

use crate::runtime::{RuntimeInfo, runtime_info};
use crate::{Error, Result};

/// One smoke check: a measured error and the tolerance it must stay under.
#[derive(Debug, Clone)]
pub struct Check {
    /// Short name, e.g. `matmul 256x256x256`.
    pub name: String,
    /// What the error measures.
    pub measure: &'static str,
    /// The measured error.
    pub error: f64,
    /// The largest acceptable error.
    pub tolerance: f64,
}

impl Check {
    /// Whether the error is finite and within tolerance.
    pub fn passed(&self) -> bool {
        self.error.is_finite() && self.error <= self.tolerance
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {:<34} {:<44} {:>10.3e} (tolerance {:.1e})",
            if self.passed() { "ok" } else { "FAIL" },
            self.name,
            self.measure,
            self.error,
            self.tolerance
        )
    }
}

/// The runtime description and every check.
#[derive(Debug, Clone)]
pub struct SmokeReport {
    /// Device, BLAS and library location.
    pub runtime: RuntimeInfo,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl SmokeReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }
}

impl fmt::Display for SmokeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "MLX runtime: {}", self.runtime)?;
        for c in &self.checks {
            writeln!(f, "  {c}")?;
        }
        Ok(())
    }
}

/// Runs every check with inputs drawn from `seed`.
pub fn run(seed: u64) -> Result<SmokeReport> {
    let mut checks = vec![matmul_check(256, 384, 128, seed)?];
    checks.extend(svd_check(96, 64, seed + 1)?);
    checks.extend(quantized_matmul_check(256, 512, 8, seed + 2)?);
    checks.push(grad_check(seed + 3)?);
    Ok(SmokeReport {
        runtime: runtime_info(),
        checks,
    })
}

/// Standard-normal f32 array of `shape` drawn from an explicit key: the same
/// seed gives the same array on every run and platform.
pub fn normal(shape: &[i32], seed: u64) -> Result<Array> {
    let key = random::key(seed)?;
    Ok(random::normal::<f32>(shape, None, None, &key)?)
}

/// Copies a 2-D f32 array to the host as f64.
pub fn to_host_2d(a: &Array, name: &'static str) -> Result<Array2<f64>> {
    let shape = a.shape().to_vec();
    let &[rows, cols] = shape.as_slice() else {
        return Err(Error::Shape {
            name,
            found: shape,
            expected: "2 dimensions".into(),
        });
    };
    let data = a
        .as_type::<f32>()?
        .try_as_slice::<f32>()
        .map_err(|source| Error::Readback { name, source })?
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let dims = (
        usize::try_from(rows).unwrap_or(0),
        usize::try_from(cols).unwrap_or(0),
    );
    Array2::from_shape_vec(dims, data).map_err(|_| Error::Shape {
        name,
        found: vec![rows, cols],
        expected: "a contiguous matrix".into(),
    })
}

/// Copies a 1-D f32 array to the host as f64.
fn to_host_1d(a: &Array, name: &'static str) -> Result<Vec<f64>> {
    Ok(a.as_type::<f32>()?
        .try_as_slice::<f32>()
        .map_err(|source| Error::Readback { name, source })?
        .iter()
        .map(|&v| f64::from(v))
        .collect())
}

/// `‖a − b‖_F / ‖b‖_F`.
pub fn relative_error(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> f64 {
    let diff: f64 = a.iter().zip(b.iter()).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm).sqrt()
}

/// MLX f32 matmul of `m×k` by `k×n` against ndarray in f64.
pub fn matmul_check(m: i32, k: i32, n: i32, seed: u64) -> Result<Check> {
    let a = normal(&[m, k], seed)?;
    let b = normal(&[k, n], seed.wrapping_add(1))?;
    let c = a.matmul(&b)?;
    let reference = to_host_2d(&a, "a")?.dot(&to_host_2d(&b, "b")?);
    Ok(Check {
        name: format!("matmul f32 {m}x{k}x{n}"),
        measure: "‖C−C₆₄‖/‖C₆₄‖ vs ndarray f64",
        error: relative_error(to_host_2d(&c, "c")?.view(), reference.view()),
        tolerance: 1e-5,
    })
}

/// SVD of an `m×n` matrix on MLX's CPU stream: reconstruction and orthogonality.
pub fn svd_check(m: i32, n: i32, seed: u64) -> Result<[Check; 2]> {
    let a = normal(&[m, n], seed)?;
    let (u, s, vt) = mlx_rs::with_stream(&Stream::cpu(), || linalg::svd(&a))?;
    let (a, u, s, vt) = (
        to_host_2d(&a, "a")?,
        to_host_2d(&u, "u")?,
        to_host_1d(&s, "s")?,
        to_host_2d(&vt, "vt")?,
    );
    let k = s.len();
    let uk = u.slice(ndarray::s![.., ..k]).to_owned();
    let vk = vt.slice(ndarray::s![..k, ..]).to_owned();
    let scaled = &uk * &ndarray::Array1::from(s).insert_axis(ndarray::Axis(0));
    let rebuilt = scaled.dot(&vk);
    let gram = uk.t().dot(&uk);
    let ortho = gram
        .indexed_iter()
        .map(|((i, j), v)| (v - if i == j { 1.0 } else { 0.0 }).abs())
        .fold(0.0, f64::max);
    Ok([
        Check {
            name: format!("svd {m}x{n} (cpu stream)"),
            measure: "‖A−UΣVᵀ‖/‖A‖",
            error: relative_error(rebuilt.view(), a.view()),
            tolerance: 1e-5,
        },
        Check {
            name: format!("svd {m}x{n} (cpu stream)"),
            measure: "max |UᵀU−I|",
            error: ortho,
            tolerance: 1e-5,
        },
    ])
}

/// 4-bit, group-64 affine quantization of an `out×inp` weight and
/// `quantized_matmul` with a `batch×inp` input.
pub fn quantized_matmul_check(out: i32, inp: i32, batch: i32, seed: u64) -> Result<[Check; 2]> {
    const GROUP: i32 = 64;
    const BITS: i32 = 4;
    let w = normal(&[out, inp], seed)?;
    let x = normal(&[batch, inp], seed.wrapping_add(1))?;
    let (wq, scales, biases) = ops::quantize(&w, GROUP, BITS)?;
    let deq = ops::dequantize(&wq, &scales, &biases, GROUP, BITS)?;
    let y = ops::quantized_matmul(&x, &wq, &scales, &biases, true, GROUP, BITS)?;

    let (w, x, deq, y) = (
        to_host_2d(&w, "w")?,
        to_host_2d(&x, "x")?,
        to_host_2d(&deq, "dequantized w")?,
        to_host_2d(&y, "quantized_matmul output")?,
    );
    let scales = to_host_2d(&scales, "scales")?;
    let y_deq = x.dot(&deq.t());
    let y_full = x.dot(&w.t());

    let mean_s2 = scales.iter().map(|s| s * s).sum::<f64>() / scales.len() as f64;
    let rms_w = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    let predicted = (mean_s2 / 12.0).sqrt() / rms_w;
    let measured = relative_error(y.view(), y_full.view());
    Ok([
        Check {
            name: format!("quantized_matmul q{BITS} g{GROUP} {batch}x{inp}x{out}"),
            measure: "kernel vs x·dequant(W)ᵀ in f64",
            error: relative_error(y.view(), y_deq.view()),
            tolerance: 1e-5,
        },
        Check {
            name: format!("quantized_matmul q{BITS} g{GROUP} {batch}x{inp}x{out}"),
            measure: "‖y−xWᵀ‖/‖xWᵀ‖ ÷ rounding-noise model",
            error: measured / predicted,
            tolerance: 1.25,
        },
    ])
}

/// `f(W) = Σ tanh(X·W)²` on the host in f64.
fn tanh_sq_sum(x: &Array2<f64>, w: &Array2<f64>) -> f64 {
    x.dot(w).iter().map(|v| v.tanh().powi(2)).sum()
}

/// `value_and_grad` against central finite differences in f64.
pub fn grad_check(seed: u64) -> Result<Check> {
    let x = normal(&[6, 5], seed)?;
    let w = normal(&[5, 4], seed.wrapping_add(1))?;
    let f = |args: &[Array]| -> std::result::Result<Vec<Array>, mlx_rs::error::Exception> {
        let t = ops::tanh(x.matmul(&args[0])?)?;
        Ok(vec![t.square()?.sum(None)?])
    };
    let (values, grads) = transforms::value_and_grad(f)(std::slice::from_ref(&w))?;
    let grad = to_host_2d(&grads[0], "gradient")?;
    let value = to_host_1d(&values[0], "value")?
        .first()
        .copied()
        .unwrap_or(f64::NAN);

    let (xh, wh) = (to_host_2d(&x, "x")?, to_host_2d(&w, "w")?);
    let h = 1e-6;
    let mut fd = Array2::<f64>::zeros(wh.raw_dim());
    for ((i, j), g) in fd.indexed_iter_mut() {
        let (mut plus, mut minus) = (wh.clone(), wh.clone());
        plus[(i, j)] += h;
        minus[(i, j)] -= h;
        *g = (tanh_sq_sum(&xh, &plus) - tanh_sq_sum(&xh, &minus)) / (2.0 * h);
    }
    let value_err = (value - tanh_sq_sum(&xh, &wh)).abs() / tanh_sq_sum(&xh, &wh);
    Ok(Check {
        name: "value_and_grad Σtanh(XW)² 6x5·5x4".into(),
        measure: "‖∇−∇_fd‖/‖∇_fd‖ (+ value error)",
        error: relative_error(grad.view(), fd.view()) + value_err,
        tolerance: 1e-5,
    })
}
