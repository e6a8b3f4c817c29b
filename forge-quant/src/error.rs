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
    /// A buffer whose length does not match the element count and type.
    #[error("{what} for {ty} has the wrong length: expected {expected}, found {found}")]
    LengthMismatch {
        /// The type.
        ty: GgmlType,
        /// Which buffer, with its unit (`"byte buffer (bytes)"`, `"output (f32 elements)"`).
        what: &'static str,
        /// The length the other arguments call for.
        expected: u64,
        /// The length passed.
        found: u64,
    },
    /// An input that is not a whole number of rows.
    #[error("{n} elements of {ty} is not a whole number of rows of {n_per_row}")]
    NotRowAligned {
        /// The type.
        ty: GgmlType,
        /// The element count.
        n: u64,
        /// The row length asked for.
        n_per_row: u64,
    },
    /// A type this crate has no kernel for (i-quants, ternary, MXFP4, ...).
    #[error("{op} is not implemented for {ty}")]
    Unsupported {
        /// The type.
        ty: GgmlType,
        /// The operation (`"quantize"`, `"dequantize"`, `"matmul"`, ...).
        op: &'static str,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
