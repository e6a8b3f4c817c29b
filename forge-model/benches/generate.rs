//! SmolLM2-135M-Instruct on CPU: prompt processing (128 tokens) and greedy
//! generation (32 tokens after a 128-token prompt), Forge against llama.cpp
//! (node-llama-cpp 3.21.1, 2 threads) in the same run.
//!
//! Function ids: `forge-f32` (the Q4_1 file dequantized to f32, MLX CPU;
//! prompt = one `forward_last` filling a fresh cache), `forge-cpu-q4_1` and
//! `forge-cpu-f16` (the CPU engine, `CpuModel`, on the Q4_1 file and on the
//! F16 copy: weights kept in their stored type),
//! `llama.cpp-q4_1` (the same file), `llama.cpp-f16` (an F16 copy written by
//! gguf-py, `tests/reference/gguf_to_f32.py --f16`, cached under
//! `target/forge-bench/`). Throughput is tokens (elements) per second.
//!
//! Needs the peers (`cargo xtask peers`); without them it prints
//! `skipped: peers not installed (cargo xtask peers)` and measures nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use forge_model::{CpuModel, GenerateOptions, LoadOptions, Model, ModelSource, load};
use mlx_rs::Array;

const PROMPT_TOKENS: usize = 128;
const GEN_TOKENS: usize = 32;
const THREADS: usize = 2;

fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

