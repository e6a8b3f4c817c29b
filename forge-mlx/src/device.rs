//! Which device MLX computes on: the GPU when one is present (Metal on Apple
//! Silicon, CUDA with MLX's CUDA build on Linux), else the CPU.
//!
//! MLX's own default is the GPU whenever its build has a GPU backend; a
//! Linux build against `mlx-cpu` has none, so the default there is the CPU.
//! [`select`] makes the choice explicit — `--device cpu|gpu|auto` in the
//! `forge` CLI and the `FORGE_DEVICE` environment variable both end here —
//! and refuses `gpu` with a clear error when no GPU backend is available
//! (instead of MLX failing later, at the first kernel).

use std::fmt;
use std::str::FromStr;

use mlx_rs::{Device, DeviceType};

use crate::{Error, Result};

/// The environment variable that picks the device when no flag does.
pub const DEVICE_ENV: &str = "FORGE_DEVICE";

/// A device choice as the user writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The GPU when one is available, else the CPU.
    #[default]
    Auto,
    /// The CPU (MLX's CPU backend, OpenBLAS on Linux).
    Cpu,
    /// The GPU (Metal or CUDA); an error when there is none.
    Gpu,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "gpu" | "cuda" | "metal" => Ok(Self::Gpu),
            other => Err(Error::Device(format!(
                "unknown device `{other}`: expected cpu, gpu or auto"
            ))),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
        })
    }
}

/// The GPU backend this process's `libmlx` has and can use, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuBackend {
    /// Apple's Metal.
    Metal,
    /// NVIDIA's CUDA (MLX's CUDA build with a visible GPU).
    Cuda,
}

/// Which GPU backend is usable, asking the loaded `libmlx` (so swapping in
/// the CUDA build of `libmlx.so` at run time is enough).
pub fn gpu_backend() -> Option<GpuBackend> {
    let mut metal = false;
    let mut cuda = false;
    // SAFETY: both functions only write a bool through the pointer and
    // return a status code; they take no other state.
    let metal_ok = unsafe { mlx_sys::mlx_metal_is_available(&mut metal) } == 0;
    let cuda_ok = unsafe { mlx_sys::mlx_cuda_is_available(&mut cuda) } == 0;
    if metal_ok && metal {
        Some(GpuBackend::Metal)
    } else if cuda_ok && cuda {
        Some(GpuBackend::Cuda)
    } else {
        None
    }
}

/// Resolves `choice` (or, for [`DeviceChoice::Auto`], the `FORGE_DEVICE`
/// variable) against what is available, makes it MLX's default device and
/// returns it.
pub fn select(choice: DeviceChoice) -> Result<DeviceType> {
    let choice = match choice {
        DeviceChoice::Auto => match std::env::var(DEVICE_ENV) {
            Ok(v) => v
                .parse()
                .map_err(|e: Error| Error::Device(format!("{DEVICE_ENV}={v}: {e}")))?,
            Err(_) => DeviceChoice::Auto,
        },
        c => c,
    };
    let gpu = gpu_backend();
    let kind = match (choice, gpu) {
        (DeviceChoice::Cpu, _) | (DeviceChoice::Auto, None) => DeviceType::Cpu,
        (DeviceChoice::Gpu | DeviceChoice::Auto, Some(_)) => DeviceType::Gpu,
        (DeviceChoice::Gpu, None) => {
            return Err(Error::Device(
                "no GPU backend: this libmlx has neither Metal nor a usable CUDA device \
                 (on Linux run `cargo xtask setup --cuda` on a machine with an NVIDIA GPU, \
                 or use a `cargo xtask bundle-gpu` bundle)"
                    .into(),
            ));
        }
    };
    Device::set_default(&Device::new(kind, 0));
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices_and_names_the_bad_one() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Gpu);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("`tpu`"), "{err}");
    }

    #[test]
    fn cpu_is_always_selectable_and_gpu_only_with_a_backend() {
        assert!(matches!(
            select(DeviceChoice::Cpu).unwrap(),
            DeviceType::Cpu
        ));
        match gpu_backend() {
            Some(_) => {
                assert!(matches!(
                    select(DeviceChoice::Gpu).unwrap(),
                    DeviceType::Gpu
                ));
            }
            None => {
                let err = select(DeviceChoice::Gpu).unwrap_err().to_string();
                assert!(err.contains("no GPU backend"), "{err}");
            }
        }
        // Leave the process default as it would be on its own.
        select(DeviceChoice::Auto).unwrap();
    }
}
