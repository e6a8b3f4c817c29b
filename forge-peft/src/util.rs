//! Small helpers: seeded random numbers, host copies of arrays, atomic writes.

use std::path::Path;

use mlx_rs::Array;

use crate::error::{Error, Result};

/// SplitMix64 (Steele, Lea & Flood 2014): a seedable generator whose output is
/// identical on every platform, so seeded initialisations do not depend on
/// MLX's RNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller).
    pub(crate) fn next_normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// FNV-1a hash, for per-module seeds derived from names.
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The array's values as f32 on the host (evaluates it).
pub(crate) fn host_f32(a: &Array) -> Result<Vec<f32>> {
    // Flattening copies a strided (e.g. transposed) array into row-major order.
    let a = a.as_type::<f32>()?.reshape(&[-1])?;
    a.eval()?;
    match a.try_as_slice::<f32>() {
        Ok(s) => Ok(s.to_vec()),
        Err(_) => {
            let c = a.add(mlx_rs::ops::zeros::<f32>(&[a.size() as i32])?)?;
            c.eval()?;
            Ok(c.try_as_slice::<f32>()
                .map_err(|e| crate::Error::Unsupported(format!("reading an array back: {e:?}")))?
                .to_vec())
        }
    }
}

/// The array's values as f64 on the host.
pub(crate) fn host_f64(a: &Array) -> Result<Vec<f64>> {
    Ok(host_f32(a)?.into_iter().map(f64::from).collect())
}

/// An f32 array from f64 host values.
pub(crate) fn from_f64(v: &[f64], shape: &[i32]) -> Array {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Array::from_slice(&f, shape)
}

#[allow(dead_code)] // used by `save` and the trainer
/// Writes `bytes` to a temporary sibling of `path`, then renames it over
/// `path`, so readers never see a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
