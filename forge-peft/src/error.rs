//! The crate's error type.

use std::path::PathBuf;

/// Errors from `forge-peft`.
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
    /// An MLX operation failed.
    #[error("mlx: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
    /// The model crate failed (loading, tokenizing, configuration).
    #[error(transparent)]
    Model(#[from] forge_model::Error),
    /// A JSON file could not be parsed or has the wrong shape.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A TOML configuration could not be parsed.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What was wrong (with the key path when known).
        message: String,
    },
    /// A safetensors file is malformed or lacks a tensor.
    #[error("{path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What was wrong, naming the tensor.
        message: String,
    },
    /// A tensor has an unexpected shape.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its shape.
        found: Vec<i32>,
        /// The expected shape.
        expected: Vec<i32>,
    },
    /// An option has an invalid value.
    #[error("`{name}` is {found}, expected {expected}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// The value found.
        found: String,
        /// What is accepted.
        expected: String,
    },
    /// A target pattern is not a valid regular expression.
    #[error("target pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The regex error.
        message: String,
    },
    /// No module matched the target patterns.
    #[error(
        "no module matched the targets {patterns:?} (module names look like `model.layers.0.self_attn.q_proj`)"
    )]
    NoTargets {
        /// The patterns.
        patterns: Vec<String>,
    },
    /// A dataset file has a bad line.
    #[error("{path}:{line}: {message}")]
    Dataset {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// Training diverged and was stopped.
    #[error(
        "training diverged at step {step}: {reason}; last good checkpoint: {}",
        checkpoint.as_ref().map_or_else(|| "none".to_string(), |p| p.display().to_string())
    )]
    Diverged {
        /// The optimizer step that diverged.
        step: usize,
        /// What was seen (NaN, inf, spike with numbers).
        reason: String,
        /// The last checkpoint written before it, kept on disk.
        checkpoint: Option<PathBuf>,
    },
    /// The operation is not supported for this adapter or layout.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    #[allow(dead_code)] // used by `save` and the trainer
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        name: &'static str,
        found: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidOption {
            name,
            found: found.to_string(),
            expected: expected.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
