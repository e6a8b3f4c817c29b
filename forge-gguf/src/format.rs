//! The GGUF binary layout (versions 2 and 3), parsed and encoded here.
//!
//! Every integer and float is little-endian (big-endian GGUF files exist since
//! v3; they are recognised and refused).
//!
//! ```text
//! header        magic "GGUF" (47 47 55 46) | version: u32 | tensor_count: u64 | kv_count: u64
//! metadata      kv_count × { key: string | value_type: u32 | value }
//! tensor infos  tensor_count × { name: string | n_dims: u32 | dims: n_dims × u64
//!                              | ggml_type: u32 | offset: u64 }
//! padding       zeros up to the next multiple of the alignment
//! data section  tensor data; tensor i at data_start + offset_i; each offset a
//!               multiple of the alignment, zeros between tensors and after the last
//! ```
//!
//! * `string` is a u64 byte length followed by that many UTF-8 bytes (no NUL).
//! * `value` by type tag: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32,
//!   7 bool (one byte, 0 or 1), 8 string, 9 array, 10 u64, 11 i64, 12 f64.
//!   An array is `element_type: u32 | len: u64 | len × value`; arrays of arrays
//!   nest, and each inner array carries its own element type.
//! * The alignment is the metadata value `general.alignment` (a u32, a
//!   non-zero power of two), 32 when absent.
//! * `dims` are in GGML order: `dims[0]` is the fastest-varying (row) length.
//!   GGML allows at most 4 dimensions; the data length is
//!   `product(dims) / block_size × type_size` of the GGML type.
//! * Version 1 (u32 counts) is obsolete and refused; v2 and v3 share the
//!   layout above (v3 only added the big-endian variant).
//!
//! The parser works on a byte slice (an `mmap` of the file or any buffer) and
//! never trusts a length: every count is checked against the bytes left before
//! anything is allocated, and all size arithmetic is checked.

use std::collections::HashMap;

use forge_quant::GgmlType;

use crate::error::Location;
use crate::metadata::Metadata;
use crate::tensor::TensorInfo;
use crate::value::{Array, Value, ValueType};
use crate::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes by default.
pub const VERSION: u32 = 3;
/// The alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;
/// The metadata key holding the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Largest accepted `general.alignment` (16 MiB). Real files use 32 or 64; a
/// huge alignment in a tiny file would make every copy of it gigabytes long.
pub const MAX_ALIGNMENT: u32 = 1 << 24;
/// Longest metadata string value in bytes (16 MiB; chat templates are a few KiB).
pub const MAX_STRING_LEN: u64 = 16 << 20;
/// Longest metadata key in bytes (the GGUF spec's limit).
pub const MAX_KEY_LEN: u64 = 65_535;
/// Longest tensor name in bytes (GGML_MAX_NAME 64, including the NUL).
pub const MAX_TENSOR_NAME_LEN: u64 = 63;
/// Most elements in one metadata array (16 Mi; tokenizers have ~50k–260k).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Deepest nesting of arrays in arrays (a plain array is depth 1).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most dimensions of a tensor (GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;

/// Upper bound on elements pre-allocated from a count read from the input;
/// vectors grow past it only as elements are actually parsed.
const PREALLOC_CAP: usize = 1 << 16;
/// Smallest metadata entry: empty key (8) + type (4) + u8 value (1).
const MIN_KV_LEN: u64 = 13;
/// Smallest tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_LEN: u64 = 24;
/// Header: magic, version, two u64 counts.
const HEADER_LEN: u64 = 24;

/// A parsed GGUF header: everything but the tensor data.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub(crate) version: u32,
    pub(crate) metadata: Metadata,
    pub(crate) alignment: u64,
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) tensor_index: HashMap<String, usize>,
    pub(crate) data_offset: u64,
}

