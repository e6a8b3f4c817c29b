//! LoRA training throughput and peak RSS: forge-peft against `mlx_lm lora`,
//! side by side, on SmolLM2-135M-Instruct (issue 6's headline benchmark).
//!
//! `cargo bench -p forge-peft --bench train_vs_mlx_lm` (also run by
//! `cargo xtask bench`). Both sides train the same model (the default GGUF,
//! dequantized to f32 and written as a Hugging Face folder for mlx-lm), on the
//! same `{"text"}` JSONL (chunks of this repository's Rust sources), with the
//! same recipe: rank 8, scale 20 (mlx-lm's defaults), every linear layer of
//! the last 16 blocks, batch 4, max sequence 512, Adam lr 1e-5, no clipping.
//! Each side runs as its own process under `/usr/bin/time -v`, one after the
//! other, so its peak RSS is its own. Forge runs three times: plain (its
//! step compiled, as mlx-lm's is), with gradient checkpointing
//! (`grad_checkpoint`, mlx-lm's `--grad-checkpoint` stays off as in its
//! defaults), and not compiled (`compile = false`) to show what compiling
//! the step gains. mlx-lm's PyPI `libmlx` uses the reference
//! BLAS, so it runs with OpenBLAS interposed (`LD_PRELOAD`) like our build.
//!
//! Throughput is tokens counted in the loss per second of training steps,
//! excluding the first step (graph building / compilation) on both sides;
//! mlx-lm runs through `benches/mlx_lm_lora_cpu.py` (its own parser, defaults
//! and `run`, plus a callback) which prints its per-step report (tokens/s,
//! trained tokens) with the process CPU time of the step. Both wall-clock
//! tokens/s and tokens per CPU-second are reported: on a shared machine the
//! second is the one that other load does not move.
//! Beside it: the PiSSA initialisation time for every projection of SmolLM2
//! (210 matrices, rank 8), randomized SVD (`niter` 4) and full SVD.
//!
//! Environment: `FORGE_PEFT_BENCH_STEPS` (default 5), `FORGE_PEERS_DIR`,
//! `FORGE_REQUIRE_PEERS=1` (a missing peer fails instead of skipping),
//! `FORGE_PEFT_BENCH_SKIP_SVD=1`. The table goes to stdout and to
//! `<target>/forge-bench/peft-train.md`.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use forge_model::{LoadOptions, ModelSource, load, write_hf_dir};
use forge_peft::{
    Method, PeftConfig, PeftModel, PromptStyle, Schedule, SvdMode, TrainOptions, Trainer,
    read_records, tokenize,
};

const OPENBLAS: &str = "/usr/lib/x86_64-linux-gnu/libopenblas.so.0";
const LAYERS: usize = 16;
const RANK: usize = 8;
const SCALE: f32 = 20.0;
const BATCH: usize = 4;
const MAX_SEQ: usize = 512;
const LR: f32 = 1e-5;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("forge-bench").join("peft-train")
}

fn steps() -> usize {
    std::env::var("FORGE_PEFT_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(2)
}

/// `{"text"}` records: this repository's Rust sources cut at line ends into
/// chunks of at most 1,600 characters (about 450 SmolLM2 tokens), in path order.
fn write_data(dir: &Path) -> Res<usize> {
    let mut files = Vec::new();
    let root = workspace();
    let mut stack: Vec<PathBuf> = ["forge-peft", "forge-model", "forge-miner", "forge-quant"]
        .iter()
        .map(|c| root.join(c).join("src"))
        .collect();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut chunks = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let mut cur = String::new();
        for line in text.lines() {
            if cur.len() + line.len() + 1 > 1600 && cur.len() > 400 {
                chunks.push(std::mem::take(&mut cur));
            }
            cur.push_str(line);
            cur.push('\n');
        }
        if cur.len() > 400 {
            chunks.push(cur);
        }
    }
    std::fs::create_dir_all(dir)?;
    let line = |c: &String| serde_json::json!({ "text": c }).to_string() + "\n";
    let valid: String = chunks.iter().take(8).map(line).collect();
    let train: String = chunks.iter().skip(8).map(line).collect();
    std::fs::write(dir.join("valid.jsonl"), valid)?;
    std::fs::write(dir.join("train.jsonl"), train)?;
    Ok(chunks.len() - 8)
}

