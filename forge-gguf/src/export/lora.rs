//! LoRA adapters as GGUF adapter files that llama.cpp's `--lora` loads.
//!
//! LoRA (Hu et al. 2021, arXiv:2106.09685): `W' = W + s · B A` with
//! `A ∈ R^{r×in}`, `B ∈ R^{out×r}` and scale `s`. llama.cpp applies
//! `(alpha / r) · B (A x)` per tensor pair (`llama_adapter_lora_weight::get_scale`),
//! so the file stores one `adapter.lora.alpha`; a module whose own
//! `s · r` differs from it gets `s · r / alpha` folded into its `B`.
//!
//! Layout (what `convert_lora_to_gguf.py` writes): metadata
//! `general.architecture`, `general.type = "adapter"`, `adapter.type =
//! "lora"`, `adapter.lora.alpha`; tensors `<gguf name>.weight.lora_a` with
//! GGML shape `[in, r]` (the bytes of `A`) and `.lora_b` with `[r, out]` (the
//! bytes of `B`). The rows of `B` of `q`/`k` projections are permuted for
//! RoPE exactly as the base weights are (`A` acts on the input and is not).

use std::path::Path;

use forge_quant::GgmlType;

use crate::names::{NameArch, gguf_qk, hf_to_gguf, permute_qk_rows, qk_permuted};
use crate::value::Value;
use crate::writer::GgufWriter;
use crate::{Error, Result};

use super::ExportReport;
use super::policy::FileType;

/// One adapted module.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModule {
    /// Hugging Face module name (`model.layers.0.self_attn.q_proj`).
    pub module: String,
    /// `A`, row-major `[rank, in]`.
    pub a: Vec<f32>,
    /// `B`, row-major `[out, rank]`.
    pub b: Vec<f32>,
    /// Rank `r`.
    pub rank: usize,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
    /// Scale `s` (PEFT: `alpha / r`).
    pub scale: f32,
}

/// A LoRA adapter for one base model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The base model's architecture.
    pub arch: NameArch,
    /// Query heads of the base (for the `q` permutation).
    pub head_count: usize,
    /// Key/value heads of the base (for the `k` permutation).
    pub head_count_kv: usize,
    /// `general.name`.
    pub name: String,
    /// The modules.
    pub modules: Vec<LoraModule>,
}

/// Writes `spec` as a GGUF LoRA adapter; `file_type` F32 or F16 (the
/// converter's `--outtype`).
pub fn export_lora(
    spec: &LoraSpec,
    file_type: FileType,
    out: impl AsRef<Path>,
) -> Result<ExportReport> {
    let started = std::time::Instant::now();
    let out = out.as_ref();
    let ty = match file_type {
        FileType::F32 => GgmlType::F32,
        FileType::F16 => GgmlType::F16,
        FileType::BF16 => GgmlType::BF16,
        other => {
            return Err(Error::Export(format!(
                "a LoRA adapter is written as f32, f16 or bf16, not {other}"
            )));
        }
    };
    let first = spec
        .modules
        .first()
        .ok_or_else(|| Error::Export("the adapter has no modules".into()))?;
    let alpha = first.scale * first.rank as f32;
    if !(alpha.is_finite() && alpha != 0.0) {
        return Err(Error::Export(format!(
            "module `{}` has scale {} · rank {}: alpha must be finite and non-zero",
            first.module, first.scale, first.rank
        )));
    }
    let mut writer = GgufWriter::new()
        .with_metadata("general.architecture", spec.arch.as_str())
        .with_metadata("general.type", "adapter")
        .with_metadata("general.name", spec.name.as_str())
        .with_metadata("adapter.type", "lora")
        .with_metadata("adapter.lora.alpha", Value::F32(alpha))
        .with_metadata("general.file_type", file_type.id())
        .with_metadata("general.quantization_version", super::QUANTIZATION_VERSION);
    let mut planned = Vec::new();
    for m in &spec.modules {
        let (r, i, o) = (m.rank, m.in_features, m.out_features);
        if r == 0 || m.a.len() != r * i || m.b.len() != o * r {
            return Err(Error::Export(format!(
                "module `{}`: A has {} values and B {} for rank {r}, in {i}, out {o}",
                m.module,
                m.a.len(),
                m.b.len()
            )));
        }
        let base = hf_to_gguf(spec.arch, &format!("{}.weight", m.module))
            .map_err(|e| Error::Export(e.to_string()))?;
        let mut b = m.b.clone();
        let fold = m.scale * r as f32 / alpha;
        if fold != 1.0 {
            b.iter_mut().for_each(|x| *x *= fold);
        }
        if qk_permuted(spec.arch)
            && let Some(is_q) = gguf_qk(&base)
        {
            let heads = if is_q {
                spec.head_count
            } else {
                spec.head_count_kv
            };
            b = permute_qk_rows(&b, o, r, heads)
                .map_err(|e| Error::Export(format!("module `{}`: {e}", m.module)))?;
        }
        writer = writer
            .with_tensor(format!("{base}.lora_a"), [i as u64, r as u64], ty)?
            .with_tensor(format!("{base}.lora_b"), [r as u64, o as u64], ty)?;
        planned.push((m.a.as_slice(), i, b, r));
    }
    let mut file = writer.create(out)?;
    let mut report = ExportReport {
        file_type,
        type_counts: Default::default(),
        tensors: 0,
        elements: 0,
        tensor_bytes: 0,
        file_bytes: 0,
        seconds: 0.0,
    };
    for (a, i, b, r) in planned {
        for (values, row) in [(a, i), (b.as_slice(), r)] {
            let bytes =
                forge_quant::quantize(ty, values, row).map_err(|e| Error::Export(e.to_string()))?;
            file.write_tensor(&bytes)?;
            report.tensors += 1;
            report.elements += values.len() as u64;
            report.tensor_bytes += bytes.len() as u64;
            *report.type_counts.entry(ty.name().to_string()).or_default() += 1;
        }
    }
    file.finish()?;
    report.file_bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
