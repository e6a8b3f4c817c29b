#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod device;
mod error;
mod runtime;
mod shim;
pub mod smoke;

pub use device::{
    CUDA_GRAPHS_ENV, DeviceChoice, GpuBackend, default_device_is_cuda, gpu_backend,
    prefer_direct_cuda_launches, select as select_device,
};
pub use error::{Error, Result};
pub use mlx_rs;
pub use runtime::{BlasBackend, RuntimeInfo, runtime_info};