/// Parses and validates everything in `buf` up to the data section, and checks
/// that every tensor's data lies inside `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed> {
    let mut r = Reader { buf, pos: 0 };

    let magic: [u8; 4] = r.array("magic")?;
    if magic != MAGIC {
        return Err(Error::BadMagic {
            at: Location::at(0),
            found: magic,
        });
    }
    let raw_version: [u8; 4] = r.array("version")?;
    let version = u32::from_le_bytes(raw_version);
    let version_be = u32::from_be_bytes(raw_version);
    match version {
        2 | 3 => {}
        _ if version & 0xffff == 0 && (1..=3).contains(&version_be) => {
            return Err(Error::BigEndian {
                at: Location::at(4),
                version: version_be,
            });
        }
        _ => {
            return Err(Error::UnsupportedVersion {
                at: Location::at(4),
                version,
            });
        }
    }

    let tensor_count = r.u64("tensor count")?;
    let kv_count = r.u64("metadata count")?;
    let rest = r.remaining();
    if tensor_count > rest / MIN_TENSOR_INFO_LEN {
        return Err(Error::ImplausibleCount {
            at: Location::at(8),
            what: "tensor count",
            count: tensor_count,
            available: rest,
        });
    }
    if kv_count > rest / MIN_KV_LEN {
        return Err(Error::ImplausibleCount {
            at: Location::at(16),
            what: "metadata count",
            count: kv_count,
            available: rest,
        });
    }
    debug_assert_eq!(r.pos(), HEADER_LEN);

    let mut metadata = Metadata::new();
    let mut alignment = u64::from(DEFAULT_ALIGNMENT);
    for _ in 0..kv_count {
        let at = r.pos();
        let key = r.string("key", MAX_KEY_LEN)?;
        if metadata.contains_key(&key) {
            return Err(Error::DuplicateKey {
                at: Location::at(at),
                key,
            });
        }
        let tag_at = r.pos();
        let tag = r.u32("value type")?;
        let ty = ValueType::from_tag(tag).ok_or_else(|| Error::BadValueType {
            at: Location::at(tag_at),
            key: key.clone(),
            tag,
        })?;
        let value_at = r.pos();
        let value = r.value(ty, &key)?;
        if key == ALIGNMENT_KEY {
            alignment = alignment_from(&value).map_err(|reason| Error::BadAlignment {
                at: Location::at(value_at),
                reason,
            })?;
        }
        metadata.push_new(key, value);
    }

    let mut tensors = Vec::with_capacity(prealloc(tensor_count));
    let mut tensor_index = HashMap::with_capacity(prealloc(tensor_count));
    let mut offset_fields = Vec::with_capacity(prealloc(tensor_count));
    for _ in 0..tensor_count {
        let (info, offset_at) = r.tensor_info(alignment, &tensor_index)?;
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
        offset_fields.push(offset_at);
    }

    let infos_end = r.pos();
    let file_len = buf.len() as u64;
    let data_offset = align_up(infos_end, alignment).ok_or(Error::Truncated {
        at: Location::at(infos_end),
        what: "padding before the data section",
        needed: alignment,
        available: r.remaining(),
    })?;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(Error::Truncated {
            at: Location::at(infos_end),
            what: "padding before the data section",
            needed: data_offset - infos_end,
            available: r.remaining(),
        });
    }
    let data_len = file_len.saturating_sub(data_offset);
    for (info, &at) in tensors.iter().zip(&offset_fields) {
        let inside = info
            .offset
            .checked_add(info.byte_len)
            .is_some_and(|end| end <= data_len);
        if !inside {
            return Err(Error::TensorOutOfBounds {
                at: Location::at(at),
                tensor: info.name.clone(),
                offset: info.offset,
                len: info.byte_len,
                data_len,
            });
        }
    }
    // Overlap: sort by offset and compare neighbours (ends cannot overflow, checked above).
    let mut by_offset: Vec<usize> = (0..tensors.len()).collect();
    by_offset.sort_by_key(|&i| tensors[i].offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
        if a.offset + a.byte_len > b.offset {
            return Err(Error::OverlappingTensors {
                at: Location::at(offset_fields[pair[1]]),
                tensor: b.name.clone(),
                other: a.name.clone(),
            });
        }
    }

    Ok(Parsed {
        version,
        metadata,
        alignment,
        tensors,
        tensor_index,
        data_offset,
    })
}

/// The alignment a `general.alignment` value asks for, or why it is invalid.
pub(crate) fn alignment_from(value: &Value) -> std::result::Result<u64, String> {
    match value {
        Value::U32(0) => Err("is 0, must be a non-zero power of two".to_string()),
        Value::U32(a) if !a.is_power_of_two() => {
            Err(format!("is {a}, must be a non-zero power of two"))
        }
        Value::U32(a) if *a > MAX_ALIGNMENT => {
            Err(format!("is {a}, more than the limit of {MAX_ALIGNMENT}"))
        }
        Value::U32(a) => Ok(u64::from(*a)),
        other => Err(format!(
            "is {}, must be a u32",
            crate::value::with_article(&other.type_name())
        )),
    }
}

