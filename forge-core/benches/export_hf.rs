//! SmolLM2-135M-Instruct as a Hugging Face folder (f16 `model.safetensors`,
//! its `tokenizer.json`) → Q4_K_M GGUF, side by side in one run:
//!
//! - `forge`: `forge_core::export::export` in-process — what `forge export
//!   --model DIR --type q4_k_m` runs: forge-model loads the folder into MLX
//!   (f32), forge-gguf quantizes tensor by tensor and writes the file;
//! - `convert_hf_to_gguf+llama-quantize`: llama.cpp's pipeline as its README
//!   gives it, `convert_hf_to_gguf.py DIR --outtype f16` (the
//!   `llama-cpp-python==0.3.36` sdist, PyTorch 2.11.0 on the CPU) then
//!   `llama-quantize F16 OUT Q4_K_M 2`, as subprocesses (interpreter start
//!   included).
//!
//! Both outputs are byte-identical (`tests/export_convert_hf.rs`). Wall time:
//! criterion, group `smollm2_hf_to_q4_k_m`. Peak RSS: each side once under
//! `/usr/bin/time -f %M` (Forge re-runs this binary with
//! `FORGE_EXPORT_HF_BENCH_CHILD` set; the peer pipeline's peak is the larger
//! of its two processes'), printed as `peak RSS: …`.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{BenchmarkId, Criterion, Throughput};
use forge_core::export::{ExportOptions, export};
use forge_core::gguf::GgufFile;
use forge_core::gguf::export::FileType;
use forge_core::model::{LoadOptions, ModelSource, load, write_hf_dir};
use mlx_rs::Dtype;
use serde_json::json;

const CHILD: &str = "FORGE_EXPORT_HF_BENCH_CHILD";

fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

fn forge_export(dir: &Path, out: &Path) {
    export(
        &ModelSource::HfDir(dir.to_path_buf()),
        &ExportOptions::new(FileType::Q4_K_M),
        out,
        &mut |_| {},
    )
    .expect("forge export");
}

/// SmolLM2 (from its GGUF, as f16) written as a Hugging Face folder with its
/// own tokenizer and special tokens.
fn write_folder(gguf: &Path, dir: &Path) {
    let mut loaded = load(
        &ModelSource::Gguf(gguf.to_path_buf()),
        &LoadOptions::new().with_dtype(Dtype::Float16),
    )
    .expect("load");
    let tok = loaded.tokenizer.take().expect("tokenizer");
    write_hf_dir(&loaded.model, dir).expect("hf dir");
    let src = GgufFile::open(gguf).expect("source");
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
}

fn checked(cmd: &mut Command) {
    let out = cmd.output().expect("start");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn peak_rss_mib(cmd: &mut Command) -> Option<f64> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = text.lines().last()?.trim().parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    if let Ok(args) = std::env::var(CHILD) {
        let (dir, out) = args.split_once('\n').expect("child args");
        forge_export(Path::new(dir), Path::new(out));
        return;
    }
    let peers = peers_dir();
    let gguf = peers.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let python = peers.join("convert-venv/bin/python");
    let script = peers.join("llama-cpp/src/convert_hf_to_gguf.py");
    let quantize = peers.join("llama-cpp/build/bin/llama-quantize");
    if !gguf.is_file() {
        println!("skipped: peers not installed (cargo xtask peers)");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("forge-export-hf-bench-{}", std::process::id()));
    let dir = tmp.join("SmolLM2-135M-Instruct");
    std::fs::create_dir_all(&dir).expect("temp dir");
    write_folder(&gguf, &dir);
    let ours = tmp.join("forge-q4_k_m.gguf");
    let f16 = tmp.join("convert-f16.gguf");
    let theirs = tmp.join("llama-quantize-q4_k_m.gguf");
    let convert = || {
        let mut c = Command::new(&python);
        c.arg(&script)
            .arg(&dir)
            .args(["--outtype", "f16", "--outfile"])
            .arg(&f16);
        c
    };
    let requantize = || {
        let mut c = Command::new(&quantize);
        c.arg(&f16).arg(&theirs).args(["Q4_K_M", "2"]);
        c
    };
    let peer = [&python, &script, &quantize].iter().all(|p| p.is_file());

    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut g = c.benchmark_group("smollm2_hf_to_q4_k_m");
    forge_export(&dir, &ours);
    let params = GgufFile::open(&ours)
        .expect("ours")
        .tensor_infos()
        .iter()
        .map(|t| t.n_elements())
        .sum::<u64>();
    g.throughput(Throughput::Elements(params));
    g.bench_function(BenchmarkId::from_parameter("forge"), |b| {
        b.iter(|| forge_export(&dir, &ours));
    });
    if peer {
        g.bench_function(
            BenchmarkId::from_parameter("convert_hf_to_gguf+llama-quantize"),
            |b| {
                b.iter(|| {
                    checked(&mut convert());
                    checked(&mut requantize());
                });
            },
        );
    } else {
        println!("convert_hf_to_gguf.py's venv or llama-quantize missing (cargo xtask peers)");
    }
    g.finish();

    if Path::new("/usr/bin/time").is_file() {
        // The same command under `/usr/bin/time -f %M`.
        let timed = |c: Command| {
            let mut t = Command::new("/usr/bin/time");
            t.args(["-f", "%M"]).arg(c.get_program()).args(c.get_args());
            for (k, v) in c.get_envs() {
                if let Some(v) = v {
                    t.env(k, v);
                }
            }
            peak_rss_mib(&mut t)
        };
        let me = std::env::current_exe().expect("current exe");
        let mut child = Command::new(&me);
        child.env(CHILD, format!("{}\n{}", dir.display(), ours.display()));
        let forge = timed(child);
        let (conv, quant) = if peer {
            (timed(convert()), timed(requantize()))
        } else {
            (None, None)
        };
        let show = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.1} MiB"));
        println!(
            "peak RSS: forge {}, convert_hf_to_gguf.py {}, llama-quantize {}, peer pipeline {}",
            show(forge),
            show(conv),
            show(quant),
            show(conv.zip(quant).map(|(a, b)| a.max(b)))
        );
    }
    c.final_summary();
    std::fs::remove_dir_all(&tmp).ok();
}
