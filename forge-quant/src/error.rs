//! The crate's error type.

use crate::GgmlType;

/// Errors from `forge-quant`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A GGML type id that ggml does not define (or that was removed).
    #[error("unknown ggml type id {0}")]
    UnknownType(u32),
    /// A type name that is not a GGML type.
    #[error("unknown ggml type name `{0}`")]
    UnknownTypeName(String),
    /// A row length that is not a whole number of blocks.
    #[error("{n} elements of {ty} is not a multiple of its block size {block}")]
    NotBlockAligned {
        /// The type.
        ty: GgmlType,
        /// The element count.
        n: u64,
        /// The block size.
        block: usize,
    },
    /// A byte size that does not fit in 64 bits.
    #[error("{n} elements of {ty} overflow a 64-bit byte size")]
    SizeOverflow {
        /// The type.
        ty: GgmlType,
        /// The element count.
        n: u64,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
