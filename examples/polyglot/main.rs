//! Multi-task adapters on a polyglot code base: one shared LoRA, one LoRA per
//! language with oracle routing, MoELoRA (routed experts) and DLP-LoRA
//! (a plugin that picks and fuses the per-language LoRAs per request), all on
//! SmolLM2-135M with the same training budget. Reports per-language held-out
//! loss and CodeBLEU as a Markdown table, an SVG plot and JSON. See
//! `examples/polyglot/README.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use forge_core::judge::{CodeBleu, Lang};
use forge_core::miner::{Budget, Miner, NoProgress};
use forge_core::mlx::mlx_rs::Array;
use forge_core::model::{
    CausalLm, GenerateOptions, LoadOptions, Model, ModelSource, Tokenizer, generate_ids, load,
};
use forge_core::peft::{
    DlpLora, Example, LoraLibrary, Method, MoeLoraConfig, MoeLoraModel, PeftConfig, PeftModel,
    Plugin, PluginConfig, PluginTrainOptions, Schedule, TrainOptions, Trainable, Trainer, collate,
    masked_nll_sum, sentence_features_batch,
};

#[derive(Parser)]
#[command(about = "Shared LoRA vs per-language LoRAs vs MoELoRA vs DLP-LoRA on Rust + Python code")]
struct Args {
    /// Rust sources to mine (this repository's own code by default)
    #[arg(long, default_value = "forge-miner/src")]
    rust: PathBuf,
    /// Python sources to mine; default: the mlx_lm package that `cargo xtask peers`
    /// installs (mlx-lm 0.32.2) under .forge/peers/mlx-lm-venv
    #[arg(long)]
    python: Option<PathBuf>,
    /// Model: `default` (SmolLM2-135M-Instruct), a .gguf or a Hugging Face folder
    #[arg(long, default_value = "default")]
    model: String,
    /// Output folder (results.md, results.svg, results.json)
    #[arg(long, default_value = "target/polyglot")]
    out: PathBuf,
    /// Optimizer steps of the shared LoRA and of MoELoRA; each per-language
    /// LoRA gets steps / languages, so every system sees the same examples
    #[arg(long, default_value_t = 12)]
    steps: usize,
    /// Examples per step
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Context tokens: the end of the code before the body
    #[arg(long, default_value_t = 24)]
    ctx: usize,
    /// Body tokens trained on and generated for CodeBLEU
    #[arg(long, default_value_t = 32)]
    body: usize,
    /// Adapt every projection of the last N blocks
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// LoRA rank (α = 2r); MoELoRA experts get rank r / experts each (same parameters)
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// MoELoRA experts
    #[arg(long, default_value_t = 2)]
    experts: usize,
    /// MoELoRA top-k gating (0 = dense softmax)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Learning rate (constant after 2 warmup steps)
    #[arg(long, default_value_t = 5e-4)]
    lr: f32,
    /// DLP-LoRA top-p
    #[arg(long, default_value_t = 0.8)]
    top_p: f32,
    /// DLP plugin hidden widths (comma separated; 2048,2048 ≈ 5M parameters)
    #[arg(long, default_value = "2048,2048")]
    plugin_hidden: String,
    /// Held-out examples per language for the loss
    #[arg(long, default_value_t = 16)]
    eval: usize,
    /// Held-out examples per language for CodeBLEU (greedy generation)
    #[arg(long, default_value_t = 6)]
    bleu: usize,
    /// Seed (file split, data order, adapter init)
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const LANGS: [&str; 2] = ["rust", "python"];
const SYSTEMS: [&str; 4] = [
    "shared LoRA",
    "per-language LoRA (oracle)",
    "MoELoRA",
    "DLP-LoRA",
];

/// One mined function: its language, the code before the body and the body.
struct Sample {
    lang: usize,
    head: String,
    body: String,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn default_python() -> Result<PathBuf> {
    let peers = std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".forge/peers"));
    let lib = peers.join("mlx-lm-venv").join("lib");
    let rd = std::fs::read_dir(&lib).with_context(|| {
        format!(
            "{}: no mlx-lm venv (run `cargo xtask peers`, or pass --python DIR)",
            lib.display()
        )
    })?;
    let mut found: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages").join("mlx_lm"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("{}: no python*/site-packages/mlx_lm", lib.display()))
}

