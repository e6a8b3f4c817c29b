//! The crate's error type.

use std::path::PathBuf;

/// Errors from `forge-judge`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A language CodeBLEU or the runners do not support.
    #[error("unsupported language {0:?} (supported: python, rust)")]
    UnsupportedLanguage(String),
    /// An argument out of its range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The sandbox could not be set up (not a failure of the sample).
    #[error("sandbox: {0}")]
    Sandbox(String),
    /// A data file line that does not parse.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// The model failed to load, tokenize or run (feature `model`).
    #[cfg(feature = "model")]
    #[error(transparent)]
    Model(#[from] forge_model::Error),
    /// forge-peft failed: data, adapters, loss (feature `model`).
    #[cfg(feature = "model")]
    #[error(transparent)]
    Peft(#[from] forge_peft::Error),
    /// An MLX operation failed (feature `model`).
    #[cfg(feature = "model")]
    #[error("mlx: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
