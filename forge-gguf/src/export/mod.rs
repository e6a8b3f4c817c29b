//! Model export: Hugging Face-named tensors plus a [`ModelSpec`] →
//! a llama.cpp GGUF file with the tensor types a [`Policy`] picks.
//!
//! Per tensor (streamed, one at a time, so memory stays at one tensor's f32
//! copy plus its quantized bytes): the Hugging Face name is mapped with
//! [`hf_to_gguf`]; the shape is reversed into GGML order (the row-major
//! bytes stay as they are); the rows of `q`/`k` weights and biases of
//! `llama`/`mistral` are permuted for RoPE ([`permute_qk_rows`], with the kv
//! head count for `k`); the values are quantized with forge-quant (the
//! blocks of a tensor spread over the rayon pool) and written. A tied model
//! writes no `output.weight` (llama.cpp then reuses `token_embd.weight`).
//! The file is written atomically (temporary sibling, fsync, rename).

mod lora;
mod model;
mod modelfile;
mod policy;
mod tokenizer;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use forge_quant::GgmlType;

use crate::file::GgufFile;
use crate::names::unpermute_qk_rows;
use crate::names::{NameArch, gguf_qk, gguf_to_hf, hf_to_gguf, permute_qk_rows, qk_permuted};
use crate::writer::GgufWriter;
use crate::{Error, Result};

pub use lora::{LoraModule, LoraSpec, export_lora};
pub use model::{HyperParams, ModelSpec, QUANTIZATION_VERSION, RopeScalingSpec};
pub use modelfile::{OllamaOptions, ollama_modelfile};
pub use policy::{FileType, Policy, TensorRole, use_more_bits};
pub use tokenizer::{TokenizerSpec, VocabModel, token_type};

/// Where an export reads its tensors: Hugging Face names and shapes, f32
/// values in row-major order.
pub trait TensorSource {
    /// Every tensor as `(name, shape)` with Hugging Face names and shapes
    /// (`[out, in]` for a projection).
    fn tensor_list(&self) -> Vec<(String, Vec<usize>)>;
    /// The values of tensor `name`, row-major.
    fn read_f32(&mut self, name: &str) -> Result<Vec<f32>>;
}

/// The tensors of a GGUF model file as a [`TensorSource`]: dequantized to
/// f32 with forge-quant, q/k rows un-permuted back to the Hugging Face
/// layout (so an export permutes them again: a GGUF → GGUF re-quantization
/// sees the same rows llama.cpp's converter wrote).
#[derive(Debug)]
pub struct GgufTensors<'a, D: AsRef<[u8]> = crate::Mapped> {
    file: &'a GgufFile<D>,
    arch: NameArch,
    heads: usize,
    kv_heads: usize,
}

impl<'a, D: AsRef<[u8]>> GgufTensors<'a, D> {
    /// The tensors of `file`, whose `general.architecture` must have a name
    /// mapping.
    pub fn new(file: &'a GgufFile<D>) -> Result<Self> {
        let spec = ModelSpec::from_gguf(file)?;
        Ok(Self {
            file,
            arch: spec.arch,
            heads: spec.hparams.head_count as usize,
            kv_heads: spec.hparams.head_count_kv as usize,
        })
    }
}

impl<D: AsRef<[u8]>> TensorSource for GgufTensors<'_, D> {
    fn tensor_list(&self) -> Vec<(String, Vec<usize>)> {
        self.file
            .tensors()
            .filter_map(|t| {
                let hf = gguf_to_hf(self.arch, t.name()).ok()?;
                Some((hf, t.shape().iter().rev().map(|&d| d as usize).collect()))
            })
            .collect()
    }

    fn read_f32(&mut self, name: &str) -> Result<Vec<f32>> {
        let gguf = hf_to_gguf(self.arch, name).map_err(|e| Error::Export(e.to_string()))?;
        let t = self
            .file
            .tensor(&gguf)
            .ok_or_else(|| Error::Export(format!("tensor `{gguf}` is not in the file")))?;
        let n = t.info().n_elements() as usize;
        let values = forge_quant::dequantize(t.ggml_type(), t.data(), n)
            .map_err(|e| Error::Export(format!("tensor `{gguf}`: {e}")))?;
        match (qk_permuted(self.arch), gguf_qk(&gguf)) {
            (true, Some(is_q)) => {
                let cols = if t.shape().len() > 1 {
                    t.shape()[0] as usize
                } else {
                    1
                };
                let heads = if is_q { self.heads } else { self.kv_heads };
                unpermute_qk_rows(&values, n / cols, cols, heads)
                    .map_err(|e| Error::Export(format!("tensor `{gguf}`: {e}")))
            }
            _ => Ok(values),
        }
    }
}

