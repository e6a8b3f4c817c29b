//! `gpu_bench`: Forge's training, PiSSA initialisation and generation speed on
//! the two shapes of the GPU benchmark, one JSON line per measurement, so the
//! same run can put mlx-lm and PyTorch + PEFT (the scripts beside this file)
//! next to it. See this folder's README for the whole procedure.
//!
//! Shapes (random weights, seeded; tied embeddings, vocabulary 49,152):
//! - `smollm2`: SmolLM2-135M — hidden 576, 30 layers, 9 query / 3 key-value
//!   heads, MLP 1,536;
//! - `llama1b`: a Llama-1B-like decoder — hidden 2,048, 16 layers, 32 / 8
//!   heads, MLP 8,192.
//!
//! Training recipe (all three tools): LoRA rank 8 on every linear layer of the
//! last 16 blocks, scale 20 (α = 160), AdamW lr 1e-5, no clipping, sequences
//! of 512 tokens from `data.json` (real code tokens written by `gpu_bench
//! data`), batch 4 (`smollm2`) or 8 (`llama1b`). Throughput counts the tokens
//! in the loss per second of training step, the median over the steps after
//! the first two (graph building, kernel compilation, allocator warm-up).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use forge_core::mlx::{DeviceChoice, gpu_backend, mlx_rs, select_device};
use forge_core::model::{
    Architecture, GenerateOptions, LoadOptions, Model, ModelConfig, ModelSource, load, random_model,
};
use forge_core::peft::{
    Example, Method, PeftConfig, PeftModel, Schedule, SvdMode, TrainOptions, Trainer,
};
use mlx_rs::Dtype;
use mlx_rs::module::ModuleParameters;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Forge GPU/CPU benchmark: training, PiSSA init and generation on fixed shapes")]
struct Cli {
    /// Device: auto (GPU when present), cpu or gpu
    #[arg(long, default_value = "auto", global = true)]
    device: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Shape {
    Smollm2,
    Llama1b,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Precision {
    Bf16,
    F16,
    F32,
}

impl Precision {
    fn dtype(self) -> Dtype {
        match self {
            Self::Bf16 => Dtype::Bfloat16,
            Self::F16 => Dtype::Float16,
            Self::F32 => Dtype::Float32,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Tokenize this repository's Rust sources with the default model's
    /// tokenizer into `--n` sequences of exactly `--seq` tokens (JSON array
    /// of arrays), the data every tool trains on
    Data {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 256)]
        n: usize,
        #[arg(long, default_value_t = 512)]
        seq: usize,
    },
    /// LoRA training throughput and peak memory
    Train {
        #[arg(long, value_enum)]
        shape: Shape,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        batch: usize,
        #[arg(long, default_value_t = 12)]
        steps: usize,
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: Precision,
        /// Gradient checkpointing
        #[arg(long)]
        checkpoint: bool,
        /// Do not compile the training step (`compile = false`)
        #[arg(long)]
        eager: bool,
        /// Queue step n+1 before landing step n (`overlap_steps = true`)
        #[arg(long)]
        overlap: bool,
    },
    /// PiSSA initialisation of every projection (rank 8): randomized SVD
    /// (`--niter`) or, with `--full`, the full SVD
    Pissa {
        #[arg(long, value_enum)]
        shape: Shape,
        #[arg(long, default_value_t = 4)]
        niter: usize,
        #[arg(long)]
        full: bool,
    },
    /// Greedy generation speed (prompt processing and decoding)
    Generate {
        #[arg(long, value_enum)]
        shape: Shape,
        #[arg(long, default_value_t = 128)]
        prompt: usize,
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: Precision,
    },
}

/// The shape's configuration (what the Python scripts build too).
fn config(shape: Shape) -> ModelConfig {
    match shape {
        Shape::Smollm2 => ModelConfig::new(Architecture::Llama, 49152, 576, 1536, 30, 9)
            .with_num_kv_heads(3)
            .with_rope_theta(100_000.0),
        Shape::Llama1b => ModelConfig::new(Architecture::Llama, 49152, 2048, 8192, 16, 32)
            .with_num_kv_heads(8)
            .with_rope_theta(500_000.0),
    }
    .with_rms_norm_eps(1e-5)
    .with_tie_word_embeddings(true)
    .with_special_tokens(None, vec![0])
}

fn model(shape: Shape, dtype: Dtype) -> Result<Model> {
    let t = Instant::now();
    let mut m = random_model(config(shape), 0)?;
    if dtype != Dtype::Float32 {
        for (_, p) in m.parameters_mut().flatten().iter_mut() {
            **p = p.as_dtype(dtype)?;
        }
    }
    let params: Vec<&mlx_rs::Array> = m.parameters().flatten().into_values().collect();
    mlx_rs::transforms::eval(params)?;
    eprintln!(
        "gpu_bench: {shape:?} random weights ({dtype:?}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(m)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn device_name() -> String {
    match gpu_backend() {
        Some(b)
            if matches!(
                mlx_rs::Device::try_default().and_then(|d| d.get_type()),
                Ok(mlx_rs::DeviceType::Gpu)
            ) =>
        {
            format!("gpu ({b:?})")
        }
        _ => "cpu".into(),
    }
}

fn data(out: &Path, n: usize, seq: usize) -> Result<()> {
    let loaded = load(&ModelSource::Default, &LoadOptions::new())
        .context("the default model (run `cargo xtask model`)")?;
    let tok = loaded
        .tokenizer
        .context("the default model has no tokenizer")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let p = e?.path();
            let name = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && !name.starts_with("target-") {
                    stack.push(p);
                }
            } else if name.ends_with(".rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut ids: Vec<u32> = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
        ids.extend(tok.encode(&text, false)?);
        if ids.len() >= n * seq {
            break;
        }
    }
    if ids.len() < n * seq {
        bail!(
            "only {} tokens of Rust source for {n} x {seq}; ask for fewer sequences",
            ids.len()
        );
    }
    let seqs: Vec<&[u32]> = ids.chunks(seq).take(n).collect();
    let tmp = out.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&seqs)?)?;
    std::fs::rename(&tmp, out)?;
    eprintln!("gpu_bench: {n} x {seq} tokens -> {}", out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn train(
    shape: Shape,
    data: &Path,
    batch: usize,
    steps: usize,
    dtype: Dtype,
    ckpt: bool,
    compile: bool,
    overlap: bool,
) -> Result<()> {
    let seqs: Vec<Vec<u32>> =
        serde_json::from_slice(&std::fs::read(data).with_context(|| data.display().to_string())?)
            .with_context(|| {
            format!(
                "{}: expected a JSON array of token-id arrays",
                data.display()
            )
        })?;
    let examples: Vec<Example> = seqs
        .iter()
        .map(|ids| Example {
            ids: ids.clone(),
            counts: std::iter::once(false)
                .chain(std::iter::repeat_n(true, ids.len().saturating_sub(1)))
                .collect(),
        })
        .collect();
    let seq = seqs.first().map_or(0, Vec::len);
    let cfg = config(shape);
    let layers = cfg.num_layers;
    let base = model(shape, dtype)?;
    let peft_cfg = PeftConfig::new(Method::Lora, 8, 160.0)
        .with_targets(["all-linear"])
        .with_layers(layers - 16..layers)
        .with_seed(0);
    let mut peft = PeftModel::new(base, peft_cfg)?;
    let opts = TrainOptions::new(steps)
        .with_batch_size(batch)
        .with_lr(1e-5)
        .with_schedule(Schedule::Constant)
        .with_clip_grad_norm(0.0)
        // Like mlx-lm's trainer (no clipping, no norm): the gradient norm
        // is not measured.
        .with_grad_norm_every(0)
        .with_grad_checkpoint(ckpt)
        .with_compile(compile)
        .with_overlap_steps(overlap);
    let per_step = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = per_step.clone();
    mlx_rs::memory::reset_peak_memory()?;
    let t = Instant::now();
    let report = Trainer::new(opts)
        .with_progress(move |m| {
            eprintln!(
                "forge step {}: loss {:.4}, {} tokens, {:.0} tok/s, peak {:.2} GiB",
                m.step,
                m.loss,
                m.tokens,
                m.tokens_per_s,
                m.peak_memory as f64 / (1u64 << 30) as f64
            );
            sink.borrow_mut().push(m.tokens_per_s);
        })
        .run(&mut peft, &examples, &[], 0, None)?;
    let wall = t.elapsed().as_secs_f64();
    let tps: Vec<f64> = per_step.borrow().iter().skip(2).copied().collect();
    let peak = report.steps.last().map_or(0, |m| m.peak_memory);
    println!(
        "{}",
        json!({
            "tool": "forge", "task": "train", "shape": format!("{shape:?}").to_lowercase(),
            "device": device_name(), "dtype": format!("{dtype:?}"), "batch": batch, "seq": seq,
            "steps": steps, "checkpoint": ckpt, "compiled": compile, "overlap_steps": overlap, "tokens_per_s": median(tps),
            "peak_memory_gib": peak as f64 / (1u64 << 30) as f64,
            "final_loss": report.steps.last().map(|m| m.loss), "wall_s": wall,
        })
    );
    Ok(())
}

fn pissa(shape: Shape, niter: usize, full: bool) -> Result<()> {
    let base = model(shape, Dtype::Float32)?;
    let layers = base.config().num_layers;
    let svd = if full {
        SvdMode::Full
    } else {
        SvdMode::Randomized {
            niter,
            oversample: 0,
        }
    };
    let cfg = PeftConfig::new(Method::Pissa, 8, 16.0)
        .with_targets(["all-linear"])
        .with_layers(0..layers)
        .with_svd(svd)
        .with_seed(0);
    let t = Instant::now();
    let peft = PeftModel::new(base, cfg)?;
    let init = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "tool": "forge", "task": "pissa_init", "shape": format!("{shape:?}").to_lowercase(),
            "device": device_name(), "svd": if full { "full".to_string() } else { format!("niter_{niter}") },
            "matrices": peft.modules().count(), "seconds": init,
        })
    );
    Ok(())
}

