//! Forge's export against llama.cpp's own converter on the same model:
//! SmolLM2-135M-Instruct (loaded from its GGUF as f16) is written as a
//! Hugging Face folder (forge-model's `write_hf_dir`: `config.json`, f16
//! `model.safetensors`; plus the model's own `tokenizer.json` and a
//! `tokenizer_config.json` with its special tokens and chat template). Then:
//!
//! - llama.cpp: `convert_hf_to_gguf.py --outtype f16` (from the
//!   `llama-cpp-python==0.3.36` sdist, PyTorch 2.11.0 on the CPU), then
//!   `llama-quantize … Q4_K_M` on its output;
//! - Forge: `forge_core::export::export` of the same folder to F16 and to
//!   Q4_K_M (what `forge export --model DIR --type f16|q4_k_m` does).
//!
//! Both F16 files and both Q4_K_M files must hold the same tensors (names,
//! shapes, GGML types) with the same bytes, and every metadata key Forge
//! writes must be in llama.cpp's file with the same type and value. Every
//! difference is printed; the ones that remain are listed in [`KNOWN`] with
//! the reason none of them changes what llama.cpp loads, and any other
//! difference (or a known one that disappears) fails the test.
//!
//! MLX is not thread-safe: run with `--test-threads=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use forge_core::export::{ExportOptions, export};
use forge_core::gguf::GgufFile;
use forge_core::gguf::export::FileType;
use forge_core::model::{LoadOptions, ModelSource, load, write_hf_dir};
use mlx_rs::Dtype;
use serde_json::json;

fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

/// The SmolLM2 GGUF, the converter's Python, the script and
/// `llama-quantize`; `None` after the skip line.
fn peers() -> Option<(PathBuf, PathBuf, PathBuf, PathBuf)> {
    let dir = peers_dir();
    let gguf = dir.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let python = dir.join("convert-venv/bin/python");
    let script = dir.join("llama-cpp/src/convert_hf_to_gguf.py");
    let quantize = dir.join("llama-cpp/build/bin/llama-quantize");
    if [&gguf, &python, &script, &quantize]
        .iter()
        .all(|p| p.is_file())
    {
        return Some((gguf, python, script, quantize));
    }
    if std::env::var("FORGE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "SmolLM2 GGUF, convert_hf_to_gguf.py's venv or llama-quantize missing: run cargo xtask peers"
        );
    }
    println!("skipped: peers not installed (cargo xtask peers)");
    None
}

fn temp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("forge-core-convert-hf");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("{}-{name}", std::process::id()))
}

fn run(cmd: &mut Command) {
    let t = Instant::now();
    let out = cmd.output().expect("start");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{:?} {:?}: {:.2} s",
        cmd.get_program(),
        cmd.get_args().last().unwrap_or_default(),
        t.elapsed().as_secs_f64()
    );
}

/// One difference: a stable id (what differs, for [`KNOWN`]) and a message.
type Diff = (String, String);

