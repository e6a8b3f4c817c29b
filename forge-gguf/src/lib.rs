#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod dump;
mod error;
pub mod export;
mod file;
mod format;
mod metadata;
mod names;
mod tensor;
mod value;
mod writer;

pub use error::{Error, Location, Result};
pub use file::{GgufFile, Mapped};
pub use format::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_ARRAY_LEN,
    MAX_DIMS, MAX_KEY_LEN, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN, VERSION,
};
pub use metadata::Metadata;
pub use names::{
    NameArch, NameError, gguf_qk, gguf_to_hf, hf_to_gguf, permute_qk_rows, qk_permuted,
    unpermute_qk_rows,
};
pub use tensor::{Tensor, TensorInfo};
pub use value::{Array, FromValue, Value, ValueType};
pub use writer::{DataWriter, FileWriter, GgufWriter};

/// The GGML element types, from forge-quant (re-exported for convenience).
pub use forge_quant::GgmlType;