/// The default model as an f32 Hugging Face folder with its real tokenizer.
fn write_model(dir: &Path) -> Res<()> {
    if dir.join("model.safetensors").exists() && dir.join("tokenizer_config.json").exists() {
        return Ok(());
    }
    let loaded = load(&ModelSource::Default, &LoadOptions::new())?;
    write_hf_dir(&loaded.model, dir)?;
    let tok = loaded
        .tokenizer
        .ok_or("the default model has no tokenizer")?;
    std::fs::write(
        dir.join("tokenizer.json"),
        tok.inner().to_string(false).map_err(|e| e.to_string())?,
    )?;
    let eos = tok.eos_ids().first().copied().ok_or("no eos id")?;
    let eos = tok.decode(&[eos], false)?;
    let cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": null,
        "eos_token": eos,
        "pad_token": eos,
        "model_max_length": 8192,
        "chat_template": tok.chat_template(),
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_vec_pretty(&cfg)?,
    )?;
    Ok(())
}

fn peft_config(method: Method, layers: std::ops::Range<usize>) -> PeftConfig {
    PeftConfig::new(method, RANK, SCALE * RANK as f32)
        .with_targets(["all-linear"])
        .with_layers(layers)
        .with_seed(0)
}

/// Child: trains with forge-peft and prints one JSON line.
fn child(dir: &Path, steps: usize, checkpoint: bool, compile: bool) -> Res<()> {
    let loaded = load(&ModelSource::HfDir(dir.join("model")), &LoadOptions::new())?;
    let tok = loaded.tokenizer.ok_or("no tokenizer")?;
    let n_layers = loaded.model.config().num_layers;
    let records = read_records(&dir.join("data/train.jsonl"))?;
    let train = tokenize(&records, &tok, PromptStyle::Plain, false, MAX_SEQ)?;
    let pad = tok.eos_ids().first().copied().unwrap_or(0);
    let mut peft = PeftModel::new(
        loaded.model,
        peft_config(Method::Lora, n_layers - LAYERS..n_layers),
    )?;
    let opts = TrainOptions::new(steps)
        .with_batch_size(BATCH)
        .with_lr(LR)
        .with_schedule(Schedule::Constant)
        .with_clip_grad_norm(0.0)
        .with_grad_checkpoint(checkpoint)
        .with_compile(compile);
    let cpu = std::rc::Rc::new(std::cell::RefCell::new((cpu_seconds(), Vec::new())));
    let c = cpu.clone();
    let report = Trainer::new(opts)
        .with_progress(move |m| {
            let mut c = c.borrow_mut();
            let now = cpu_seconds();
            let d = now - c.0;
            c.0 = now;
            c.1.push(d);
            eprintln!(
                "forge step {}: loss {:.4}, {} tokens, {:.1} tok/s, MLX peak {:.2} GB",
                m.step,
                m.loss,
                m.tokens,
                m.tokens_per_s,
                m.peak_memory as f64 / 1e9
            );
        })
        .run(&mut peft, &train, &[], pad, None)?;
    let cpu = cpu.borrow();
    let steps: Vec<serde_json::Value> = report
        .steps
        .iter()
        .zip(&cpu.1)
        .map(|(m, c)| serde_json::json!({"loss": m.loss, "tokens": m.tokens, "tokens_per_s": m.tokens_per_s, "cpu_s": c}))
        .collect();
    println!("{}", serde_json::json!({ "steps": steps }));
    Ok(())
}

/// CPU seconds (user + system, all threads) this process has used.
fn cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15, in USER_HZ (100 on Linux) ticks;
    // the command name (field 2) may hold spaces, so split after its `)`.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

struct Side {
    tokens_per_s: f64,
    /// Tokens per CPU-second (robust to other load on the machine).
    tokens_per_cpu_s: f64,
    peak_rss: u64,
    first_loss: f64,
    wall_s: f64,
}

/// Tokens per second over the steps after the first, from per-step
/// `(tokens, tokens_per_s)`.
fn throughput(steps: &[(f64, f64)]) -> f64 {
    let (mut tok, mut secs) = (0.0, 0.0);
    for &(t, tps) in steps.iter().skip(1) {
        tok += t;
        secs += t / tps;
    }
    tok / secs
}

/// Tokens per CPU-second over the steps after the first, from `(tokens, cpu_s)`.
fn cpu_throughput(steps: &[(f64, f64)]) -> f64 {
    let tok: f64 = steps.iter().skip(1).map(|s| s.0).sum();
    let cpu: f64 = steps.iter().skip(1).map(|s| s.1).sum();
    tok / cpu
}