/// Every difference between two GGUF files: metadata (keys, order, types,
/// values) and tensors (names, order, shapes, types, bytes). Returns the
/// differences and how many tensors have identical bytes.
fn differences(label: &str, ours: &GgufFile, theirs: &GgufFile) -> (Vec<Diff>, usize) {
    let mut diffs: Vec<Diff> = Vec::new();
    let mut push = |id: String, message: String| diffs.push((id, format!("{label}: {message}")));
    let ours_keys: Vec<&str> = ours.metadata().keys().collect();
    let theirs_keys: Vec<&str> = theirs.metadata().keys().collect();
    for k in &theirs_keys {
        if !ours_keys.contains(k) {
            push(
                format!("key-only-llama.cpp {k}"),
                format!(
                    "key `{k}` only in llama.cpp's file ({})",
                    short(theirs.value(k))
                ),
            );
        }
    }
    for k in &ours_keys {
        if !theirs_keys.contains(k) {
            push(
                format!("key-only-forge {k}"),
                format!("key `{k}` only in Forge's file ({})", short(ours.value(k))),
            );
        }
    }
    let common = |keys: &[&str], other: &[&str]| -> Vec<String> {
        keys.iter()
            .filter(|k| other.contains(k))
            .map(|k| k.to_string())
            .collect()
    };
    if common(&ours_keys, &theirs_keys) != common(&theirs_keys, &ours_keys) {
        push(
            "key-order".into(),
            format!("key order differs: forge {ours_keys:?}, llama.cpp {theirs_keys:?}"),
        );
    }
    for k in ours_keys.iter().filter(|k| theirs_keys.contains(k)) {
        let (a, b) = (ours.value(k).expect("key"), theirs.value(k).expect("key"));
        if a.type_name() != b.type_name() {
            push(
                format!("key-type {k}"),
                format!(
                    "key `{k}`: forge type {}, llama.cpp type {}",
                    a.type_name(),
                    b.type_name()
                ),
            );
        } else if a != b {
            push(
                format!("key-value {k}"),
                format!(
                    "key `{k}`: forge {}, llama.cpp {}",
                    short(Some(a)),
                    short(Some(b))
                ),
            );
        }
    }
    let names =
        |f: &GgufFile| -> Vec<String> { f.tensors().map(|t| t.name().to_string()).collect() };
    let (a, b) = (names(ours), names(theirs));
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        push(
            "tensor-order".into(),
            format!(
                "tensor order differs from position {i}: forge {:?}, llama.cpp {:?}",
                &a[i.min(a.len())..(i + 3).min(a.len())],
                &b[i.min(b.len())..(i + 3).min(b.len())],
            ),
        );
    }
    for n in b.iter().filter(|n| !a.contains(n)) {
        push(
            format!("tensor-only-llama.cpp {n}"),
            format!("tensor {n} only in llama.cpp's file"),
        );
    }
    let mut same_bytes = 0;
    for t in ours.tensors() {
        let n = t.name();
        let Some(u) = theirs.tensor(n) else {
            push(
                format!("tensor-only-forge {n}"),
                format!("tensor {n} only in Forge's file"),
            );
            continue;
        };
        if t.shape() != u.shape() {
            push(
                format!("tensor-shape {n}"),
                format!(
                    "tensor {n}: forge shape {:?}, llama.cpp {:?}",
                    t.shape(),
                    u.shape()
                ),
            );
        } else if t.ggml_type() != u.ggml_type() {
            push(
                format!("tensor-type {n}"),
                format!(
                    "tensor {n}: forge {}, llama.cpp {}",
                    t.ggml_type().name(),
                    u.ggml_type().name()
                ),
            );
        } else if t.data() != u.data() {
            push(
                format!("tensor-bytes {n}"),
                format!("tensor {n} ({}): bytes differ", t.ggml_type().name()),
            );
        } else {
            same_bytes += 1;
        }
    }
    (diffs, same_bytes)
}

/// The differences that remain, in both files, and why none of them changes
/// what llama.cpp loads:
const KNOWN: &[&str] = &[
    // convert_hf_to_gguf.py derives descriptive names from the folder name
    // ("SmolLM2-135M-Instruct" → name "SmolLM2 135M Instruct", basename
    // "SmolLM2", finetune "Instruct") and the parameter count (size label
    // "135M"); Forge writes the folder name as general.name and no others.
    "key-value general.name",
    "key-only-llama.cpp general.basename",
    "key-only-llama.cpp general.finetune",
    "key-only-llama.cpp general.size_label",
    // The converter writes the head width whenever config.json lists
    // `head_dim` (forge-model's writer does); Forge only when it is not
    // hidden / heads. Same value (checked below): llama.cpp derives 64 from
    // 576 / 9 when the keys are absent.
    "key-only-llama.cpp llama.attention.key_length",
    "key-only-llama.cpp llama.attention.value_length",
    // The converter writes general.quantization_version before the
    // tokenizer keys and tokenizer.ggml.add_bos_token last; Forge keeps the
    // order of the converter that wrote the SmolLM2 GGUF (tests/export.rs
    // in forge-gguf). llama.cpp looks keys up by name.
    "key-order",
    // The converter writes tensors in safetensors order (sorted names),
    // llama-quantize re-sorts them by block; Forge writes token_embd, then
    // each block's tensors, then output_norm. llama.cpp looks tensors up by
    // name.
    "tensor-order",
];

/// A value for a message: arrays by type and length, strings cut.
fn short(v: Option<&forge_core::gguf::Value>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => match v.as_array() {
            Some(a) => format!("{} of {}", v.type_name(), a.len()),
            None => {
                let s = format!("{v:?}");
                s.chars().take(120).collect()
            }
        },
    }
}

