//! Overhead of routed and fused adapters against a single LoRA on
//! SmolLM2-135M-Instruct (issue 10): training tokens/s of MoELoRA, and
//! inference tokens/s of MoELoRA (unmerged, routed per token) and DLP-LoRA
//! (plugin + fusion per request, then the fused weights), each as a ratio to
//! single LoRA measured in the same process.
//!
//! `cargo bench -p forge-peft --bench moe_dlp_overhead`. Setup: the default
//! GGUF in f32; every projection of the last 8 blocks; LoRA rank 8;
//! MoELoRA 2 experts of rank 4 (dense softmax gate, the same adapter
//! parameters) and 4 experts of rank 2 with top-2 gating; DLP-LoRA with a
//! library of two rank-8 LoRAs and the default ~5M-parameter plugin, top-p 0.8.
//! Training: batches of 4 × 64 tokens (this repository's Rust sources),
//! AdamW, `FORGE_PEFT_BENCH_STEPS` (default 2) steps per system per round;
//! inference: a 32-token prompt, 32 greedy tokens per request. The systems
//! run interleaved for `FORGE_PEFT_BENCH_ROUNDS` (default 3; training) and
//! `FORGE_PEFT_BENCH_INFER_ROUNDS` (default: the same; inference) rounds
//! after a warm-up round, so load from other processes spreads over all of
//! them; each rate is the median over the rounds, per wall second and per
//! CPU second of this process (`/proc/self/stat`; other processes' load moves
//! it much less). The table goes to stdout and to
//! `<target>/forge-bench/peft-moe-dlp.md`.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use forge_model::{CausalLm, GenerateOptions, LoadOptions, Model, ModelSource, generate_ids, load};
use forge_peft::{
    DlpLora, Example, LoraLibrary, Method, MoeLoraConfig, MoeLoraModel, PeftConfig, PeftModel,
    Plugin, PluginConfig, Schedule, TrainOptions, Trainable, Trainer,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const LAYERS: usize = 8;
const SEQ: usize = 64;
const BATCH: usize = 4;
const PROMPT: usize = 32;
const NEW: usize = 32;

/// CPU seconds (user + system) of this process so far, from `/proc/self/stat`
/// (0 where there is none): on a shared machine other processes' load moves
/// them much less than wall time.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Wall seconds, CPU seconds and a count of `f`.
fn timed(f: impl FnOnce() -> Res<usize>) -> Res<[f64; 3]> {
    let (t, c) = (Instant::now(), cpu_seconds());
    let n = f()?;
    Ok([t.elapsed().as_secs_f64(), cpu_seconds() - c, n as f64])
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Token rows of `SEQ + 1` ids from this crate's Rust sources.
fn examples(tok: &forge_model::Tokenizer, n: usize) -> Res<Vec<Example>> {
    let mut text = String::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join("forge-peft/src"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    for f in files {
        text.push_str(&std::fs::read_to_string(f)?);
    }
    let ids = tok.encode(&text, false)?;
    let out: Vec<Example> = ids
        .chunks_exact(SEQ + 1)
        .take(n)
        .map(|c| Example {
            ids: c.to_vec(),
            counts: vec![true; c.len()],
        })
        .collect();
    if out.len() < n {
        return Err(format!("only {} rows of {} tokens", out.len(), SEQ + 1).into());
    }
    Ok(out)
}

/// Counted tokens of `steps` training steps.
fn train<M: Trainable + 'static>(
    m: &mut M,
    data: &[Example],
    steps: usize,
    pad: u32,
) -> Res<usize> {
    let opts = TrainOptions::new(steps)
        .with_batch_size(BATCH)
        .with_lr(1e-4)
        .with_schedule(Schedule::Constant)
        .with_spike_factor(1e9);
    let r = Trainer::new(opts).run(m, data, &[], pad, None)?;
    Ok(r.steps.iter().map(|s| s.tokens).sum())
}

fn generate(m: &mut dyn CausalLm, prompt: &[u32]) -> Res<usize> {
    let opts = GenerateOptions::new()
        .with_max_tokens(NEW)
        .with_temperature(0.0)
        .with_stop_at_eos(false);
    let mut n = 0;
    for t in generate_ids(m, prompt, &opts)? {
        t?;
        n += 1;
    }
    Ok(n)
}

fn main() -> Res<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("moe_dlp_overhead: run with `cargo bench -p forge-peft --bench moe_dlp_overhead`");
        return Ok(());
    }
    if forge_model::default_model_path().is_err() {
        if std::env::var("FORGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
            return Err("the default model is missing (cargo xtask model)".into());
        }
        println!("moe_dlp_overhead skipped: the default model is missing (cargo xtask model)");
        return Ok(());
    }
    let steps = env_usize("FORGE_PEFT_BENCH_STEPS", 2);
    let rounds = env_usize("FORGE_PEFT_BENCH_ROUNDS", 3);
    let infer_rounds = env_usize("FORGE_PEFT_BENCH_INFER_ROUNDS", rounds);
    let loaded = load(&ModelSource::Default, &LoadOptions::new())?;
    let tok = loaded.tokenizer.ok_or("no tokenizer")?;
    let base: Model = loaded.model;
    let pad = tok.eos_ids().first().copied().unwrap_or(0);
    let data = examples(&tok, BATCH * steps)?;
    let n = base.config().num_layers;
    let lora_cfg = |seed: u64| {
        PeftConfig::new(Method::Lora, 8, 16.0)
            .with_targets(["all-linear"])
            .with_layers(n - LAYERS..n)
            .with_seed(seed)
    };
    let moe_cfg = |e: usize, r: usize| {
        MoeLoraConfig::new(e, r, 2.0 * r as f32)
            .with_targets(["all-linear"])
            .with_layers(n - LAYERS..n)
    };
    let mut lora = PeftModel::new(base.clone(), lora_cfg(0))?;
    let mut moe2 = MoeLoraModel::new(base.clone(), moe_cfg(2, 4))?;
    let mut moe4 = MoeLoraModel::new(base.clone(), moe_cfg(4, 2).with_top_k(2))?;

    // Training: warm-up round, then interleaved rounds.
    let mut tt: Vec<[[f64; 3]; 3]> = Vec::new();
    for round in 0..=rounds {
        if rounds == 0 {
            break;
        }
        let r = [
            timed(|| train(&mut lora, &data, steps, pad))?,
            timed(|| train(&mut moe2, &data, steps, pad))?,
            timed(|| train(&mut moe4, &data, steps, pad))?,
        ];
        eprintln!("training round {round} [wall s, cpu s, tokens]: {r:?}");
        if round > 0 {
            tt.push(r);
        }
    }

    // Inference: LoRA merged once (as served), MoELoRA routed per token,
    // DLP-LoRA selecting and fusing per request.
    let mut merged = lora.merged_model()?;
    let other = PeftModel::new(base.clone(), lora_cfg(1))?;
    let library = LoraLibrary::new()
        .with_adapter("a", &lora)?
        .with_adapter("b", &other)?;
    let pcfg = PluginConfig::new(base.config().hidden_size, ["a", "b"]);
    let plugin_params = pcfg.num_parameters();
    let dlp = DlpLora::new(base.clone(), library, Plugin::new(pcfg)?, 0.8)?;
    let prompt: Vec<u32> = data[0].ids[..PROMPT].to_vec();
    let mut it: Vec<[[f64; 3]; 4]> = Vec::new();
    let mut fuse_s = 0.0f64;
    for round in 0..=infer_rounds {
        let mut f = 0.0;
        let r = [
            timed(|| generate(&mut merged, &prompt))?,
            timed(|| generate(&mut moe2, &prompt))?,
            timed(|| generate(&mut moe4, &prompt))?,
            timed(|| {
                let t = Instant::now();
                let (mut fused, _) = dlp.fused_for(&prompt)?;
                f = t.elapsed().as_secs_f64();
                generate(&mut fused, &prompt)
            })?,
        ];
        eprintln!(
            "inference round {round} [wall s, cpu s, tokens]: {r:?}, DLP select+fuse {f:.3} s"
        );
        if round > 0 {
            fuse_s += f;
            it.push(r);
        }
    }

    let mut md = String::new();
    md.push_str(&format!(
        "SmolLM2-135M f32, every projection of the last {LAYERS} blocks; training {BATCH} × {SEQ} tokens, \
         {steps} steps × {rounds} rounds per system; inference {PROMPT}-token prompt + {NEW} greedy tokens \
         per request × {infer_rounds} rounds (prefill included); DLP plugin {plugin_params} parameters. \
         Rates are medians over the rounds (systems interleaved within each round).\n\n"
    ));
    md.push_str(
        "| system | training tok/s | vs LoRA | training tok/CPU-s | vs LoRA | inference tok/s | vs LoRA | inference tok/CPU-s | vs LoRA |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    // Median tokens per wall second and per CPU second of system `i`.
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        }
    }
    fn rate<const N: usize>(rounds: &[[[f64; 3]; N]], i: usize) -> (f64, f64) {
        (
            median(rounds.iter().map(|r| r[i][2] / r[i][0]).collect()),
            median(rounds.iter().map(|r| r[i][2] / r[i][1].max(1e-9)).collect()),
        )
    }
    let (tw0, tc0) = rate(&tt, 0);
    let (iw0, ic0) = rate(&it, 0);
    let rows = [
        ("LoRA r8 (inference: merged)", Some(0), 0),
        ("MoELoRA 2 experts r4, softmax", Some(1), 1),
        ("MoELoRA 4 experts r2, top-2", Some(2), 2),
        ("DLP-LoRA, 2 LoRAs r8 (select + fuse per request)", None, 3),
    ];
    for (name, tr, inf) in rows {
        let train_cols = match tr {
            Some(i) => {
                let (w, c) = rate(&tt, i);
                format!("{w:.1} | {:.2}x | {c:.1} | {:.2}x", w / tw0, c / tc0)
            }
            None => "(the LoRAs' own) | — | — | —".to_string(),
        };
        let (w, c) = rate(&it, inf);
        md.push_str(&format!(
            "| {name} | {train_cols} | {w:.2} | {:.2}x | {c:.2} | {:.2}x |\n",
            w / iw0,
            c / ic0
        ));
    }
    md.push_str(&format!(
        "\nDLP-LoRA select + fuse: {:.3} s per request (mean of {infer_rounds}).\n",
        fuse_s / infer_rounds.max(1) as f64
    ));
    println!("{md}");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("forge-bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("peft-moe-dlp.md"), md)?;
    Ok(())
}