fn generate(shape: Shape, prompt: usize, tokens: usize, dtype: Dtype) -> Result<()> {
    let mut m = model(shape, dtype)?;
    let ids: Vec<u32> = (0..prompt as u32)
        .map(|i| 100 + (i * 37) % 40_000)
        .collect();
    let opts = GenerateOptions::new()
        .with_max_tokens(tokens)
        .with_stop_at_eos(false);
    // Warm-up of the same length (every kernel shape the timed run meets is
    // compiled by then), then the timed run.
    for id in m.generate_ids(&ids, &opts)? {
        id?;
    }
    let t = Instant::now();
    let mut first = None;
    let mut n = 0usize;
    for id in m.generate_ids(&ids, &opts)? {
        id?;
        n += 1;
        if first.is_none() {
            first = Some(t.elapsed().as_secs_f64());
        }
    }
    let total = t.elapsed().as_secs_f64();
    let ttft = first.unwrap_or(total);
    println!(
        "{}",
        json!({
            "tool": "forge", "task": "generate", "shape": format!("{shape:?}").to_lowercase(),
            "device": device_name(), "dtype": format!("{dtype:?}"), "prompt": prompt, "tokens": n,
            "prompt_tokens_per_s": prompt as f64 / ttft,
            "generation_tokens_per_s": (n.saturating_sub(1)) as f64 / (total - ttft).max(1e-9),
        })
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let choice: DeviceChoice = cli.device.parse()?;
    if matches!(cli.command, Cmd::Train { .. }) {
        // Training: direct CUDA launches; generation keeps CUDA graphs.
        forge_core::mlx::prefer_direct_cuda_launches();
    }
    select_device(choice)?;
    eprintln!("gpu_bench: device {}", device_name());
    match cli.command {
        Cmd::Data { out, n, seq } => data(&out, n, seq),
        Cmd::Train {
            shape,
            data: d,
            batch,
            steps,
            dtype,
            checkpoint,
            eager,
            overlap,
        } => train(
            shape,
            &d,
            batch,
            steps,
            dtype.dtype(),
            checkpoint,
            !eager,
            overlap,
        ),
        Cmd::Pissa { shape, niter, full } => pissa(shape, niter, full),
        Cmd::Generate {
            shape,
            prompt,
            tokens,
            dtype,
        } => generate(shape, prompt, tokens, dtype.dtype()),
    }
}