#[test]
fn forge_export_equals_convert_hf_to_gguf_and_llama_quantize() {
    let Some((gguf, python, script, quantize)) = peers() else {
        return;
    };
    let t0 = Instant::now();
    let mut loaded = load(
        &ModelSource::Gguf(gguf.clone()),
        &LoadOptions::new().with_dtype(Dtype::Float16),
    )
    .expect("load");
    let tok = loaded.tokenizer.take().expect("tokenizer");
    let src = GgufFile::open(&gguf).expect("source");

    // The Hugging Face folder: forge-model's writer, then the model's own
    // tokenizer and its special tokens (as the source GGUF records them).
    let dir = temp("hf").join("SmolLM2-135M-Instruct");
    write_hf_dir(&loaded.model, &dir).expect("hf dir");
    drop(loaded);
    let tokens: Vec<String> = src.get("tokenizer.ggml.tokens").expect("tokens");
    let token = |key: &str| -> String {
        let id: u32 = src.get(key).expect("special token id");
        tokens[id as usize].clone()
    };
    std::fs::write(
        dir.join("tokenizer.json"),
        tok.inner().to_string(false).expect("tokenizer.json"),
    )
    .expect("write tokenizer.json");
    let chat: &str = src.get("tokenizer.chat_template").expect("template");
    let config = json!({
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": false,
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "model_max_length": 8192,
        "chat_template": chat,
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write config");
    println!(
        "[{:5.1} s] Hugging Face folder written",
        t0.elapsed().as_secs_f64()
    );

    let conv_f16 = temp("convert-F16.gguf");
    let conv_q4 = temp("convert-Q4_K_M.gguf");
    run(Command::new(&python)
        .arg(&script)
        .arg(&dir)
        .args(["--outtype", "f16", "--outfile"])
        .arg(&conv_f16));
    run(Command::new(&quantize)
        .arg(&conv_f16)
        .arg(&conv_q4)
        .args(["Q4_K_M", "2"]));
    println!(
        "[{:5.1} s] convert_hf_to_gguf.py + llama-quantize done",
        t0.elapsed().as_secs_f64()
    );

    let source = ModelSource::HfDir(dir.clone());
    let mut unexpected = Vec::new();
    for (ft, theirs) in [(FileType::F16, &conv_f16), (FileType::Q4_K_M, &conv_q4)] {
        let ours = temp(&format!("forge-{}.gguf", ft.display_name()));
        let (report, _) =
            export(&source, &ExportOptions::new(ft), &ours, &mut |_| {}).expect("export");
        println!(
            "[{:5.1} s] forge {}: {:?}",
            t0.elapsed().as_secs_f64(),
            ft.display_name(),
            report.type_counts
        );
        let (a, b) = (
            GgufFile::open(&ours).expect("ours"),
            GgufFile::open(theirs).expect("theirs"),
        );
        let (diffs, same) = differences(&ft.display_name(), &a, &b);
        println!(
            "{}: {} metadata keys (llama.cpp {}), {} tensors (llama.cpp {}), {same} with identical type and bytes; {} differences:",
            ft.display_name(),
            a.metadata().len(),
            b.metadata().len(),
            a.tensor_count(),
            b.tensor_count(),
            diffs.len()
        );
        for (id, message) in &diffs {
            let known = KNOWN.contains(&id.as_str());
            println!("  {}{message}", if known { "known: " } else { "NEW: " });
            if !known {
                unexpected.push(message.clone());
            }
        }
        for k in KNOWN {
            assert!(
                diffs.iter().any(|(id, _)| id == k),
                "{}: `{k}` no longer differs: remove it from KNOWN (and the docs)",
                ft.display_name()
            );
        }
        assert_eq!(same, a.tensor_count(), "{}", ft.display_name());
        let head_dim: u32 = b.get("llama.attention.key_length").expect("key_length");
        let (hidden, heads): (u32, u32) = (
            a.get("llama.embedding_length").expect("hidden"),
            a.get("llama.attention.head_count").expect("heads"),
        );
        assert_eq!(head_dim, hidden / heads);
        assert_eq!(
            b.get::<u32>("llama.attention.value_length").ok(),
            Some(head_dim)
        );
        drop((a, b));
        std::fs::remove_file(&ours).ok();
    }
    for p in [&conv_f16, &conv_q4] {
        std::fs::remove_file(p).ok();
    }
    std::fs::remove_dir_all(dir.parent().expect("parent")).ok();
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}