/// One step of an export, for progress bars.
#[derive(Debug, Clone)]
pub struct ExportProgress<'a> {
    /// Tensors written so far (this one included).
    pub done: usize,
    /// Tensors in the file.
    pub total: usize,
    /// The tensor just written (GGUF name).
    pub tensor: &'a str,
    /// Its type.
    pub ggml_type: GgmlType,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// The file type.
    pub file_type: FileType,
    /// Tensor count per GGML type (name order).
    pub type_counts: BTreeMap<String, usize>,
    /// Tensors written.
    pub tensors: usize,
    /// Parameters (elements) written.
    pub elements: u64,
    /// Bytes of tensor data (without padding).
    pub tensor_bytes: u64,
    /// Size of the file.
    pub file_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl ExportReport {
    /// Bits per weight over every tensor: `8 · tensor bytes / elements`.
    pub fn bits_per_weight(&self) -> f64 {
        if self.elements == 0 {
            0.0
        } else {
            8.0 * self.tensor_bytes as f64 / self.elements as f64
        }
    }
}

/// The order tensors are written in within one block.
const LAYER_ORDER: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

fn order_key(gguf: &str) -> (usize, usize, usize, String) {
    match gguf {
        "token_embd.weight" => (0, 0, 0, String::new()),
        "rope_freqs.weight" => (0, 1, 0, String::new()),
        "output_norm.weight" => (2, 0, 0, String::new()),
        "output.weight" => (2, 1, 0, String::new()),
        _ => {
            let mut parts = gguf.splitn(3, '.');
            let _ = parts.next();
            let layer = parts
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(usize::MAX);
            let rest = parts.next().unwrap_or_default();
            let stem = rest.rsplit_once('.').map_or(rest, |(s, _)| s);
            let slot = LAYER_ORDER
                .iter()
                .position(|s| *s == stem)
                .unwrap_or(LAYER_ORDER.len());
            (1, layer, slot, rest.to_string())
        }
    }
}

/// One planned tensor.
struct Planned {
    hf: String,
    gguf: String,
    hf_shape: Vec<usize>,
    ty: GgmlType,
}

/// The expected Hugging Face shape of a tensor, from the hyper-parameters.
fn expected_shape(spec: &ModelSpec, gguf: &str) -> Option<Vec<usize>> {
    let h = &spec.hparams;
    let (d, f, v) = (
        h.embedding_length as usize,
        h.feed_forward_length as usize,
        h.vocab_size as usize,
    );
    let (q, kv) = (
        (h.head_count * h.head_dim) as usize,
        (h.head_count_kv * h.head_dim) as usize,
    );
    let (_, _, _, rest) = order_key(gguf);
    let key = if rest.is_empty() { gguf } else { rest.as_str() };
    Some(match key {
        "token_embd.weight" | "output.weight" => vec![v, d],
        "output_norm.weight" | "attn_norm.weight" | "ffn_norm.weight" => vec![d],
        "attn_q.weight" => vec![q, d],
        "attn_k.weight" | "attn_v.weight" => vec![kv, d],
        "attn_output.weight" => vec![d, q],
        "attn_q.bias" => vec![q],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        "attn_output.bias" => vec![d],
        "ffn_gate.weight" | "ffn_up.weight" => vec![f, d],
        "ffn_down.weight" => vec![d, f],
        "ffn_gate.bias" | "ffn_up.bias" => vec![f],
        "ffn_down.bias" => vec![d],
        _ => return None,
    })
}

