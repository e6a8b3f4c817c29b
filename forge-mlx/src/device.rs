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

/// Whether MLX's default device is a CUDA GPU — where MLX 0.32 has kernels
/// that Metal and the CPU lack (cuDNN's fused attention backward pass).
pub fn default_device_is_cuda() -> bool {
    let gpu = Device::try_default()
        .and_then(|d| d.get_type())
        .is_ok_and(|t| matches!(t, DeviceType::Gpu));
    gpu && gpu_backend() == Some(GpuBackend::Cuda)
}

/// The environment variable MLX's CUDA backend reads once, at its first
/// GPU operation, to record kernels into CUDA graphs (`1`, its default) or
/// launch them directly (`0`).
pub const CUDA_GRAPHS_ENV: &str = "MLX_USE_CUDA_GRAPHS";

/// Makes MLX's CUDA backend launch kernels directly instead of recording
/// them into CUDA graphs, unless the user set [`CUDA_GRAPHS_ENV`]. For
/// processes that train; call it before MLX's first GPU operation (the
/// variable is read once per process), e.g. first thing in `main`.
///
/// MLX 0.32 records every 100 operations into a CUDA graph and re-creates
/// the executable graph whenever the recorded one cannot be updated in
/// place, which a LoRA training step's graphs (cuBLAS calls captured as
/// child graphs) mostly cannot. Traced on an H200 (`examples/gpu_bench/
/// kernel_trace`), a SmolLM2-135M training step spent ~44 ms of its
/// ~114 ms on the host in `cudaGraphInstantiate`, `cudaGraphLaunch` and
/// `cudaGraphExecDestroy` while the GPU idled; with direct launches the
/// same step ran 2.1× faster and the Llama-1B-like step 1.2× faster.
/// Token-by-token decoding is the opposite case — the same small graph
/// every token, updated in place — and decoded 0.67–0.8× as fast with
/// direct launches, so generation keeps MLX's default (docs/benchmarks.md).
pub fn prefer_direct_cuda_launches() {
    if std::env::var_os(CUDA_GRAPHS_ENV).is_none() {
        // SAFETY: called at start-up, before the process starts threads
        // (see above); nothing reads or writes the environment concurrently
        // then (MLX reads this variable later, at its first GPU operation).
        unsafe { std::env::set_var(CUDA_GRAPHS_ENV, "0") };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn direct_launches_are_asked_for_only_when_the_user_did_not_choose() {
        // SAFETY: MLX tests run one at a time (`--test-threads=1`); nothing
        // else touches this variable in this test binary.
        unsafe { std::env::set_var(CUDA_GRAPHS_ENV, "1") };
        prefer_direct_cuda_launches();
        assert_eq!(std::env::var(CUDA_GRAPHS_ENV).as_deref(), Ok("1"));
        // SAFETY: as above.
        unsafe { std::env::remove_var(CUDA_GRAPHS_ENV) };
        prefer_direct_cuda_launches();
        assert_eq!(std::env::var(CUDA_GRAPHS_ENV).as_deref(), Ok("0"));
        // SAFETY: as above.
        unsafe { std::env::remove_var(CUDA_GRAPHS_ENV) };
    }

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
