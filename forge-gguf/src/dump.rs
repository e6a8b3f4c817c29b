//! Human and JSON dumps of a GGUF file (what `forge gguf dump` prints),
//! comparable to gguf-py's `gguf-dump`.
//!
//! Arrays longer than [`ARRAY_LIMIT`] elements are summarised as their element
//! type, length and first [`ARRAY_HEAD`] elements, in both formats.

use std::fmt::Write as _;

use serde_json::{Value as Json, json};

use crate::file::GgufFile;
use crate::value::{Array, Value};

/// Arrays with more elements than this are summarised.
pub const ARRAY_LIMIT: usize = 32;
/// Elements shown of a summarised array.
pub const ARRAY_HEAD: usize = 8;
/// Strings longer than this (in bytes) are cut in the text dump (not in JSON).
pub const TEXT_STRING_LIMIT: usize = 120;

/// The text dump: header line, metadata (`key: type = value`, file order) and
/// the tensor table (index, name, type, shape, offset, bytes).
pub fn to_text<D: AsRef<[u8]>>(file: &GgufFile<D>) -> String {
    let mut out = String::new();
    if let Some(path) = file.path() {
        let _ = writeln!(out, "file: {}", path.display());
    }
    let _ = writeln!(
        out,
        "gguf v{}, little-endian, alignment {}, {} metadata keys, {} tensors, data section at byte {} ({} bytes)",
        file.version(),
        file.alignment(),
        file.metadata().len(),
        file.tensor_count(),
        file.data_offset(),
        (file.as_bytes().len() as u64).saturating_sub(file.data_offset()),
    );
    let _ = writeln!(out, "\nmetadata:");
    for (key, value) in file.metadata().iter() {
        let (ty, shown) = match value {
            Value::Array(a) => (
                format!("array of {}[{}]", a.element_type(), a.len()),
                text_array(a),
            ),
            v => (v.type_name(), text_scalar(v)),
        };
        let _ = writeln!(out, "  {key}: {ty} = {shown}");
    }

    let _ = writeln!(out, "\ntensors:");
    let rows: Vec<[String; 6]> = file
        .tensors()
        .map(|t| {
            [
                t.index().to_string(),
                t.name().to_string(),
                t.ggml_type().name().to_string(),
                format!("{:?}", t.shape()),
                t.info().offset().to_string(),
                t.info().byte_len().to_string(),
            ]
        })
        .collect();
    let head = ["index", "name", "type", "shape", "offset", "bytes"].map(str::to_string);
    let mut widths = head.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&head).chain(&rows) {
        let _ = writeln!(
            out,
            "  {:>w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}  {:>w5$}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
            w5 = widths[5],
        );
    }
    out
}

fn text_scalar(value: &Value) -> String {
    match value {
        Value::String(s) if s.len() > TEXT_STRING_LIMIT => {
            let mut cut = TEXT_STRING_LIMIT - 20;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{:?}... ({} bytes)", &s[..cut], s.len())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(a) => text_array(a),
        Value::F32(v) => format!("{v:?}"),
        Value::F64(v) => format!("{v:?}"),
        Value::U8(v) => v.to_string(),
        Value::I8(v) => v.to_string(),
        Value::U16(v) => v.to_string(),
        Value::I16(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::I32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::Bool(v) => v.to_string(),
    }
}

fn text_array(a: &Array) -> String {
    let shown = if a.len() > ARRAY_LIMIT {
        ARRAY_HEAD
    } else {
        a.len()
    };
    let mut parts: Vec<String> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| text_scalar(&v))
        .collect();
    if shown < a.len() {
        parts.push(format!("... {} more", a.len() - shown));
    }
    format!("[{}]", parts.join(", "))
}

/// The JSON dump: a stable document for scripts.
///
/// ```text
/// { "version", "endianness", "alignment", "metadata_count", "tensor_count",
///   "data_offset", "file_size",
///   "metadata": [ { "key", "type", "value" }                      scalars
///               | { "key", "type": "array", "element_type", "length",
///                   "value": [...], "truncated" } ],               arrays
///   "tensors":  [ { "index", "name", "type", "shape", "offset", "bytes" } ] }
/// ```
///
/// `offset` is relative to the data section (as stored in the file); add
/// `data_offset` for the position in the file. Non-finite floats are the
/// strings `"NaN"`, `"inf"`, `"-inf"`. Nested arrays appear as objects with
/// `element_type`, `length`, `value` and `truncated`.
pub fn to_json<D: AsRef<[u8]>>(file: &GgufFile<D>) -> String {
    let metadata: Vec<Json> = file
        .metadata()
        .iter()
        .map(|(key, value)| match value {
            Value::Array(a) => {
                let mut entry = json_array(a);
                if let Json::Object(map) = &mut entry {
                    map.insert("key".into(), json!(key));
                    map.insert("type".into(), json!("array"));
                }
                entry
            }
            v => json!({ "key": key, "type": v.type_name(), "value": json_scalar(v) }),
        })
        .collect();
    let tensors: Vec<Json> = file
        .tensors()
        .map(|t| {
            json!({
                "index": t.index(),
                "name": t.name(),
                "type": t.ggml_type().name(),
                "shape": t.shape(),
                "offset": t.info().offset(),
                "bytes": t.info().byte_len(),
            })
        })
        .collect();
    let doc = json!({
        "version": file.version(),
        "endianness": "little",
        "alignment": file.alignment(),
        "metadata_count": file.metadata().len(),
        "tensor_count": file.tensor_count(),
        "data_offset": file.data_offset(),
        "file_size": file.as_bytes().len(),
        "metadata": metadata,
        "tensors": tensors,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

fn json_float(v: f64) -> Json {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

fn json_scalar(value: &Value) -> Json {
    match value {
        Value::U8(v) => json!(v),
        Value::I8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::F32(v) => json_float(f64::from(*v)),
        Value::Bool(v) => json!(v),
        Value::String(v) => json!(v),
        Value::Array(a) => json_array(a),
        Value::U64(v) => json!(v),
        Value::I64(v) => json!(v),
        Value::F64(v) => json_float(*v),
    }
}

fn json_array(a: &Array) -> Json {
    let truncated = a.len() > ARRAY_LIMIT;
    let shown = if truncated { ARRAY_HEAD } else { a.len() };
    let values: Vec<Json> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| json_scalar(&v))
        .collect();
    json!({
        "element_type": a.element_type().name(),
        "length": a.len(),
        "value": values,
        "truncated": truncated,
    })
}