fn plan(spec: &ModelSpec, source: &dyn TensorSource, policy: &Policy) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    let mut seen_embd = false;
    for (hf, hf_shape) in source.tensor_list() {
        if hf.ends_with("rotary_emb.inv_freq") {
            continue; // a buffer, recomputed by llama.cpp
        }
        if hf == "lm_head.weight" && spec.tied_embeddings {
            continue;
        }
        let gguf = hf_to_gguf(spec.arch, &hf).map_err(|e| Error::Export(e.to_string()))?;
        if let Some(layer) = gguf
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse::<u32>().ok())
            && layer >= spec.hparams.block_count
        {
            return Err(Error::Export(format!(
                "tensor `{hf}` is in layer {layer}, but the model has {} blocks",
                spec.hparams.block_count
            )));
        }
        match expected_shape(spec, &gguf) {
            Some(want) if want != hf_shape => {
                return Err(Error::Export(format!(
                    "tensor `{hf}` has shape {hf_shape:?}, the hyper-parameters say {want:?}"
                )));
            }
            _ => {}
        }
        seen_embd |= gguf == "token_embd.weight";
        let shape: Vec<u64> = hf_shape.iter().rev().map(|&d| d as u64).collect();
        let ty = policy.tensor_type(TensorRole {
            name: &gguf,
            shape: &shape,
        });
        out.push(Planned {
            hf,
            gguf,
            hf_shape,
            ty,
        });
    }
    if !seen_embd {
        return Err(Error::Export(
            "no `model.embed_tokens.weight` tensor".into(),
        ));
    }
    let has_output = out.iter().any(|p| p.gguf == "output.weight");
    if !spec.tied_embeddings && !has_output {
        return Err(Error::Export(
            "the model is not tied but has no `lm_head.weight` tensor".into(),
        ));
    }
    out.sort_by_key(|p| order_key(&p.gguf));
    Ok(out)
}

/// Exports a model: `spec` for the metadata, `source` for the tensors,
/// `policy` for the types; `progress` is called after every tensor.
pub fn export_model(
    spec: &ModelSpec,
    source: &mut dyn TensorSource,
    policy: &Policy,
    out: impl AsRef<Path>,
    progress: &mut dyn FnMut(&ExportProgress<'_>),
) -> Result<ExportReport> {
    let started = Instant::now();
    let out = out.as_ref();
    spec.check()?;
    let planned = plan(spec, source, policy)?;
    let rope_freqs = spec.rope_freqs();
    let mut writer = GgufWriter::new();
    *writer.metadata_mut() = spec.metadata(policy.file_type().id());
    if let Some(f) = &rope_freqs {
        writer = writer.with_tensor("rope_freqs.weight", [f.len() as u64], GgmlType::F32)?;
    }
    for p in &planned {
        let shape: Vec<u64> = p.hf_shape.iter().rev().map(|&d| d as u64).collect();
        writer = writer.with_tensor(p.gguf.clone(), shape, p.ty)?;
    }
    let total = planned.len() + usize::from(rope_freqs.is_some());
    let mut file = writer.create(out)?;
    let mut report = ExportReport {
        file_type: policy.file_type(),
        type_counts: BTreeMap::new(),
        tensors: 0,
        elements: 0,
        tensor_bytes: 0,
        file_bytes: 0,
        seconds: 0.0,
    };
    let mut record =
        |name: &str, ty: GgmlType, n: usize, bytes: usize, report: &mut ExportReport| {
            *report.type_counts.entry(ty.name().to_string()).or_default() += 1;
            report.tensors += 1;
            report.elements += n as u64;
            report.tensor_bytes += bytes as u64;
            progress(&ExportProgress {
                done: report.tensors,
                total,
                tensor: name,
                ggml_type: ty,
            });
        };
    if let Some(f) = &rope_freqs {
        let bytes: Vec<u8> = f.iter().flat_map(|x| x.to_le_bytes()).collect();
        file.write_tensor(&bytes)?;
        record(
            "rope_freqs.weight",
            GgmlType::F32,
            f.len(),
            bytes.len(),
            &mut report,
        );
    }
    let h = &spec.hparams;
    for p in &planned {
        let mut values = source.read_f32(&p.hf)?;
        let n: usize = p.hf_shape.iter().product();
        if values.len() != n {
            return Err(Error::Export(format!(
                "tensor `{}` gave {} values for shape {:?}",
                p.hf,
                values.len(),
                p.hf_shape
            )));
        }
        if qk_permuted(spec.arch)
            && let Some(is_q) = gguf_qk(&p.gguf)
        {
            let cols = if p.hf_shape.len() > 1 {
                p.hf_shape[1]
            } else {
                1
            };
            let heads = if is_q { h.head_count } else { h.head_count_kv } as usize;
            values = permute_qk_rows(&values, n / cols, cols, heads)
                .map_err(|e| Error::Export(format!("tensor `{}`: {e}", p.hf)))?;
        }
        let row = *p.hf_shape.last().unwrap_or(&1);
        let bytes = forge_quant::quantize(p.ty, &values, row)
            .map_err(|e| Error::Export(format!("tensor `{}` to {}: {e}", p.gguf, p.ty.name())))?;
        drop(values);
        file.write_tensor(&bytes)?;
        record(&p.gguf, p.ty, n, bytes.len(), &mut report);
    }
    file.finish()?;
    report.file_bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
