#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod error;
mod runtime;
mod shim;
pub mod smoke;

pub use error::{Error, Result};
pub use mlx_rs;
pub use runtime::{BlasBackend, RuntimeInfo, runtime_info};