/// Mines callable units with a body; `(train, held_out)` split by file.
fn mine(root: &Path, lang: usize, seed: u64) -> Result<(Vec<Sample>, Vec<Sample>)> {
    let mined = Miner::new(root)
        .with_budget(Budget::chars(100_000))
        .with_seed(seed)
        .mine(&NoProgress)
        .with_context(|| format!("mining {}", root.display()))?;
    let (mut train, mut held) = (Vec::new(), Vec::new());
    let mut keyed = Vec::new();
    for u in mined.units() {
        if u.language != LANGS[lang] || u.part.is_some() || !u.kind.is_callable() {
            continue;
        }
        let (Some(body), Some((b0, _))) = (u.body_text(), u.body) else {
            continue;
        };
        let Some(head) = u.text.get(..b0.saturating_sub(u.start_byte)) else {
            continue;
        };
        if body.trim().len() < 16 {
            continue;
        }
        let file_key = mix(seed ^ fnv(&u.path));
        keyed.push((
            file_key,
            mix(seed ^ fnv(&u.id)),
            Sample {
                lang,
                head: head.to_string(),
                body: body.to_string(),
            },
        ));
    }
    // Whole files: one in five held out.
    keyed.sort_by_key(|k| (k.1, k.0));
    for (file_key, _, s) in keyed {
        if file_key % 5 == 0 {
            held.push(s);
        } else {
            train.push(s);
        }
    }
    if train.is_empty() || held.is_empty() {
        bail!(
            "{}: {} training and {} held-out {} functions; need both",
            root.display(),
            train.len(),
            held.len(),
            LANGS[lang]
        );
    }
    Ok((train, held))
}

/// `ctx` tokens before the body, then `body` body tokens (counted in the loss).
fn example(tok: &Tokenizer, s: &Sample, ctx: usize, body: usize) -> Result<Option<Example>> {
    let h = tok.encode(&s.head, false)?;
    let b = tok.encode(&s.body, false)?;
    if h.is_empty() || b.len() < 4 {
        return Ok(None);
    }
    let h = &h[h.len().saturating_sub(ctx)..];
    let b = &b[..b.len().min(body)];
    let mut ids = h.to_vec();
    ids.extend_from_slice(b);
    let counts = (0..ids.len()).map(|i| i >= h.len()).collect();
    Ok(Some(Example { ids, counts }))
}

fn prompt_of(e: &Example) -> &[u32] {
    let c = e.counts.iter().position(|&c| c).unwrap_or(e.ids.len());
    &e.ids[..c.max(1)]
}

fn body_of(e: &Example) -> &[u32] {
    &e.ids[prompt_of(e).len()..]
}

/// Mean next-token loss over the body tokens of `examples`.
fn heldout_loss(
    examples: &[Example],
    pad: u32,
    mut logits: impl FnMut(&Example, &Array) -> Result<Array>,
) -> Result<f64> {
    let (mut sum, mut n) = (0.0f64, 0.0f64);
    for e in examples {
        let b = collate(&[e], pad);
        let l = logits(e, &b.inputs)?;
        let nll = masked_nll_sum(&l, &b.targets, &b.mask)?;
        nll.eval()?;
        sum += f64::from(nll.as_slice::<f32>()[0]);
        n += f64::from(b.num_tokens()?);
    }
    Ok(sum / n.max(1.0))
}

/// Greedy completion of `prompt` (at most `n` tokens).
fn complete(model: &mut dyn CausalLm, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let opts = GenerateOptions::new()
        .with_max_tokens(n)
        .with_temperature(0.0);
    let mut s = generate_ids(model, prompt, &opts)?;
    let mut out = Vec::new();
    for t in s.by_ref() {
        out.push(t?);
    }
    Ok(out)
}