/// `n` rounded up to a multiple of `alignment` (a power of two), if it fits.
pub(crate) fn align_up(n: u64, alignment: u64) -> Option<u64> {
    Some(n.checked_add(alignment - 1)? & !(alignment - 1))
}

fn prealloc(count: u64) -> usize {
    usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(PREALLOC_CAP)
}

/// Validates a shape and type; returns the data length in bytes or why not.
pub(crate) fn tensor_byte_len(shape: &[u64], ty: GgmlType) -> std::result::Result<u64, String> {
    if shape.len() > MAX_DIMS {
        return Err(format!(
            "{} dimensions, at most {MAX_DIMS} allowed",
            shape.len()
        ));
    }
    if let Some(axis) = shape.iter().position(|&d| d == 0) {
        return Err(format!("dimension {axis} is zero"));
    }
    let n = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| "the element count overflows 64 bits".to_string())?;
    if let Some(&row) = shape.first()
        && row % ty.block_size() as u64 != 0
    {
        return Err(format!(
            "row length {row} is not a multiple of the {ty} block size {}",
            ty.block_size()
        ));
    }
    ty.bytes_for(n).map_err(|e| e.to_string())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn pos(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn truncated(&self, what: &'static str, needed: u64) -> Error {
        Error::Truncated {
            at: Location::at(self.pos()),
            what,
            needed,
            available: self.remaining(),
        }
    }

    fn bytes(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        // n <= remaining <= usize::MAX
        let n = n as usize;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let bytes = self.bytes(N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &'static str, max: u64) -> Result<String> {
        let at = self.pos();
        let len_what = match what {
            "key" => "key length",
            "tensor name" => "tensor name length",
            _ => "string length",
        };
        let len = self.u64(len_what)?;
        if len > max {
            return Err(Error::StringTooLong {
                at: Location::at(at),
                what,
                len,
                max,
            });
        }
        let start = self.pos();
        let bytes = self.bytes(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(Error::InvalidUtf8 {
                at: Location::at(start),
                what,
            }),
        }
    }

    fn bool(&mut self, key: &str) -> Result<bool> {
        let at = self.pos();
        match self.array::<1>("bool value")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(Error::BadBool {
                at: Location::at(at),
                key: key.to_string(),
                byte,
            }),
        }
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array("u8 value")?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array("i8 value")?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array("u16 value")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array("u32 value")?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string("string", MAX_STRING_LEN)?),
            ValueType::Array => Value::Array(self.array_value(key, 1)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array("u64 value")?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
        })
    }

    /// Reads `len` fixed-size elements (the caller checked the bytes exist).
    fn fixed<const N: usize, T>(&mut self, len: u64, from: fn([u8; N]) -> T) -> Result<Vec<T>> {
        let bytes = self.bytes(len * N as u64, "array elements")?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0; N];
                a.copy_from_slice(c);
                from(a)
            })
            .collect())
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array> {
        let at = self.pos();
        if depth > MAX_ARRAY_DEPTH {
            return Err(Error::ArrayTooDeep {
                at: Location::at(at),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let tag = self.u32("array element type")?;
        let ty = ValueType::from_tag(tag).ok_or_else(|| Error::BadValueType {
            at: Location::at(at),
            key: key.to_string(),
            tag,
        })?;
        let len_at = self.pos();
        let len = self.u64("array length")?;
        if len > MAX_ARRAY_LEN {
            return Err(Error::ArrayTooLong {
                at: Location::at(len_at),
                len,
                max: MAX_ARRAY_LEN,
            });
        }
        // len <= 2^24 and the minimum size <= 12: no overflow.
        let min_bytes = len * ty.min_encoded_len();
        if min_bytes > self.remaining() {
            return Err(self.truncated("array elements", min_bytes));
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.bytes(len, "array elements")?.to_vec()),
            ValueType::I8 => Array::I8(self.fixed(len, i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(self.fixed(len, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.fixed(len, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.fixed(len, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.fixed(len, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.fixed(len, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(self.fixed(len, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.fixed(len, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.fixed(len, f64::from_le_bytes)?),
            ValueType::Bool => {
                let mut out = Vec::with_capacity(prealloc(len));
                for _ in 0..len {
                    out.push(self.bool(key)?);
                }
                Array::Bool(out)
            }
            ValueType::String => {
                let mut out = Vec::with_capacity(prealloc(len));
                for _ in 0..len {
                    out.push(self.string("string", MAX_STRING_LEN)?);
                }
                Array::String(out)
            }
            ValueType::Array => {
                let mut out = Vec::with_capacity(prealloc(len));
                for _ in 0..len {
                    out.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(out)
            }
        })
    }

    /// Reads one tensor info; returns it with the offset of its offset field.
    fn tensor_info(
        &mut self,
        alignment: u64,
        seen: &HashMap<String, usize>,
    ) -> Result<(TensorInfo, u64)> {
        let at = self.pos();
        let name = self.string("tensor name", MAX_TENSOR_NAME_LEN)?;
        if seen.contains_key(&name) {
            return Err(Error::DuplicateTensor {
                at: Location::at(at),
                tensor: name,
            });
        }
        let dims_at = self.pos();
        let n_dims = self.u32("n_dims")?;
        if n_dims as usize > MAX_DIMS {
            return Err(Error::TooManyDims {
                at: Location::at(dims_at),
                tensor: name,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            shape.push(self.u64("tensor dimension")?);
        }
        let type_at = self.pos();
        let type_id = self.u32("ggml type")?;
        let offset_at = self.pos();
        let offset = self.u64("tensor data offset")?;

        let ggml_type = GgmlType::from_id(type_id).map_err(|_| Error::UnknownGgmlType {
            at: Location::at(type_at),
            tensor: name.clone(),
            id: type_id,
        })?;
        let byte_len = tensor_byte_len(&shape, ggml_type).map_err(|reason| Error::BadShape {
            at: Location::at(at),
            tensor: name.clone(),
            shape: shape.clone(),
            reason,
        })?;
        if offset % alignment != 0 {
            return Err(Error::MisalignedOffset {
                at: Location::at(offset_at),
                tensor: name,
                offset,
                alignment,
            });
        }
        Ok((
            TensorInfo {
                name,
                shape,
                ggml_type,
                offset,
                byte_len,
            },
            offset_at,
        ))
    }
}

/// Encodes the header, metadata and tensor infos (the caller pads up to the
/// data section). Validates every limit the parser enforces, so what is written reads back.
pub(crate) fn encode_header(
    version: u32,
    metadata: &Metadata,
    tensors: &[TensorInfo],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata.iter() {
        put_string(&mut out, key, MAX_KEY_LEN, || {
            format!("metadata key `{key}`")
        })?;
        out.extend_from_slice(&value.value_type().tag().to_le_bytes());
        put_value(&mut out, value, key)?;
    }
    for t in tensors {
        put_string(&mut out, &t.name, MAX_TENSOR_NAME_LEN, || {
            format!("tensor name `{}`", t.name)
        })?;
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    Ok(out)
}

fn put_string(out: &mut Vec<u8>, s: &str, max: u64, what: impl FnOnce() -> String) -> Result<()> {
    if s.len() as u64 > max {
        return Err(Error::InvalidWrite(format!(
            "{} is {} bytes long, the limit is {max}",
            what(),
            s.len()
        )));
    }
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_value(out: &mut Vec<u8>, value: &Value, key: &str) -> Result<()> {
    match value {
        Value::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s, MAX_STRING_LEN, || {
            format!("string value of `{key}`")
        })?,
        Value::Array(a) => put_array(out, a, key, 1)?,
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
    Ok(())
}

fn put_array(out: &mut Vec<u8>, array: &Array, key: &str, depth: usize) -> Result<()> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(Error::InvalidWrite(format!(
            "value of `{key}` nests arrays deeper than {MAX_ARRAY_DEPTH} levels"
        )));
    }
    if array.len() as u64 > MAX_ARRAY_LEN {
        return Err(Error::InvalidWrite(format!(
            "array value of `{key}` has {} elements, the limit is {MAX_ARRAY_LEN}",
            array.len()
        )));
    }
    out.extend_from_slice(&array.element_type().tag().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    macro_rules! put_all {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => put_all!(v),
        Array::U16(v) => put_all!(v),
        Array::I16(v) => put_all!(v),
        Array::U32(v) => put_all!(v),
        Array::I32(v) => put_all!(v),
        Array::F32(v) => put_all!(v),
        Array::U64(v) => put_all!(v),
        Array::I64(v) => put_all!(v),
        Array::F64(v) => put_all!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => {
            for s in v {
                put_string(out, s, MAX_STRING_LEN, || {
                    format!("string in the array value of `{key}`")
                })?;
            }
        }
        Array::Array(v) => {
            for a in v {
                put_array(out, a, key, depth + 1)?;
            }
        }
    }
    Ok(())
}
