//! Writing GGUF: [`GgufWriter`] plans the file (metadata, tensor infos), then
//! [`DataWriter`] / [`FileWriter`] stream the tensor data in order with padding.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use forge_quant::GgmlType;

use crate::file::GgufFile;
use crate::format::{self, ALIGNMENT_KEY, MAX_TENSOR_NAME_LEN, VERSION};
use crate::metadata::Metadata;
use crate::tensor::TensorInfo;
use crate::value::Value;
use crate::{Error, Result};

/// The plan of a GGUF file: version, metadata (in order) and tensor infos (in
/// order). Offsets are computed when writing starts: each tensor follows the
/// previous one, padded to the alignment, as llama.cpp and gguf-py lay them out.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Metadata,
    tensors: Vec<TensorInfo>,
    names: HashSet<String>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty GGUF v3 plan with the default alignment.
    pub fn new() -> Self {
        Self {
            version: VERSION,
            metadata: Metadata::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
        }
    }

    /// The plan of an existing file: its version, metadata and tensor infos, in
    /// order. Writing it and streaming each tensor's data reproduces a file laid
    /// out the llama.cpp way byte for byte.
    pub fn from_file<D: AsRef<[u8]>>(file: &GgufFile<D>) -> Self {
        let tensors = file.tensor_infos().to_vec();
        let names = tensors.iter().map(|t| t.name.clone()).collect();
        Self {
            version: file.version(),
            metadata: file.metadata().clone(),
            tensors,
            names,
        }
    }

    /// Writes GGUF version `version` (2 or 3; both share one layout).
    pub fn with_version(mut self, version: u32) -> Result<Self> {
        if !(2..=3).contains(&version) {
            return Err(Error::InvalidWrite(format!(
                "gguf version {version}: only 2 and 3 are written"
            )));
        }
        self.version = version;
        Ok(self)
    }

    /// Sets `general.alignment` (a non-zero power of two).
    pub fn with_alignment(mut self, alignment: u32) -> Result<Self> {
        let value = Value::U32(alignment);
        format::alignment_from(&value)
            .map_err(|reason| Error::InvalidWrite(format!("`{ALIGNMENT_KEY}` {reason}")))?;
        self.metadata.insert(ALIGNMENT_KEY, value);
        Ok(self)
    }

    /// Sets metadata `key` (an existing key keeps its place).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Adds a tensor; `shape` is in GGML order (row length first). Errors for a
    /// duplicate or too long name, more than 4 dimensions, a zero dimension, an
    /// overflowing element count or a row that is not a whole number of blocks.
    pub fn with_tensor(
        mut self,
        name: impl Into<String>,
        shape: impl Into<Vec<u64>>,
        ggml_type: GgmlType,
    ) -> Result<Self> {
        let name = name.into();
        let shape = shape.into();
        if name.len() as u64 > MAX_TENSOR_NAME_LEN {
            return Err(Error::InvalidWrite(format!(
                "tensor name `{name}` is {} bytes long, the limit is {MAX_TENSOR_NAME_LEN}",
                name.len()
            )));
        }
        if self.names.contains(&name) {
            return Err(Error::InvalidWrite(format!(
                "duplicate tensor name `{name}`"
            )));
        }
        let byte_len = format::tensor_byte_len(&shape, ggml_type).map_err(|reason| {
            Error::InvalidWrite(format!(
                "tensor `{name}` has invalid shape {shape:?}: {reason}"
            ))
        })?;
        self.names.insert(name.clone());
        self.tensors.push(TensorInfo {
            name,
            shape,
            ggml_type,
            offset: 0,
            byte_len,
        });
        Ok(self)
    }

    /// The metadata so far.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata, to edit in place.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Writes the header, metadata, tensor infos and padding to `sink`; the
    /// returned [`DataWriter`] takes the tensor data in order.
    pub fn write_to<W: Write>(self, mut sink: W) -> Result<DataWriter<W>> {
        let alignment = match self.metadata.value(ALIGNMENT_KEY) {
            Some(v) => format::alignment_from(v)
                .map_err(|reason| Error::InvalidWrite(format!("`{ALIGNMENT_KEY}` {reason}")))?,
            None => u64::from(format::DEFAULT_ALIGNMENT),
        };
        let mut tensors = self.tensors;
        let mut next = 0u64;
        for t in &mut tensors {
            t.offset = next;
            next = t
                .byte_len
                .checked_add(next)
                .and_then(|end| format::align_up(end, alignment))
                .ok_or_else(|| {
                    Error::InvalidWrite("total tensor data size overflows".to_string())
                })?;
        }
        let header = format::encode_header(self.version, &self.metadata, &tensors)?;
        sink.write_all(&header).map_err(Error::Write)?;
        let len = header.len() as u64;
        // The alignment is at most MAX_ALIGNMENT, so this cannot overflow.
        let padded = format::align_up(len, alignment).unwrap_or(len);
        write_zeros(&mut sink, padded - len)?;
        Ok(DataWriter {
            sink,
            tensors,
            next: 0,
            alignment,
            pos: 0,
        })
    }

    /// Creates `path` atomically: everything is written to a temporary sibling
    /// file, which [`FileWriter::finish`] syncs and renames over `path`.
    pub fn create(self, path: impl AsRef<Path>) -> Result<FileWriter> {
        let path = path.as_ref().to_path_buf();
        let temp = temp_sibling(&path)?;
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(&temp, e))?;
        let mut out = FileWriter {
            inner: None,
            temp,
            path,
        };
        let inner = self
            .write_to(BufWriter::with_capacity(1 << 20, file))
            .map_err(|e| out.map_err(e))?;
        out.inner = Some(inner);
        Ok(out)
    }
}

