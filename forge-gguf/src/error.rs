//! The crate's error type.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a GGUF input a problem was found: the file (when reading a file)
/// and the byte offset from the start of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, when the input is a file.
    pub path: Option<PathBuf>,
    /// Byte offset from the start of the input.
    pub offset: u64,
}

impl Location {
    pub(crate) fn at(offset: u64) -> Self {
        Self { path: None, offset }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: byte {}", path.display(), self.offset),
            None => write!(f, "byte {}", self.offset),
        }
    }
}

/// Errors from `forge-gguf`.
///
/// Errors about a malformed input carry a [`Location`] (file path and byte
/// offset) and are printed as `model.gguf: byte 123: what is wrong`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to a caller-provided sink failed.
    #[error("writing gguf output: {0}")]
    Write(#[source] std::io::Error),
    /// Reading tensor data from a caller-provided reader failed.
    #[error("reading data for tensor `{tensor}`: {source}")]
    ReadData {
        /// The tensor being written.
        tensor: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    // ---- malformed input ----
    /// The input ended before a field could be read.
    #[error("{at}: truncated: {what} needs {needed} bytes, {available} left")]
    Truncated {
        /// Where the field starts.
        at: Location,
        /// The field.
        what: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// The input does not start with `GGUF`.
    #[error(
        "{at}: bad magic {} ({}), expected \"GGUF\" (47 47 55 46)",
        quoted(found),
        hex(found)
    )]
    BadMagic {
        /// Where the magic is (byte 0).
        at: Location,
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The file is a big-endian GGUF.
    #[error("{at}: big-endian gguf (version {version} byte-swapped) is not supported")]
    BigEndian {
        /// Where the version is.
        at: Location,
        /// The version, read big-endian.
        version: u32,
    },
    /// A GGUF version this crate does not read.
    #[error("{at}: unsupported gguf version {version} (reads 2 and 3)")]
    UnsupportedVersion {
        /// Where the version is.
        at: Location,
        /// The version found.
        version: u32,
    },
    /// A count in the header that the input could not possibly hold.
    #[error("{at}: {what} {count} cannot fit in the {available} bytes left")]
    ImplausibleCount {
        /// Where the count is.
        at: Location,
        /// `tensor count` or `metadata count`.
        what: &'static str,
        /// The count found.
        count: u64,
        /// Bytes left in the input after the header.
        available: u64,
    },
    /// A string longer than [`MAX_STRING_LEN`](crate::MAX_STRING_LEN) (or a
    /// key or tensor name longer than its own limit).
    #[error("{at}: {what} length {len} exceeds the limit of {max} bytes")]
    StringTooLong {
        /// Where the length is.
        at: Location,
        /// `string`, `key` or `tensor name`.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A string that is not UTF-8.
    #[error("{at}: {what} is not valid utf-8")]
    InvalidUtf8 {
        /// Where the string bytes start.
        at: Location,
        /// `string`, `key` or `tensor name`.
        what: &'static str,
    },
    /// An array longer than [`MAX_ARRAY_LEN`](crate::MAX_ARRAY_LEN).
    #[error("{at}: array length {len} exceeds the limit of {max} elements")]
    ArrayTooLong {
        /// Where the length is.
        at: Location,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`](crate::MAX_ARRAY_DEPTH).
    #[error("{at}: arrays nested deeper than {max} levels")]
    ArrayTooDeep {
        /// Where the too-deep array starts.
        at: Location,
        /// The limit.
        max: usize,
    },
    /// A metadata value type tag that GGUF does not define.
    #[error("{at}: unknown metadata value type {tag} for key `{key}`")]
    BadValueType {
        /// Where the tag is.
        at: Location,
        /// The key whose value it is.
        key: String,
        /// The tag found.
        tag: u32,
    },
    /// A bool stored as something other than 0 or 1.
    #[error("{at}: bool value {byte} for key `{key}` is neither 0 nor 1")]
    BadBool {
        /// Where the byte is.
        at: Location,
        /// The key whose value it is.
        key: String,
        /// The byte found.
        byte: u8,
    },
    /// The same metadata key twice.
    #[error("{at}: duplicate metadata key `{key}`")]
    DuplicateKey {
        /// Where the second occurrence starts.
        at: Location,
        /// The key.
        key: String,
    },
    /// `general.alignment` that is not a non-zero power of two, or not a u32.
    #[error("{at}: `general.alignment` {reason}")]
    BadAlignment {
        /// Where the value is.
        at: Location,
        /// What is wrong.
        reason: String,
    },
    /// The same tensor name twice.
    #[error("{at}: duplicate tensor name `{tensor}`")]
    DuplicateTensor {
        /// Where the second tensor info starts.
        at: Location,
        /// The name.
        tensor: String,
    },
    /// A tensor with more than [`MAX_DIMS`](crate::MAX_DIMS) dimensions.
    #[error("{at}: tensor `{tensor}` has {n_dims} dimensions, at most {max} allowed")]
    TooManyDims {
        /// Where `n_dims` is.
        at: Location,
        /// The tensor.
        tensor: String,
        /// The count found.
        n_dims: u32,
        /// The limit.
        max: usize,
    },
    /// A tensor shape that is zero in some dimension, overflows, or is not a
    /// whole number of blocks of its type.
    #[error("{at}: tensor `{tensor}` has invalid shape {shape:?}: {reason}")]
    BadShape {
        /// Where the tensor info starts.
        at: Location,
        /// The tensor.
        tensor: String,
        /// The shape (ggml order, fastest-varying first).
        shape: Vec<u64>,
        /// What is wrong.
        reason: String,
    },
    /// A GGML type id that forge-quant does not know.
    #[error("{at}: tensor `{tensor}` has unknown ggml type id {id}")]
    UnknownGgmlType {
        /// Where the type id is.
        at: Location,
        /// The tensor.
        tensor: String,
        /// The id found.
        id: u32,
    },
    /// A tensor data offset that is not a multiple of the alignment.
    #[error(
        "{at}: tensor `{tensor}` data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        /// Where the offset field is.
        at: Location,
        /// The tensor.
        tensor: String,
        /// The offset (relative to the data section).
        offset: u64,
        /// The alignment.
        alignment: u64,
    },
    /// Tensor data that does not lie inside the data section.
    #[error(
        "{at}: tensor `{tensor}` data [{offset}, {offset}+{len}) lies outside the data section of {data_len} bytes"
    )]
    TensorOutOfBounds {
        /// Where the offset field is.
        at: Location,
        /// The tensor.
        tensor: String,
        /// The offset (relative to the data section).
        offset: u64,
        /// The tensor's byte length.
        len: u64,
        /// Bytes in the data section.
        data_len: u64,
    },
    /// Two tensors whose data overlap.
    #[error("{at}: data of tensor `{tensor}` overlaps data of tensor `{other}`")]
    OverlappingTensors {
        /// Where the later tensor's offset field is.
        at: Location,
        /// The tensor with the larger offset.
        tensor: String,
        /// The tensor it overlaps.
        other: String,
    },

    // ---- typed metadata access ----
    /// A metadata key that is not in the file.
    #[error("metadata key `{key}` not found")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value of another type than the one asked for.
    #[error("metadata key `{key}` is {found}, not {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// The type asked for, with its article (`a u32`).
        expected: String,
        /// The type in the file, with its article (`a u64`).
        found: String,
    },

    // ---- writing ----
    /// A writer plan that cannot be written (bad name, shape, value, order).
    #[error("invalid gguf output: {0}")]
    InvalidWrite(String),

    // ---- export ----
    /// An export that cannot be done: a bad model description, tensor,
    /// tokenizer or adapter (the message names it).
    #[error("export: {0}")]
    Export(String),
}

impl Error {
    /// The location of a malformed-input error, if this is one.
    pub fn location(&self) -> Option<&Location> {
        use Error::*;
        match self {
            Truncated { at, .. }
            | BadMagic { at, .. }
            | BigEndian { at, .. }
            | UnsupportedVersion { at, .. }
            | ImplausibleCount { at, .. }
            | StringTooLong { at, .. }
            | InvalidUtf8 { at, .. }
            | ArrayTooLong { at, .. }
            | ArrayTooDeep { at, .. }
            | BadValueType { at, .. }
            | BadBool { at, .. }
            | DuplicateKey { at, .. }
            | BadAlignment { at, .. }
            | DuplicateTensor { at, .. }
            | TooManyDims { at, .. }
            | BadShape { at, .. }
            | UnknownGgmlType { at, .. }
            | MisalignedOffset { at, .. }
            | TensorOutOfBounds { at, .. }
            | OverlappingTensors { at, .. } => Some(at),
            Io { .. }
            | Write(_)
            | ReadData { .. }
            | MissingKey { .. }
            | WrongType { .. }
            | InvalidWrite(_)
            | Export(_) => None,
        }
    }

    /// Attaches the file path to a malformed-input error.
    pub(crate) fn in_file(mut self, file: &Path) -> Self {
        use Error::*;
        let at = match &mut self {
            Truncated { at, .. }
            | BadMagic { at, .. }
            | BigEndian { at, .. }
            | UnsupportedVersion { at, .. }
            | ImplausibleCount { at, .. }
            | StringTooLong { at, .. }
            | InvalidUtf8 { at, .. }
            | ArrayTooLong { at, .. }
            | ArrayTooDeep { at, .. }
            | BadValueType { at, .. }
            | BadBool { at, .. }
            | DuplicateKey { at, .. }
            | BadAlignment { at, .. }
            | DuplicateTensor { at, .. }
            | TooManyDims { at, .. }
            | BadShape { at, .. }
            | UnknownGgmlType { at, .. }
            | MisalignedOffset { at, .. }
            | TensorOutOfBounds { at, .. }
            | OverlappingTensors { at, .. } => at,
            _ => return self,
        };
        at.path = Some(file.to_path_buf());
        self
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
