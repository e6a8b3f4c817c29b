//! [`GgufFile`]: a parsed GGUF file over a memory map or any byte buffer.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::format::{self, Parsed};
use crate::metadata::Metadata;
use crate::tensor::{Tensor, TensorInfo};
use crate::value::{FromValue, Value};
use crate::{Error, Result};

/// A read-only memory map of a file: the default storage of [`GgufFile`].
#[derive(Debug)]
pub struct Mapped {
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

/// A parsed GGUF file.
///
/// Parsing reads the header, metadata and tensor infos and validates them
/// against the bytes available; tensor data is never copied: [`Tensor::data`]
/// borrows from the storage `D` (a memory map for [`GgufFile::open`], any
/// `AsRef<[u8]>` for [`GgufFile::from_bytes`]).
#[derive(Debug)]
pub struct GgufFile<D = Mapped> {
    data: D,
    parsed: Parsed,
    path: Option<PathBuf>,
}

impl GgufFile<Mapped> {
    /// Memory-maps and parses the file at `path`. Errors name the path and,
    /// for malformed files, the byte offset of the problem.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only. Like every mmap-based reader (llama.cpp,
        // candle, safetensors) we rely on the file not being truncated or
        // rewritten while it is open; Forge writes GGUF files atomically (temp +
        // rename), which never modifies a mapped file in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let parsed = format::parse(&map).map_err(|e| e.in_file(path))?;
        Ok(Self {
            data: Mapped { map },
            parsed,
            path: Some(path.to_path_buf()),
        })
    }
}

impl<D: AsRef<[u8]>> GgufFile<D> {
    /// Parses a GGUF image held in memory (`Vec<u8>`, `&[u8]`, ...), with the
    /// same parser and checks as [`open`](GgufFile::open).
    pub fn from_bytes(data: D) -> Result<Self> {
        let parsed = format::parse(data.as_ref())?;
        Ok(Self {
            data,
            parsed,
            path: None,
        })
    }

    /// The file's path, when opened from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The whole file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.as_ref()
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.parsed.version
    }

    /// The data alignment (`general.alignment`, 32 when absent).
    pub fn alignment(&self) -> u64 {
        self.parsed.alignment
    }

    /// Byte offset of the data section from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.parsed.data_offset
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.parsed.metadata
    }

    /// Typed metadata access; see [`Metadata::get`].
    pub fn get<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T> {
        self.parsed.metadata.get(key)
    }

    /// Typed metadata access, `Ok(None)` when absent; see [`Metadata::get_opt`].
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        self.parsed.metadata.get_opt(key)
    }

    /// The untyped value of `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.parsed.metadata.value(key)
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.parsed.tensors.len()
    }

    /// The tensor infos, in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.parsed.tensors
    }

    /// The tensor named `name`, with its data.
    pub fn tensor(&self, name: &str) -> Option<Tensor<'_>> {
        self.parsed
            .tensor_index
            .get(name)
            .map(|&i| self.tensor_at(i))
    }

    /// Every tensor with its data, in file order.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = Tensor<'_>> {
        (0..self.parsed.tensors.len()).map(|i| self.tensor_at(i))
    }

    fn tensor_at(&self, index: usize) -> Tensor<'_> {
        let info = &self.parsed.tensors[index];
        // The parser checked data_offset + offset + byte_len <= file length.
        let start = (self.parsed.data_offset + info.offset) as usize;
        let end = start + info.byte_len as usize;
        Tensor {
            index,
            info,
            data: &self.data.as_ref()[start..end],
        }
    }
}
