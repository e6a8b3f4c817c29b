//! The facade's error type: every sub-crate's error, converted.

use std::path::PathBuf;

/// Errors from any Forge stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From the MLX layer.
    #[error(transparent)]
    Mlx(#[from] forge_mlx::Error),
    /// From repository mining.
    #[error(transparent)]
    Miner(#[from] forge_miner::Error),
    /// From the model.
    #[error(transparent)]
    Model(#[from] forge_model::Error),
    /// From adapters or training.
    #[error(transparent)]
    Peft(#[from] forge_peft::Error),
    /// From quantization.
    #[error(transparent)]
    Quant(#[from] forge_quant::Error),
    /// From evaluation.
    #[error(transparent)]
    Judge(#[from] forge_judge::Error),
    /// From GGUF reading, writing or export.
    #[error(transparent)]
    Gguf(#[from] forge_gguf::Error),
    /// A smoke check of the MLX build failed.
    #[error("mlx smoke check failed: {0}")]
    SmokeFailed(String),
    /// `forge.toml` is malformed or a key has a bad value.
    #[error("{}: {}{message}", path.display(), if key.is_empty() { String::new() } else { format!("key `{key}`: ") })]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The key (`train.steps`), empty when the error is not about one key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON artifact (a manifest, results) is malformed.
    #[error("{}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde said.
        message: String,
    },
    /// The registry database failed.
    #[error("registry {}: {message}", path.display())]
    Registry {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Another process holds the pipeline lock.
    #[error("{}: another pipeline is running (pid {pid}, since {since}); wait for it or stop it", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's process id, as written in the file.
        pid: u32,
        /// When it took the lock, as written in the file.
        since: String,
    },
    /// A git operation failed.
    #[error("git {}: {message}", path.display())]
    Git {
        /// The repository.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A pipeline stage failed for a reason of its own (no data, no held-out unit, …).
    #[error("stage {stage}: {message}")]
    Stage {
        /// The stage (`mine`, `train`, …).
        stage: &'static str,
        /// What happened.
        message: String,
    },
    /// Drawing a plot failed.
    #[error("plot {}: {message}", path.display())]
    Plot {
        /// The image being written.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A rollback or status request names something the registry does not have.
    #[error("{0}")]
    NotFound(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