/// Streams tensor data after the header, in tensor order, padding each tensor
/// to the alignment. Get one from [`GgufWriter::write_to`].
#[derive(Debug)]
pub struct DataWriter<W: Write> {
    sink: W,
    tensors: Vec<TensorInfo>,
    next: usize,
    alignment: u64,
    pos: u64,
}

/// Writes `n` zero bytes without allocating them.
fn write_zeros(sink: &mut impl Write, mut n: u64) -> Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        sink.write_all(&ZEROS[..k]).map_err(Error::Write)?;
        n -= k as u64;
    }
    Ok(())
}

impl<W: Write> DataWriter<W> {
    /// The tensor infos with their final offsets.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor whose data is expected next, if any.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.next)
    }

    fn expect_next(&self) -> Result<&TensorInfo> {
        self.next_tensor().ok_or_else(|| {
            Error::InvalidWrite(format!(
                "all {} tensors are already written",
                self.tensors.len()
            ))
        })
    }

    /// Writes the data of the next tensor; `data` must be exactly its
    /// [`byte_len`](TensorInfo::byte_len).
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        let info = self.expect_next()?;
        if data.len() as u64 != info.byte_len {
            return Err(Error::InvalidWrite(format!(
                "tensor `{}` takes {} bytes of data, got {}",
                info.name,
                info.byte_len,
                data.len()
            )));
        }
        self.sink.write_all(data).map_err(Error::Write)?;
        self.end_tensor()
    }

    /// Copies the data of the next tensor from `reader`: exactly
    /// [`byte_len`](TensorInfo::byte_len) bytes are read; a reader that ends
    /// sooner is an error.
    pub fn copy_tensor(&mut self, mut reader: impl Read) -> Result<()> {
        let info = self.expect_next()?;
        let (name, len) = (info.name.clone(), info.byte_len);
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        while done < len {
            let want = usize::try_from(len - done)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(Error::InvalidWrite(format!(
                        "data for tensor `{name}` ended after {done} of {len} bytes"
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::ReadData {
                        tensor: name,
                        source,
                    });
                }
            };
            self.sink.write_all(&buf[..n]).map_err(Error::Write)?;
            done += n as u64;
        }
        self.end_tensor()
    }

    fn end_tensor(&mut self) -> Result<()> {
        let info = &self.tensors[self.next];
        let end = info.offset + info.byte_len;
        // Offsets were laid out with checked arithmetic, so this cannot overflow.
        let padded = format::align_up(end, self.alignment).unwrap_or(end);
        write_zeros(&mut self.sink, padded - end)?;
        self.pos = padded;
        self.next += 1;
        Ok(())
    }

    /// Checks every tensor was written, flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        if let Some(info) = self.next_tensor() {
            return Err(Error::InvalidWrite(format!(
                "only {} of {} tensors written; `{}` is missing its data",
                self.next,
                self.tensors.len(),
                info.name
            )));
        }
        self.sink.flush().map_err(Error::Write)?;
        Ok(self.sink)
    }

    /// Bytes of the data section written so far (padding included).
    pub fn data_written(&self) -> u64 {
        self.pos
    }
}

/// A GGUF file being written atomically; see [`GgufWriter::create`]. Dropping
/// it without [`finish`](FileWriter::finish) removes the temporary file and
/// leaves `path` untouched.
#[derive(Debug)]
pub struct FileWriter {
    inner: Option<DataWriter<BufWriter<File>>>,
    temp: PathBuf,
    path: PathBuf,
}

impl FileWriter {
    fn map_err(&self, e: Error) -> Error {
        match e {
            Error::Write(source) => Error::io(&self.path, source),
            e => e,
        }
    }

    fn inner(&mut self) -> Result<&mut DataWriter<BufWriter<File>>> {
        self.inner.as_mut().ok_or_else(|| {
            Error::InvalidWrite(format!("{} is already finished", self.path.display()))
        })
    }

    /// The tensor infos with their final offsets.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        self.inner.as_ref().map_or(&[], |w| w.tensor_infos())
    }

    /// The tensor whose data is expected next, if any.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.inner.as_ref()?.next_tensor()
    }

    /// See [`DataWriter::write_tensor`].
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        let r = self.inner()?.write_tensor(data);
        r.map_err(|e| self.map_err(e))
    }

    /// See [`DataWriter::copy_tensor`].
    pub fn copy_tensor(&mut self, reader: impl Read) -> Result<()> {
        let r = self.inner()?.copy_tensor(reader);
        r.map_err(|e| self.map_err(e))
    }

    /// Checks every tensor was written, syncs the temporary file to disk and
    /// renames it to the final path.
    pub fn finish(mut self) -> Result<()> {
        let writer = self.inner.take().ok_or_else(|| {
            Error::InvalidWrite(format!("{} is already finished", self.path.display()))
        })?;
        let buffered = writer.finish().map_err(|e| self.map_err(e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        // Make the rename itself durable; not every platform can sync a directory.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all();
        }
        self.temp = PathBuf::new();
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn temp_sibling(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidWrite(format!("{} does not name a file", path.display())))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(".{}.tmp-{}-{n}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(temp_name))
}