struct Scores {
    loss: [[f64; 2]; 4],
    bleu: [[f64; 2]; 4],
    train_s: [f64; 4],
    gen_tokens_per_s: [f64; 4],
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.experts == 0 || a.rank % a.experts != 0 {
        bail!(
            "--rank {} must be a multiple of --experts {}",
            a.rank,
            a.experts
        );
    }
    std::fs::create_dir_all(&a.out)?;
    let python = match &a.python {
        Some(p) => p.clone(),
        None => default_python()?,
    };
    let t_all = Instant::now();
    let loaded = load(&ModelSource::parse(&a.model), &LoadOptions::new())?;
    let tok = loaded.tokenizer.context("the model has no tokenizer")?;
    let base: Model = loaded.model;
    let pad = tok.eos_ids().first().copied().unwrap_or(0);

    // Data: per language, training and held-out examples.
    let mut train: [Vec<Example>; 2] = Default::default();
    let mut held: [Vec<Example>; 2] = Default::default();
    for (lang, root) in [(0usize, &a.rust), (1, &python)] {
        let (tr, he) = mine(root, lang, a.seed)?;
        for (src, dst) in [(&tr, &mut train[lang]), (&he, &mut held[lang])] {
            for s in src {
                debug_assert_eq!(s.lang, lang);
                if let Some(e) = example(&tok, s, a.ctx, a.body)? {
                    dst.push(e);
                }
            }
        }
        held[lang].truncate(a.eval.max(a.bleu));
        eprintln!(
            "{}: {} — {} training, {} held-out functions",
            LANGS[lang],
            root.display(),
            train[lang].len(),
            held[lang].len()
        );
    }
    // The same number of training functions per language (the larger side
    // keeps its first ones in seeded order), so the shared systems see both
    // languages equally; interleaved, and the trainer shuffles them.
    let per_lang_n = train[0].len().min(train[1].len());
    for t in &mut train {
        t.truncate(per_lang_n);
    }
    let mut mixed = Vec::new();
    for i in 0..train[0].len().max(train[1].len()) {
        for t in &train {
            if let Some(e) = t.get(i) {
                mixed.push(e.clone());
            }
        }
    }

