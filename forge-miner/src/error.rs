//! The crate's error type.

use std::path::PathBuf;

/// Errors from `forge-miner`. Messages name the file (and line) that was bad.
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
    /// Walking the repository failed.
    #[error("{path}: walking the repository failed: {message}")]
    Walk {
        /// The directory or file being walked.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A tree-sitter grammar could not be loaded (ABI mismatch).
    #[error("language {language}: grammar could not be loaded: {message}")]
    Grammar {
        /// The language name.
        language: String,
        /// What tree-sitter said.
        message: String,
    },
    /// A file could not be parsed by tree-sitter at all (cancelled or timed out).
    #[error("{path}: tree-sitter returned no tree")]
    Parse {
        /// The repo-relative path.
        path: String,
    },
    /// A file's language is not registered.
    #[error("{path}: no registered language for this file")]
    UnknownLanguage {
        /// The repo-relative path.
        path: String,
    },
    /// A JSON record could not be encoded or decoded.
    #[error("{path}:{line}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the whole file is one JSON document).
        line: usize,
        /// What serde_json said.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Resolving a git revision or reading the repository failed.
    #[error("git {path}: {message}")]
    Git {
        /// The repository path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
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
