//! The crate's error type.

use std::path::PathBuf;

/// Errors of the server, its index and its engines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A persisted index file is malformed.
    #[error("{path}: line {line}: {message}")]
    Index {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("invalid `{name}`: {message}")]
    Config {
        /// The option.
        name: &'static str,
        /// Why.
        message: String,
    },
    /// Binding or serving the socket failed.
    #[error("{addr}: {message}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The generation engine could not start or stopped.
    #[error("engine: {0}")]
    Engine(String),
    /// The model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] forge_model::Error),
    /// Mining the repository failed.
    #[error(transparent)]
    Miner(#[from] forge_miner::Error),
    /// Loading adapters failed.
    #[error(transparent)]
    Peft(#[from] forge_peft::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(name: &'static str, message: impl Into<String>) -> Self {
        Self::Config {
            name,
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