    let n = base.config().num_layers;
    let layers = n.saturating_sub(a.layers)..n;
    let alpha = 2.0 * a.rank as f32;
    let lora_cfg = PeftConfig::new(Method::Lora, a.rank, alpha)
        .with_targets(["all-linear"])
        .with_layers(layers.clone())
        .with_seed(a.seed);
    let opts = |steps: usize| {
        TrainOptions::new(steps)
            .with_batch_size(a.batch)
            .with_lr(a.lr)
            .with_warmup(2)
            .with_schedule(Schedule::Constant)
            .with_clip_grad_norm(1.0)
            .with_seed(a.seed)
            .with_spike_factor(1e9)
    };
    let progress = |name: &'static str| {
        move |m: &forge_core::peft::StepMetrics| {
            eprintln!(
                "{name:>12} step {:>3}/{}: loss {:.4}{} ({:.0} tok/s)",
                m.step,
                m.steps,
                m.loss,
                m.aux_loss
                    .map(|x| format!(" aux {x:.4}"))
                    .unwrap_or_default(),
                m.tokens_per_s
            );
        }
    };
    let mut train_s = [0.0f64; 4];

    // 1. One shared LoRA on both languages.
    let t = Instant::now();
    let mut shared = PeftModel::new(base.clone(), lora_cfg.clone())?;
    Trainer::new(opts(a.steps))
        .with_progress(progress("shared"))
        .run(&mut shared, &mixed, &[], pad, None)?;
    train_s[0] = t.elapsed().as_secs_f64();

    // 2. One LoRA per language, steps / 2 each (the same examples in total).
    let t = Instant::now();
    let per_steps = (a.steps / LANGS.len()).max(1);
    let mut per_lang = Vec::new();
    for (lang, name) in [(0usize, "rust LoRA"), (1, "python LoRA")] {
        let mut m = PeftModel::new(base.clone(), lora_cfg.clone())?;
        Trainer::new(opts(per_steps))
            .with_progress(progress(name))
            .run(&mut m, &train[lang], &[], pad, None)?;
        per_lang.push(m);
    }
    train_s[1] = t.elapsed().as_secs_f64();

    // 3. MoELoRA: experts of rank r / E (the shared LoRA's parameter count).
    let t = Instant::now();
    let mut moe_cfg = MoeLoraConfig::new(a.experts, a.rank / a.experts, alpha / a.experts as f32)
        .with_targets(["all-linear"])
        .with_layers(layers.clone())
        .with_seed(a.seed);
    if a.top_k > 0 {
        moe_cfg = moe_cfg.with_top_k(a.top_k);
    }
    let mut moe = MoeLoraModel::new(base.clone(), moe_cfg)?;
    Trainer::new(opts(a.steps))
        .with_progress(progress("MoELoRA"))
        .run(&mut moe, &mixed, &[], pad, None)?;
    train_s[2] = t.elapsed().as_secs_f64();

    // 4. DLP-LoRA: the per-language LoRAs as the library, a plugin trained to
    //    tell the languages apart from the prompt's mean input embedding.
    let t = Instant::now();
    let hidden: Vec<usize> = a
        .plugin_hidden
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("--plugin-hidden {:?}", a.plugin_hidden))?;
    let pcfg = PluginConfig::new(base.config().hidden_size, LANGS)
        .with_hidden(hidden)
        .with_seed(a.seed);
    let plugin_params = pcfg.num_parameters();
    let mut plugin = Plugin::new(pcfg)?;
    let prompts: Vec<Vec<u32>> = mixed.iter().map(|e| prompt_of(e).to_vec()).collect();
    let lens = [train[0].len(), train[1].len()];
    let labels: Vec<usize> = (0..lens[0].max(lens[1]))
        .flat_map(|i| (0..2).filter(move |&l| i < lens[l]))
        .collect();
    let feats = sentence_features_batch(&base, &prompts)?;
    let prep = plugin.train(
        &feats,
        &labels,
        &PluginTrainOptions {
            steps: 100,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 0.0,
            seed: a.seed,
        },
    )?;
    let held_prompts: Vec<Vec<u32>> = held
        .iter()
        .flat_map(|h| h.iter().map(|e| prompt_of(e).to_vec()))
        .collect();
    let held_labels: Vec<usize> = (0..2).flat_map(|l| vec![l; held[l].len()]).collect();
    let held_acc = plugin.accuracy(
        &sentence_features_batch(&base, &held_prompts)?,
        &held_labels,
    )?;
    let library = LoraLibrary::new()
        .with_adapter(LANGS[0], &per_lang[0])?
        .with_adapter(LANGS[1], &per_lang[1])?;
    let dlp = DlpLora::new(base.clone(), library, plugin, a.top_p)?;
    train_s[3] = train_s[1] + t.elapsed().as_secs_f64();
    eprintln!(
        "plugin: {plugin_params} parameters, final loss {:.4}, train accuracy {:.3}, held-out accuracy {held_acc:.3}",
        prep.losses.last().copied().unwrap_or(f32::NAN),
        prep.train_accuracy
    );

    // Held-out loss per language.
    let mut s = Scores {
        loss: [[0.0; 2]; 4],
        bleu: [[0.0; 2]; 4],
        train_s,
        gen_tokens_per_s: [0.0; 4],
    };
    let mut dlp_weight_on_lang = [0.0f64; 2];
    for lang in 0..2 {
        let ex = &held[lang][..held[lang].len().min(a.eval)];
        s.loss[0][lang] = heldout_loss(ex, pad, |_, x| Ok(shared.logits(x)?))?;
        s.loss[1][lang] = heldout_loss(ex, pad, |_, x| Ok(per_lang[lang].logits(x)?))?;
        s.loss[2][lang] = heldout_loss(ex, pad, |_, x| Ok(moe.logits(x)?))?;
        s.loss[3][lang] = heldout_loss(ex, pad, |e, x| {
            let (mut m, sel) = dlp.fused_for(prompt_of(e))?;
            dlp_weight_on_lang[lang] += f64::from(
                sel.weights
                    .iter()
                    .find(|w| w.0 == lang)
                    .map_or(0.0, |w| w.1),
            ) / ex.len() as f64;
            Ok(m.forward(x, None)?)
        })?;
        eprintln!(
            "{} held-out loss: shared {:.4}, oracle {:.4}, MoELoRA {:.4}, DLP {:.4}",
            LANGS[lang], s.loss[0][lang], s.loss[1][lang], s.loss[2][lang], s.loss[3][lang]
        );
    }

    // CodeBLEU per language: greedy completion of the body from the context,
    // against the reference body cut to the same number of tokens.
    let mut merged_shared = shared.merged_model()?;
    let mut merged_lang: Vec<Model> = per_lang
        .iter()
        .map(|m| m.merged_model())
        .collect::<forge_core::peft::Result<_>>()?;
    let mut gen_time = [0.0f64; 4];
    let mut gen_tokens = [0usize; 4];
    for lang in 0..2 {
        let bleu = CodeBleu::new(if lang == 0 { Lang::Rust } else { Lang::Python });
        let ex = &held[lang][..held[lang].len().min(a.bleu)];
        for sys in 0..4 {
            let mut total = 0.0;
            for e in ex {
                let reference = tok.decode(body_of(e), true)?;
                let t = Instant::now();
                let out = match sys {
                    0 => complete(&mut merged_shared, prompt_of(e), a.body)?,
                    1 => complete(&mut merged_lang[lang], prompt_of(e), a.body)?,
                    2 => complete(&mut moe, prompt_of(e), a.body)?,
                    _ => {
                        let (mut m, _) = dlp.fused_for(prompt_of(e))?;
                        complete(&mut m, prompt_of(e), a.body)?
                    }
                };
                gen_time[sys] += t.elapsed().as_secs_f64();
                gen_tokens[sys] += out.len();
                let candidate = tok.decode(&out, true)?;
                total += bleu.score(&reference, &candidate).codebleu;
            }
            s.bleu[sys][lang] = total / ex.len().max(1) as f64;
        }
        eprintln!(
            "{} CodeBLEU: shared {:.4}, oracle {:.4}, MoELoRA {:.4}, DLP {:.4}",
            LANGS[lang], s.bleu[0][lang], s.bleu[1][lang], s.bleu[2][lang], s.bleu[3][lang]
        );
    }
    for sys in 0..4 {
        s.gen_tokens_per_s[sys] = gen_tokens[sys] as f64 / gen_time[sys].max(1e-9);
    }
    let held_n = [
        held[0].len().min(a.eval),
        held[1].len().min(a.eval),
        held[0].len().min(a.bleu),
        held[1].len().min(a.bleu),
    ];
    let extra = Extra {
        plugin_params,
        held_acc,
        dlp_weight_on_lang,
        train_n: [train[0].len(), train[1].len()],
        held_n,
        python: python.clone(),
        wall_s: t_all.elapsed().as_secs_f64(),
    };
    write_results(&a, &s, &extra)
}