/// A running `llama_cpp_bench.mjs`.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(model: &Path) -> Option<Self> {
        let dir = peers_dir().join("node-llama-cpp");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/llama_cpp_bench.mjs");
        let mut child = Command::new("node")
            .current_dir(&dir)
            .arg(script)
            .arg(model)
            .arg(THREADS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        stdout.read_line(&mut line).ok()?;
        line.contains("ready").then_some(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn time(&mut self, request: serde_json::Value) -> Duration {
        writeln!(self.stdin, "{request}").expect("write to node");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from node");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json from node");
        Duration::from_nanos(v["ns"].as_u64().expect("ns"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn f16_copy(q4: &Path) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let out = target.join("forge-bench/SmolLM2-135M-Instruct.F16.gguf");
    if out.is_file() {
        return Some(out);
    }
    std::fs::create_dir_all(out.parent()?).ok()?;
    let tmp = out.with_extension("gguf.partial");
    let status = Command::new(peers_dir().join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/gguf_to_f32.py"))
        .arg(q4)
        .arg(&tmp)
        .arg("--f16")
        .status()
        .ok()?;
    (status.success() && std::fs::rename(&tmp, &out).is_ok()).then_some(out)
}

fn prompt_ids(model_tokens: &forge_model::Tokenizer) -> Vec<u32> {
    let text = "use std::collections::HashMap;\n\n/// Counts how often each word occurs.\n\
        pub fn count_words(text: &str) -> HashMap<String, usize> {\n    let mut counts = HashMap::new();\n\
        for word in text.split_whitespace() {\n        *counts.entry(word.to_lowercase()).or_insert(0) += 1;\n    }\n    counts\n}\n\n";
    let mut ids = Vec::new();
    while ids.len() < PROMPT_TOKENS {
        ids.extend(model_tokens.encode(text, false).expect("encode"));
    }
    ids.truncate(PROMPT_TOKENS);
    ids
}

fn forge_prompt(model: &mut Model, ids: &[u32]) {
    let v: Vec<i32> = ids.iter().map(|&x| x as i32).collect();
    let tokens = Array::from_slice(&v, &[1, v.len() as i32]);
    let mut cache = model.new_cache();
    let logits = model
        .forward_last(&tokens, Some(&mut cache))
        .expect("forward");
    logits.eval().expect("eval");
}

/// Time of `GEN_TOKENS` greedy steps after the prompt (prefill untimed).
fn forge_generate(model: &mut Model, ids: &[u32]) -> Duration {
    let options = GenerateOptions::new()
        .with_max_tokens(GEN_TOKENS + 1)
        .with_stop_at_eos(false);
    let mut stream = model.generate_ids(ids, &options).expect("stream");
    stream.next().expect("first").expect("token");
    let t0 = Instant::now();
    let mut n = 0;
    for t in stream {
        t.expect("token");
        n += 1;
    }
    assert_eq!(n, GEN_TOKENS);
    t0.elapsed()
}

fn cpu_prompt(model: &CpuModel, ids: &[u32]) {
    let mut cache = model.new_cache();
    model.forward_last(ids, &mut cache).expect("cpu forward");
}

/// Time of `GEN_TOKENS` greedy steps of the CPU engine after the prompt
/// (prefill untimed).
fn cpu_generate(model: &mut CpuModel, ids: &[u32]) -> Duration {
    let options = GenerateOptions::new()
        .with_max_tokens(GEN_TOKENS + 1)
        .with_stop_at_eos(false);
    let mut stream = model.generate_ids(ids, &options).expect("stream");
    stream.next().expect("first").expect("token");
    let t0 = Instant::now();
    let mut n = 0;
    for t in stream {
        t.expect("token");
        n += 1;
    }
    assert_eq!(n, GEN_TOKENS);
    t0.elapsed()
}

fn bench(c: &mut Criterion) {
    let q4 = peers_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !q4.is_file() || !peers_dir().join("node-llama-cpp/node_modules").is_dir() {
        println!("skipped: peers not installed (cargo xtask peers)");
        return;
    }
    let mut loaded = load(&ModelSource::Gguf(q4.clone()), &LoadOptions::new()).expect("load");
    let tokenizer = loaded.tokenizer.take().expect("tokenizer");
    let mut model = loaded.model;
    let ids = prompt_ids(&tokenizer);
    // One llama.cpp process at a time: its worker threads spin after each
    // batch, and two of them on 2 cores would slow everything else down.
    let mut peer_models: Vec<(&str, PathBuf)> = vec![("llama.cpp-q4_1", q4.clone())];
    if let Some(f) = f16_copy(&q4) {
        peer_models.push(("llama.cpp-f16", f));
    }

    let mut engines: Vec<(&str, CpuModel)> =
        vec![("forge-cpu-q4_1", CpuModel::open(&q4).expect("cpu engine"))];
    if let Some((_, f16)) = peer_models.get(1) {
        engines.push((
            "forge-cpu-f16",
            CpuModel::open(f16).expect("cpu engine f16"),
        ));
    }

    let mut g = c.benchmark_group("smollm2_prompt_128");
    g.throughput(Throughput::Elements(PROMPT_TOKENS as u64));
    g.bench_function(BenchmarkId::from_parameter("forge-f32"), |b| {
        b.iter(|| forge_prompt(&mut model, &ids));
    });
    for (name, engine) in &engines {
        g.bench_function(BenchmarkId::from_parameter(*name), |b| {
            b.iter(|| cpu_prompt(engine, &ids));
        });
    }

    for (name, path) in &peer_models {
        let Some(mut peer) = Peer::start(path) else {
            continue;
        };
        g.bench_function(BenchmarkId::from_parameter(*name), |b| {
            b.iter_custom(|iters| {
                peer.time(serde_json::json!({"op": "pp", "tokens": ids, "iters": iters}))
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("smollm2_generate_{GEN_TOKENS}"));
    g.throughput(Throughput::Elements(GEN_TOKENS as u64));
    g.bench_function(BenchmarkId::from_parameter("forge-f32"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| forge_generate(&mut model, &ids)).sum());
    });
    for (name, engine) in &mut engines {
        g.bench_function(BenchmarkId::from_parameter(*name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| cpu_generate(engine, &ids)).sum());
        });
    }
    for (name, path) in &peer_models {
        let Some(mut peer) = Peer::start(path) else {
            continue;
        };
        g.bench_function(BenchmarkId::from_parameter(*name), |b| {
            b.iter_custom(|iters| {
                peer.time(serde_json::json!({"op": "gen", "tokens": ids, "n": GEN_TOKENS, "iters": iters}))
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
