//! The crate's error type.

use std::path::PathBuf;

/// Errors from `forge-model`.
///
/// Every variant that comes from user data names the file, the tensor or the
/// configuration key that was wrong and what was expected instead.
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
    /// A JSON file (config, index, tokenizer config) did not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A required configuration key is absent.
    #[error("{path}: missing required key `{key}`")]
    MissingConfigKey {
        /// The configuration file (or `<memory>`).
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A configuration key holds a value Forge cannot use.
    #[error("{path}: `{key}` is {found}, expected {expected}")]
    InvalidConfig {
        /// The configuration file (or `<memory>`).
        path: PathBuf,
        /// The key.
        key: String,
        /// What was found.
        found: String,
        /// What was expected.
        expected: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A tensor has a dtype the loader does not convert.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, expected F32, F16 or BF16")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor's shape differs from the model's parameter.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The parameter's shape.
        expected: Vec<i32>,
        /// The tensor's shape.
        found: Vec<i32>,
    },
    /// The same tensor name appears twice in one checkpoint.
    #[error("{path}: tensor `{tensor}` appears more than once in the checkpoint")]
    DuplicateTensor {
        /// The file of the second occurrence.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// Checkpoint keys and model parameters do not match.
    #[error("{source_name}: {}", key_mismatch_message(missing, unexpected))]
    KeyMismatch {
        /// The checkpoint (folder or file).
        source_name: String,
        /// Model parameters the checkpoint lacks.
        missing: Vec<String>,
        /// Checkpoint tensors the model has no parameter for.
        unexpected: Vec<String>,
    },
    /// The tokenizer could not be loaded or failed to encode/decode.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file (or `<memory>`).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A chat template failed to compile or render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A generation or loading option is out of range.
    #[error("option `{name}` is {found}, expected {expected}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What was given.
        found: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A GGUF file could not be read (the message names the file and byte).
    #[error("{0}")]
    GgufFormat(#[from] forge_gguf::Error),
    /// A GGUF file holds something Forge cannot load.
    #[error("{path}: {message}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A GGUF tensor cannot be loaded (type, shape, data).
    #[error("{path}: tensor `{tensor}`: {message}")]
    GgufTensor {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        tensor: String,
        /// What was wrong.
        message: String,
    },
    /// The default model is not where it should be.
    #[error(
        "default model not found at {path}: run `cargo xtask model` to fetch it, or set \
         FORGE_DEFAULT_MODEL to a GGUF file"
    )]
    DefaultModelMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The requested feature is not built yet.
    #[error("{0}")]
    Unsupported(String),
    /// An MLX operation failed.
    #[error("mlx: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
}

fn key_mismatch_message(missing: &[String], unexpected: &[String]) -> String {
    fn list(keys: &[String]) -> String {
        const SHOWN: usize = 12;
        let mut s = keys
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if keys.len() > SHOWN {
            s.push_str(&format!(", … ({} more)", keys.len() - SHOWN));
        }
        s
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "{} missing tensor(s): {}",
            missing.len(),
            list(missing)
        ));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "{} unexpected tensor(s): {}",
            unexpected.len(),
            list(unexpected)
        ));
    }
    parts.join("; ")
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        key: impl Into<String>,
        found: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidConfig {
            path: path.into(),
            key: key.into(),
            found: found.into(),
            expected: expected.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