fn max_rss(stderr: &str) -> Res<u64> {
    let kb = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .ok_or("no `Maximum resident set size` in /usr/bin/time output")?;
    Ok(kb.trim().parse::<u64>()? * 1024)
}

fn run_timed(mut cmd: Command, what: &str) -> Res<(String, String, f64)> {
    let t = Instant::now();
    let out = cmd.output()?;
    let wall = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("{what} failed ({}):\n{stdout}\n{stderr}", out.status).into());
    }
    Ok((stdout, stderr, wall))
}

fn run_forge(dir: &Path, steps: usize, mode: &str) -> Res<Side> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg(std::env::current_exe()?)
        .arg("--child")
        .arg(dir)
        .arg(steps.to_string())
        .arg(mode);
    let (stdout, stderr, wall) = run_timed(cmd, "forge-peft training")?;
    eprint!(
        "{}",
        stderr
            .lines()
            .filter(|l| l.starts_with("forge step"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    let json: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .last()
            .ok_or("the forge child printed nothing")?,
    )?;
    let steps = json["steps"].as_array().ok_or("no steps")?;
    let num = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    let per: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (num(s, "tokens"), num(s, "tokens_per_s")))
        .collect();
    let cpu: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (num(s, "tokens"), num(s, "cpu_s")))
        .collect();
    Ok(Side {
        tokens_per_s: throughput(&per),
        tokens_per_cpu_s: cpu_throughput(&cpu),
        peak_rss: max_rss(&stderr)?,
        first_loss: json["steps"][0]["loss"].as_f64().unwrap_or(f64::NAN),
        wall_s: wall,
    })
}

fn run_mlx_lm(python: &Path, dir: &Path, steps: usize) -> Res<Side> {
    let adapters = dir.join("mlx-lm-adapters");
    let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mlx_lm_lora_cpu.py");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg(python)
        .arg(wrapper)
        .args(["--train", "--model"])
        .arg(dir.join("model"))
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--fine-tune-type", "lora", "--optimizer", "adam"])
        .args(["--num-layers", &LAYERS.to_string()])
        .args(["--batch-size", &BATCH.to_string()])
        .args(["--max-seq-length", &MAX_SEQ.to_string()])
        .args(["--iters", &steps.to_string()])
        .args(["--learning-rate", &LR.to_string()])
        .args(["--steps-per-report", "1", "--steps-per-eval", "100000"])
        .args(["--val-batches", "1", "--seed", "0"])
        .arg("--adapter-path")
        .arg(&adapters)
        .env("LD_PRELOAD", OPENBLAS)
        .env("PYTHONUNBUFFERED", "1");
    let (stdout, stderr, wall) = run_timed(cmd, "mlx_lm lora")?;
    let mut per = Vec::new();
    let mut cpu = Vec::new();
    let mut prev_total = 0.0;
    let mut first_loss = f64::NAN;
    for line in stdout.lines().filter_map(|l| l.strip_prefix("FORGE_STEP ")) {
        eprintln!("mlx-lm step {line}");
        let v: serde_json::Value = serde_json::from_str(line)?;
        let num = |k: &str| v[k].as_f64().ok_or_else(|| format!("no `{k}` in {line}"));
        let total = num("trained_tokens")?;
        if per.is_empty() {
            first_loss = num("train_loss")?;
        }
        per.push((total - prev_total, num("tokens_per_second")?));
        cpu.push((total - prev_total, num("cpu_s")?));
        prev_total = total;
    }
    if per.len() < 2 {
        return Err(format!("mlx_lm lora reported fewer than 2 steps:\n{stdout}\n{stderr}").into());
    }
    Ok(Side {
        tokens_per_s: throughput(&per),
        tokens_per_cpu_s: cpu_throughput(&cpu),
        peak_rss: max_rss(&stderr)?,
        first_loss,
        wall_s: wall,
    })
}

