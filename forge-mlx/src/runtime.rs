//! What MLX runs on here: default device and the BLAS that serves its CPU matmul.

use std::fmt;

use mlx_rs::{Device, DeviceType};

/// The BLAS library MLX's CPU backend ends up calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlasBackend {
    /// OpenBLAS (what `cargo xtask setup` links on Linux).
    OpenBlas(String),
    /// Apple's Accelerate framework (macOS).
    Accelerate,
    /// Only the reference (netlib) BLAS bundled with the PyPI MLX wheel: about
    /// 9x slower; the setup did not link OpenBLAS into this binary.
    Reference(String),
    /// No BLAS library could be identified.
    Unknown,
}

impl fmt::Display for BlasBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpenBlas(path) => write!(f, "OpenBLAS ({path})"),
            Self::Accelerate => write!(f, "Accelerate"),
            Self::Reference(path) => write!(f, "reference BLAS only ({path}) - slow"),
            Self::Unknown => write!(f, "unknown"),
        }
    }
}

/// A summary of the MLX runtime in this process.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// The default device MLX computes on (e.g. `cpu:0`, `gpu:0`).
    pub default_device: String,
    /// Whether a GPU device (Metal or CUDA) is the default.
    pub gpu: bool,
    /// The BLAS serving CPU matmuls.
    pub blas: BlasBackend,
    /// Where `libmlx` was loaded from, when it is a shared library.
    pub libmlx: Option<String>,
}

impl fmt::Display for RuntimeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {}, BLAS {}", self.default_device, self.blas)?;
        if let Some(lib) = &self.libmlx {
            write!(f, ", libmlx {lib}")?;
        }
        Ok(())
    }
}

/// Shared libraries mapped into this process (Linux: `/proc/self/maps`).
fn mapped_libraries() -> Vec<String> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains(".so"))
        .map(str::to_owned)
        .collect();
    libs.dedup();
    libs
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Classifies the BLAS from the libraries mapped into the process. Symbol
/// lookup takes the first provider in load order, and the executable's direct
/// dependencies (where the setup puts OpenBLAS) precede libmlx's own.
fn classify_blas(libs: &[String]) -> BlasBackend {
    if cfg!(target_vendor = "apple") {
        return BlasBackend::Accelerate;
    }
    if let Some(p) = libs
        .iter()
        .find(|p| file_name(p).starts_with("libopenblas"))
    {
        return BlasBackend::OpenBlas(p.clone());
    }
    if let Some(p) = libs.iter().find(|p| file_name(p).starts_with("libblas")) {
        return BlasBackend::Reference(p.clone());
    }
    BlasBackend::Unknown
}

/// Describes the MLX runtime of this process.
pub fn runtime_info() -> RuntimeInfo {
    let device = Device::try_default().unwrap_or_else(|_| Device::cpu());
    let gpu = matches!(device.get_type(), Ok(DeviceType::Gpu));
    let default_device = format!(
        "{}:{}",
        if gpu { "gpu" } else { "cpu" },
        device.get_index().unwrap_or(0)
    );
    let libs = mapped_libraries();
    let libmlx = libs
        .iter()
        .find(|p| file_name(p).starts_with("libmlx.so"))
        .cloned();
    RuntimeInfo {
        default_device,
        gpu,
        blas: classify_blas(&libs),
        libmlx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(target_vendor = "apple"))]
    fn openblas_wins_over_reference_blas() {
        let libs = vec![
            "/x/mlx_cpu.libs/libblas-1a2b.so.3.10.0".to_string(),
            "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0".to_string(),
        ];
        assert!(matches!(classify_blas(&libs), BlasBackend::OpenBlas(_)));
        assert!(matches!(
            classify_blas(&libs[..1]),
            BlasBackend::Reference(_)
        ));
        assert_eq!(classify_blas(&[]), BlasBackend::Unknown);
    }
}
