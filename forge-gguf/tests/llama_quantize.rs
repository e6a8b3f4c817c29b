//! Forge's quantized exports against llama.cpp's own `llama-quantize`
//! (built with cmake from the `llama-cpp-python==0.3.36` sdist into
//! `.forge/peers/llama-cpp/`, see `cargo xtask peers`), from the same F16
//! input: SmolLM2-135M-Instruct exported to F16 by Forge, then
//!
//! - `llama-quantize F16.gguf ref.gguf Q4_K_M|Q5_K_M|Q8_0 2` and
//! - Forge's export of the F16 file to the same type
//!
//! must give the same metadata (keys, order, types, values), the same tensor
//! set with the same GGML types, and byte-identical tensor data.

mod common;

use std::process::Command;

use forge_gguf::GgufFile;
use forge_gguf::export::{FileType, GgufTensors, ModelSpec, Policy, export_model};

const LLAMA_QUANTIZE: &str = "llama-cpp/build/bin/llama-quantize";

fn forge_export(src: &GgufFile, ft: FileType, out: &std::path::Path) {
    let spec = ModelSpec::from_gguf(src).expect("spec");
    let policy = Policy::new(ft, spec.hparams.block_count as usize, spec.tied_embeddings);
    let mut source = GgufTensors::new(src).expect("source");
    export_model(&spec, &mut source, &policy, out, &mut |_| {}).expect("export");
}

#[test]
fn quantized_exports_equal_llama_quantize_byte_for_byte() {
    let Some(model) = common::peer(common::SMOLLM2) else {
        return;
    };
    let Some(quantize) = common::peer(LLAMA_QUANTIZE) else {
        return;
    };
    let f16_path = common::temp_path("smollm2-f16-for-quantize.gguf");
    forge_export(
        &GgufFile::open(&model).expect("open"),
        FileType::F16,
        &f16_path,
    );
    let f16 = GgufFile::open(&f16_path).expect("f16");
    for (ft, name) in [
        (FileType::Q4_K_M, "Q4_K_M"),
        (FileType::Q5_K_M, "Q5_K_M"),
        (FileType::Q8_0, "Q8_0"),
    ] {
        let ref_path = common::temp_path(&format!("ref-{name}.gguf"));
        let out = Command::new(&quantize)
            .arg(&f16_path)
            .arg(&ref_path)
            .arg(name)
            .arg("2")
            .output()
            .expect("run llama-quantize");
        assert!(
            out.status.success(),
            "llama-quantize failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours_path = common::temp_path(&format!("forge-{name}.gguf"));
        forge_export(&f16, ft, &ours_path);
        let ours = GgufFile::open(&ours_path).expect("ours");
        let theirs = GgufFile::open(&ref_path).expect("theirs");

        let mut their_keys: Vec<(&str, String)> = theirs
            .metadata()
            .iter()
            .map(|(k, v)| (k, v.type_name()))
            .collect();
        let mut our_keys: Vec<(&str, String)> = ours
            .metadata()
            .iter()
            .map(|(k, v)| (k, v.type_name()))
            .collect();
        their_keys.sort();
        our_keys.sort();
        assert_eq!(our_keys, their_keys, "{name}: metadata keys and types");
        for (k, v) in theirs.metadata().iter() {
            assert_eq!(ours.value(k), Some(v), "{name}: metadata `{k}`");
        }

        assert_eq!(ours.tensor_count(), theirs.tensor_count(), "{name}");
        let mut identical = 0;
        for t in theirs.tensors() {
            let o = ours
                .tensor(t.name())
                .unwrap_or_else(|| panic!("{name}: no `{}`", t.name()));
            assert_eq!(
                o.ggml_type(),
                t.ggml_type(),
                "{name}: type of `{}`",
                t.name()
            );
            assert_eq!(o.shape(), t.shape(), "{name}: shape of `{}`", t.name());
            assert!(
                o.data() == t.data(),
                "{name}: bytes of `{}` differ",
                t.name()
            );
            identical += 1;
        }
        println!("{name}: {identical} tensors byte-identical with llama-quantize");
        std::fs::remove_file(&ref_path).ok();
        std::fs::remove_file(&ours_path).ok();
    }
    std::fs::remove_file(&f16_path).ok();
}
