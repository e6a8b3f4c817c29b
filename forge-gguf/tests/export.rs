//! Model export on the real SmolLM2-135M-Instruct GGUF (pure Rust, no MLX):
//! GGUF → GGUF through [`GgufTensors`] for every file type, checked against
//! the source file (keys, key types, tokenizer, tensor values) and against
//! the rules of llama.cpp's `llama_tensor_get_type`.
//!
//! The reference for metadata keys is the SmolLM2 file itself: it was
//! written by llama.cpp's `convert_hf_to_gguf.py` and quantized by
//! `llama-quantize` (which adds `general.quantization_version` and sets
//! `general.file_type`). llama.cpp tests proper (tensor bytes against
//! `llama-quantize`, distributions in llama.cpp) are in
//! `tests/llama_quantize.rs` and forge-core's `tests/export_llama_cpp.rs`.

mod common;

use std::collections::BTreeMap;

use forge_gguf::export::{FileType, GgufTensors, ModelSpec, Policy, TensorSource, export_model};
use forge_gguf::{GgmlType, GgufFile};

fn export(
    src: &GgufFile,
    ft: FileType,
    pure: bool,
    name: &str,
) -> (GgufFile, forge_gguf::export::ExportReport) {
    let spec = ModelSpec::from_gguf(src).expect("spec");
    let policy =
        Policy::new(ft, spec.hparams.block_count as usize, spec.tied_embeddings).with_pure(pure);
    let mut source = GgufTensors::new(src).expect("source");
    let out = common::temp_path(name);
    let mut steps = 0;
    let report = export_model(&spec, &mut source, &policy, &out, &mut |p| {
        steps += 1;
        assert_eq!(p.done, steps);
    })
    .expect("export");
    assert_eq!(steps, report.tensors);
    let file = GgufFile::open(&out).expect("read back");
    std::fs::remove_file(&out).ok();
    (file, report)
}

#[test]
fn smollm2_export_keeps_keys_tokenizer_and_values() {
    let Some(path) = common::peer(common::SMOLLM2) else {
        return;
    };
    let src = GgufFile::open(&path).expect("open");
    let (f16, report) = export(&src, FileType::F16, false, "smollm2-f16.gguf");

    // Same keys in the same order, same value types; same values except the
    // file type.
    let keys = |f: &GgufFile| -> Vec<(String, String)> {
        f.metadata()
            .iter()
            .map(|(k, v)| (k.to_string(), v.type_name()))
            .collect()
    };
    assert_eq!(keys(&f16), keys(&src));
    for (k, v) in src.metadata().iter() {
        if k != "general.file_type" {
            assert_eq!(f16.value(k), Some(v), "metadata `{k}`");
        }
    }
    assert_eq!(f16.get::<u32>("general.file_type").ok(), Some(1));

    // Same tensors (tied: no output.weight), F16 matrices, F32 norms.
    let names = |f: &GgufFile| {
        let mut v: Vec<String> = f.tensors().map(|t| t.name().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&f16), names(&src));
    assert!(f16.tensor("output.weight").is_none());
    for t in f16.tensors() {
        let want = if t.shape().len() == 1 {
            GgmlType::F32
        } else {
            GgmlType::F16
        };
        assert_eq!(t.ggml_type(), want, "{}", t.name());
        let s = src.tensor(t.name()).expect("in source");
        assert_eq!(t.shape(), s.shape(), "{}", t.name());
        // Values: the source dequantized, rounded to f16 — the permutation
        // (un-permute on read, permute on write) cancels out.
        let n = t.info().n_elements() as usize;
        let ours = forge_quant::dequantize(t.ggml_type(), t.data(), n).expect("deq");
        let theirs = forge_quant::dequantize(s.ggml_type(), s.data(), n).expect("deq");
        let rounded = forge_quant::dequantize(
            t.ggml_type(),
            &forge_quant::quantize(t.ggml_type(), &theirs, n).expect("q"),
            n,
        )
        .expect("deq");
        assert_eq!(ours, rounded, "{}", t.name());
    }
    assert_eq!(report.tensors, 272);
    assert_eq!(report.elements, 134_515_008);
    assert_eq!(report.type_counts.get("F16"), Some(&211));
    assert_eq!(report.type_counts.get("F32"), Some(&61));
}

#[test]
fn smollm2_q4_k_m_types_follow_llama_cpp_rules() {
    let Some(path) = common::peer(common::SMOLLM2) else {
        return;
    };
    let src = GgufFile::open(&path).expect("open");
    let (q, report) = export(&src, FileType::Q4_K_M, false, "smollm2-q4km.gguf");
    assert_eq!(q.get::<u32>("general.file_type").ok(), Some(15));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for t in q.tensors() {
        *counts.entry(t.ggml_type().name().into()).or_default() += 1;
        let name = t.name();
        let layer: Option<usize> = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|l| l.parse().ok());
        let more = layer.is_some_and(|i| forge_gguf::export::use_more_bits(i, 30));
        // hidden 576 is not a multiple of 256: Q4_K falls back to Q5_0,
        // Q6_K to Q8_0; ffn_down rows are 1536 = 6 · 256.
        let want = if t.shape().len() == 1 {
            GgmlType::F32
        } else if name == "token_embd.weight" {
            GgmlType::Q8_0
        } else if name.ends_with("attn_v.weight") {
            if more { GgmlType::Q8_0 } else { GgmlType::Q5_0 }
        } else if name.ends_with("ffn_down.weight") {
            if more { GgmlType::Q6_K } else { GgmlType::Q4_K }
        } else {
            GgmlType::Q5_0
        };
        assert_eq!(t.ggml_type(), want, "{name}");
    }
    assert_eq!(counts, report.type_counts);
    let (pure, _) = export(&src, FileType::Q4_K_M, true, "smollm2-q4km-pure.gguf");
    for t in pure.tensors() {
        let want = match (t.shape().len(), t.shape()[0] % 256) {
            (1, _) => GgmlType::F32,
            (_, 0) => GgmlType::Q4_K,
            _ => GgmlType::Q5_0,
        };
        assert_eq!(t.ggml_type(), want, "{}", t.name());
    }
    println!(
        "Q4_K_M: {:?}, {:.3} bits/weight",
        report.type_counts,
        report.bits_per_weight()
    );
}

#[test]
fn gguf_source_lists_hf_names_and_unpermutes() {
    let Some(path) = common::peer(common::SMOLLM2) else {
        return;
    };
    let src = GgufFile::open(&path).expect("open");
    let mut source = GgufTensors::new(&src).expect("source");
    let list = source.tensor_list();
    assert_eq!(list.len(), 272);
    assert!(list.contains(&(
        "model.layers.0.self_attn.k_proj.weight".to_string(),
        vec![192, 576]
    )));
    let k = source
        .read_f32("model.layers.0.self_attn.k_proj.weight")
        .expect("k");
    let t = src.tensor("blk.0.attn_k.weight").expect("k");
    let raw = forge_quant::dequantize(t.ggml_type(), t.data(), k.len()).expect("deq");
    assert_ne!(k, raw, "k is un-permuted");
    assert_eq!(
        forge_gguf::permute_qk_rows(&k, 192, 576, 3).expect("permute"),
        raw
    );
    let err = source
        .read_f32("model.layers.99.self_attn.k_proj.weight")
        .expect_err("missing");
    assert!(err.to_string().contains("blk.99.attn_k.weight"), "{err}");
}
