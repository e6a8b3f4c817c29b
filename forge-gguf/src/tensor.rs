//! Tensor infos and tensor views.

use forge_quant::GgmlType;

/// A tensor's entry in the tensor-info table: name, shape, type, where its data
/// is and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub(crate) name: String,
    pub(crate) shape: Vec<u64>,
    pub(crate) ggml_type: GgmlType,
    pub(crate) offset: u64,
    pub(crate) byte_len: u64,
}

impl TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shape in GGML order: the fastest-varying dimension (row length)
    /// first, as stored in the file and shown by gguf-py.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The element type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Offset of the data from the start of the data section (a multiple of
    /// the alignment).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the data in bytes.
    pub fn byte_len(&self) -> u64 {
        self.byte_len
    }

    /// Number of elements (the product of the shape; validated not to overflow).
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A tensor of a [`GgufFile`](crate::GgufFile): its info and its data, borrowed
/// from the file (for an opened file, straight from the memory map).
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    pub(crate) index: usize,
    pub(crate) info: &'a TensorInfo,
    pub(crate) data: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// Position in the tensor-info table (file order).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The info.
    pub fn info(&self) -> &'a TensorInfo {
        self.info
    }

    /// The name.
    pub fn name(&self) -> &'a str {
        &self.info.name
    }

    /// The shape, GGML order (see [`TensorInfo::shape`]).
    pub fn shape(&self) -> &'a [u64] {
        &self.info.shape
    }

    /// The element type.
    pub fn ggml_type(&self) -> GgmlType {
        self.info.ggml_type
    }

    /// The raw data bytes, exactly [`TensorInfo::byte_len`] long.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}