fn pissa_init_times(dir: &Path) -> Res<(usize, f64, f64)> {
    let loaded = load(
        &ModelSource::HfDir(dir.join("model")),
        &LoadOptions::new().with_tokenizer(false),
    )?;
    let n = loaded.model.config().num_layers;
    let mut times = Vec::new();
    let mut count = 0;
    for svd in [
        SvdMode::Randomized {
            niter: 4,
            oversample: 8,
        },
        SvdMode::Full,
    ] {
        let cfg = peft_config(Method::Pissa, 0..n).with_svd(svd);
        let t = Instant::now();
        let peft = PeftModel::new(loaded.model.clone(), cfg)?;
        times.push(t.elapsed().as_secs_f64());
        count = peft
            .modules()
            .filter(|(_, l)| l.adapter().is_some())
            .count();
    }
    Ok((count, times[0], times[1]))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let dir = PathBuf::from(&args[i + 1]);
        let steps: usize = args[i + 2].parse()?;
        let mode = args.get(i + 3).map_or("plain", String::as_str);
        return child(
            &dir,
            steps,
            mode.contains("checkpoint"),
            !mode.contains("uncompiled"),
        );
    }
    if let Some(i) = args.iter().position(|a| a == "--svd-only") {
        let (n, fast, full) = pissa_init_times(Path::new(&args[i + 1]))?;
        println!(
            "PiSSA init, {n} matrices: randomized SVD niter 4 {fast:.2} s, full SVD {full:.2} s"
        );
        return Ok(());
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: skip the work then.
    if !args.iter().any(|a| a == "--bench") {
        println!("train_vs_mlx_lm: run with `cargo bench -p forge-peft --bench train_vs_mlx_lm`");
        return Ok(());
    }
    let peers = std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".forge/peers"));
    let python = peers.join("mlx-lm-venv/bin/python");
    if !python.exists() || forge_model::default_model_path().is_err() {
        if std::env::var("FORGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            return Err(
                "peers not installed (cargo xtask peers): mlx-lm-venv or the default model".into(),
            );
        }
        println!("train_vs_mlx_lm skipped: peers not installed (cargo xtask peers)");
        return Ok(());
    }
    let dir = work_dir();
    let steps = steps();
    eprintln!("preparing {}", dir.display());
    write_model(&dir.join("model"))?;
    let n_train = write_data(&dir.join("data"))?;
    eprintln!("{n_train} training records; {steps} steps per side");
    let forge = run_forge(&dir, steps, "plain")?;
    let forge_ck = run_forge(&dir, steps, "checkpoint")?;
    let forge_eager = run_forge(&dir, steps, "plain-uncompiled")?;
    let mlx = run_mlx_lm(&python, &dir, steps)?;
    let svd = if std::env::var("FORGE_PEFT_BENCH_SKIP_SVD").is_ok_and(|v| v == "1") {
        None
    } else {
        Some(pissa_init_times(&dir)?)
    };
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut md = String::new();
    md.push_str(&format!(
        "LoRA training, SmolLM2-135M f32, last {LAYERS} blocks all-linear, rank {RANK}, batch {BATCH}, \
         max seq {MAX_SEQ}, {steps} steps (first excluded), {n_train} records\n\n"
    ));
    md.push_str("| side | tokens/s (wall) | tokens per CPU-second | peak RSS (GiB) | first-step loss | process wall (s) |\n|---|---|---|---|---|---|\n");
    for (name, s) in [
        ("forge-peft", &forge),
        ("forge-peft, gradient checkpointing", &forge_ck),
        ("forge-peft, not compiled (`compile = false`)", &forge_eager),
        ("mlx_lm lora 0.32.2", &mlx),
    ] {
        md.push_str(&format!(
            "| {name} | {:.1} | {:.1} | {:.2} | {:.4} | {:.0} |\n",
            s.tokens_per_s,
            s.tokens_per_cpu_s,
            gib(s.peak_rss),
            s.first_loss,
            s.wall_s
        ));
    }
    md.push('\n');
    for (name, s) in [
        ("forge-peft", &forge),
        ("with checkpointing", &forge_ck),
        ("not compiled", &forge_eager),
    ] {
        md.push_str(&format!(
            "- {name} / mlx-lm: tokens/s {:.2}x (per CPU-second {:.2}x; goal ≥ 1.3x), peak RSS {:.2}x (goal ≤ 0.8x)\n",
            s.tokens_per_s / mlx.tokens_per_s,
            s.tokens_per_cpu_s / mlx.tokens_per_cpu_s,
            s.peak_rss as f64 / mlx.peak_rss as f64
        ));
    }
    if let Some((n, fast, full)) = svd {
        md.push_str(&format!(
            "\nPiSSA init, rank {RANK}, {n} matrices (every projection of every block): \
             randomized SVD niter 4: {fast:.2} s; full SVD: {full:.2} s\n"
        ));
    }
    println!("\n{md}");
    std::fs::write(dir.parent().expect("parent").join("peft-train.md"), &md)?;
    Ok(())
}