struct Extra {
    plugin_params: usize,
    held_acc: f32,
    dlp_weight_on_lang: [f64; 2],
    train_n: [usize; 2],
    held_n: [usize; 4],
    python: PathBuf,
    wall_s: f64,
}

fn write_results(a: &Args, s: &Scores, x: &Extra) -> Result<()> {
    let mut md = String::new();
    writeln!(
        md,
        "| system | Rust loss | Python loss | Rust CodeBLEU | Python CodeBLEU | training (s) | generation (tok/s) |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for (i, name) in SYSTEMS.iter().enumerate() {
        writeln!(
            md,
            "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {:.0} | {:.1} |",
            s.loss[i][0],
            s.loss[i][1],
            s.bleu[i][0],
            s.bleu[i][1],
            s.train_s[i],
            s.gen_tokens_per_s[i]
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "- data: {} / {} training functions (Rust / Python), held-out loss on {} / {}, CodeBLEU on {} / {}",
        x.train_n[0], x.train_n[1], x.held_n[0], x.held_n[1], x.held_n[2], x.held_n[3]
    )?;
    writeln!(
        md,
        "- DLP plugin: {} parameters, held-out routing accuracy {:.3}; mean fusion weight on the right language's LoRA: Rust {:.3}, Python {:.3}",
        x.plugin_params, x.held_acc, x.dlp_weight_on_lang[0], x.dlp_weight_on_lang[1]
    )?;
    writeln!(
        md,
        "- DLP-LoRA's training time is the per-language LoRAs' plus the plugin's; whole run {:.0} s",
        x.wall_s
    )?;
    std::fs::write(a.out.join("results.md"), &md)?;
    std::fs::write(a.out.join("results.svg"), svg(s))?;
    let json = serde_json::json!({
        "rust": a.rust, "python": x.python, "model": a.model, "steps": a.steps, "batch": a.batch,
        "ctx": a.ctx, "body": a.body, "layers": a.layers, "rank": a.rank, "experts": a.experts,
        "top_k": a.top_k, "lr": a.lr, "top_p": a.top_p, "plugin_hidden": a.plugin_hidden,
        "seed": a.seed, "train_functions": x.train_n, "held_out": x.held_n,
        "plugin_parameters": x.plugin_params, "plugin_heldout_accuracy": x.held_acc,
        "dlp_weight_on_language": x.dlp_weight_on_lang, "wall_s": x.wall_s,
        "systems": SYSTEMS.iter().enumerate().map(|(i, n)| serde_json::json!({
            "system": n,
            "heldout_loss": {"rust": s.loss[i][0], "python": s.loss[i][1]},
            "codebleu": {"rust": s.bleu[i][0], "python": s.bleu[i][1]},
            "train_s": s.train_s[i],
            "generation_tokens_per_s": s.gen_tokens_per_s[i],
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_vec_pretty(&json)?,
    )?;
    println!("{md}");
    eprintln!(
        "written: {}/results.md, results.svg, results.json",
        a.out.display()
    );
    Ok(())
}

/// Two grouped bar charts (held-out loss, CodeBLEU), one group per language.
fn svg(s: &Scores) -> String {
    let (w, h) = (860.0f64, 380.0f64);
    let colors = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd"];
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let panels: [(&str, &[[f64; 2]; 4], f64); 2] = [
        ("held-out loss (lower is better)", &s.loss, 0.0),
        ("CodeBLEU (higher is better)", &s.bleu, 430.0),
    ];
    for (title, vals, x0) in panels {
        let max = vals
            .iter()
            .flat_map(|r| r.iter().copied())
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let (left, top, pw, ph) = (x0 + 50.0, 40.0, 360.0, 260.0);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{title}</text>",
            left + pw / 2.0
        );
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
            top + ph,
            left + pw,
            top + ph,
            top + ph
        );
        for k in 0..=4 {
            let v = max * f64::from(k) / 4.0;
            let y = top + ph - ph * f64::from(k) / 4.0;
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.2}</text><line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>",
                left - 4.0,
                y + 4.0,
                left + pw
            );
        }
        let group = pw / 2.0;
        let bar = group / 6.0;
        for (lang, name) in LANGS.iter().enumerate() {
            let gx = left + group * lang as f64 + bar;
            for (sys, row) in vals.iter().enumerate() {
                let v = row[lang];
                let bh = ph * v / max;
                let _ = writeln!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{}: {v:.4}</title></rect>",
                    gx + bar * sys as f64,
                    top + ph - bh,
                    bar * 0.9,
                    colors[sys],
                    SYSTEMS[sys]
                );
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{v:.2}</text>",
                    gx + bar * sys as f64 + bar * 0.45,
                    top + ph - bh - 3.0
                );
            }
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{name}</text>",
                gx + bar * 2.0,
                top + ph + 16.0
            );
        }
    }
    for (sys, name) in SYSTEMS.iter().enumerate() {
        let x = 60.0 + 200.0 * sys as f64;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            h - 40.0,
            colors[sys],
            x + 16.0,
            h - 30.0
        );
    }
    out.push_str("</svg>\n");
    out
}
