#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod config;
pub mod dashboard;
pub mod demo;
mod error;
pub mod export;
pub mod lock;
pub mod pipeline;
mod project;
pub mod registry;
pub mod train;
mod util;
pub mod watch;

pub use error::{Error, Result};
pub use project::{Forge, Status};
pub use util::{sha256_file, sha256_hex, sha256_path, utc_timestamp};

/// The GGUF container and export ([`forge_gguf`]).
pub use forge_gguf as gguf;
/// Evaluation and the deployment gate ([`forge_judge`]).
pub use forge_judge as judge;
/// Repository mining and dataset building ([`forge_miner`]).
pub use forge_miner as miner;
/// The MLX layer ([`forge_mlx`]).
pub use forge_mlx as mlx;
/// Llama-family decoders on MLX ([`forge_model`]).
pub use forge_model as model;
/// Adapters and the trainer ([`forge_peft`]).
pub use forge_peft as peft;
/// Quantization formats ([`forge_quant`]).
pub use forge_quant as quant;

/// The handful of names most programs need.
pub mod prelude {
    pub use crate::config::{ForgeConfig, ForgeFile};
    pub use crate::demo::Demo;
    pub use crate::pipeline::{Observer, RunOptions, RunReport, RunStatus};
    pub use crate::registry::Registry;
    pub use crate::watch::{PollOutcome, Watcher};
    pub use crate::{Error, Forge, Result};
}
