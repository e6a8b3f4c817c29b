//! The trainer: exact resume, divergence guard, metrics, accumulation,
//! masking, packing, TOML configuration.

mod common;

use common::*;
use forge_peft::{
    Error, Example, Method, PeftConfig, PeftModel, PromptStyle, RunConfig, RunFile, Schedule,
    TrainOptions, Trainer, latest_checkpoint, pack, tokenize,
};

fn examples(n: usize, seed: u64) -> Vec<Example> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            let len = 9 + (i % 8);
            let ids: Vec<u32> = (0..len)
                .map(|j| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // A learnable pattern plus noise.
                    if j % 2 == 0 {
                        (j as u32 * 7 + i as u32 % 3) % 272
                    } else {
                        ((s >> 33) % 272) as u32
                    }
                })
                .collect();
            let counts = (0..len).map(|j| j >= 3).collect();
            Example { ids, counts }
        })
        .collect()
}

fn model() -> PeftModel {
    PeftModel::new(
        tiny(2),
        PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(1),
    )
    .expect("peft")
}

fn opts(dir: &std::path::Path) -> TrainOptions {
    TrainOptions::new(8)
        .with_batch_size(2)
        .with_grad_accum(2)
        .with_lr(5e-3)
        .with_warmup(2)
        .with_schedule(Schedule::Cosine)
        .with_weight_decay(0.01)
        .with_eval_every(3)
        .with_save_every(3)
        .with_output_dir(dir)
}

#[test]
fn resume_gives_the_same_loss_curve() {
    let (train, valid) = (examples(20, 1), examples(6, 2));
    let a = tempfile::tempdir().expect("tmp");
    let full = Trainer::new(opts(a.path()))
        .run(&mut model(), &train, &valid, 0, None)
        .expect("run");
    let b = tempfile::tempdir().expect("tmp");
    let first = Trainer::new(opts(b.path()).with_stop_after(3))
        .run(&mut model(), &train, &valid, 0, None)
        .expect("run");
    assert_eq!(first.steps.len(), 3);
    let ck = latest_checkpoint(b.path()).expect("checkpoint");
    assert!(ck.ends_with("step-000003"), "{}", ck.display());
    // A fresh process would rebuild the model from the same config; do the same here.
    let rest = Trainer::new(opts(b.path()))
        .run(&mut model(), &train, &valid, 0, Some(&ck))
        .expect("resume");
    let curve = |r: &[forge_peft::StepMetrics]| {
        r.iter()
            .map(|m| (m.step, m.loss.to_bits(), m.val_loss.map(f32::to_bits)))
            .collect::<Vec<_>>()
    };
    let mut resumed = curve(&first.steps);
    resumed.extend(curve(&rest.steps));
    println!(
        "uninterrupted: {:?}",
        full.steps.iter().map(|m| m.loss).collect::<Vec<_>>()
    );
    assert_eq!(curve(&full.steps), resumed, "resumed loss curve differs");
    // The final adapters are bit-identical too.
    let fa = std::fs::read(
        a.path()
            .join("checkpoints/step-000006/adapters.safetensors"),
    )
    .expect("a");
    let fb = std::fs::read(
        b.path()
            .join("checkpoints/step-000006/adapters.safetensors"),
    )
    .expect("b");
    assert_eq!(fa, fb);
    // Metrics: one JSON line per step (+ the resumed ones), with the documented keys.
    let text = std::fs::read_to_string(a.path().join("metrics.jsonl")).expect("metrics");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 8);
    for k in [
        "step",
        "loss",
        "lr",
        "tokens_per_s",
        "peak_memory",
        "peak_rss",
        "grad_norm",
    ] {
        assert!(lines[0].get(k).is_some(), "missing {k}");
    }
    assert!(lines[2].get("val_ppl").is_some());
    assert!(
        full.steps.last().expect("last").loss < full.steps[0].loss,
        "loss did not go down"
    );
}

#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let train = examples(12, 3);
    // A spike (loss above 1.01x its running mean) and a blow-up to inf/NaN.
    let cases = [("spike", 1e-1f32, 1.01f32), ("nan", 1e30, 1e9)];
    for ((name, lr, factor), overlap) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let d = tempfile::tempdir().expect("tmp");
        let o = TrainOptions::new(50)
            .with_batch_size(2)
            .with_lr(lr)
            .with_schedule(Schedule::Constant)
            .with_clip_grad_norm(0.0)
            .with_save_every(1)
            .with_spike_warmup(1)
            .with_spike_factor(factor)
            .with_overlap_steps(overlap)
            .with_output_dir(d.path());
        let mut m = model();
        let e = Trainer::new(o)
            .run(&mut m, &train, &[], 0, None)
            .unwrap_err();
        let msg = e.to_string();
        println!("{name}: {msg}");
        assert!(msg.contains("diverged at step") && msg.contains("last good checkpoint"));
        match e {
            Error::Diverged {
                step, checkpoint, ..
            } => {
                let ck = checkpoint.expect("a checkpoint before divergence");
                assert!(ck.join("adapters.safetensors").exists());
                // The diverged step was not applied: the model holds the
                // last good step's adapters (also when the step after it
                // was already queued, as the compiled trainer does).
                let saved = mlx_rs::Array::load_safetensors(ck.join("adapters.safetensors"))
                    .expect("read the checkpoint");
                for (k, v) in m.trainable_parameters() {
                    assert_eq!(rel(&v, &saved[&k]), 0.0, "{name}: {k}");
                }
                assert!(
                    ck.ends_with(format!("step-{:06}", step - 1)),
                    "{}",
                    ck.display()
                );
                assert!(
                    !d.path()
                        .join(format!("checkpoints/step-{step:06}"))
                        .exists()
                );
            }
            other => panic!("expected Diverged, got {other}"),
        }
    }
}

#[test]
fn accumulation_equals_one_big_batch() {
    let train = examples(16, 4);
    let o = TrainOptions::new(1).with_lr(1e-2).with_clip_grad_norm(0.0);
    let (mut a, mut b) = (model(), model());
    let ra = Trainer::new(o.clone().with_batch_size(4).with_grad_accum(1))
        .run(&mut a, &train, &[], 0, None)
        .expect("a");
    let rb = Trainer::new(o.with_batch_size(2).with_grad_accum(2))
        .run(&mut b, &train, &[], 0, None)
        .expect("b");
    let (la, lb) = (ra.steps[0].loss, rb.steps[0].loss);
    assert!((la - lb).abs() <= 1e-5 * la.abs(), "{la} vs {lb}");
    let (pa, pb) = (a.trainable_parameters(), b.trainable_parameters());
    let worst = pa.iter().map(|(k, v)| rel(v, &pb[k])).fold(0.0, f64::max);
    println!("accumulation: loss {la} vs {lb}, worst param rel diff {worst:.2e}");
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn prompt_masking_and_packing() {
    let dir = tempfile::tempdir().expect("tmp");
    forge_model::write_hf_dir(&tiny(1), dir.path()).expect("hf dir");
    let tok = forge_model::Tokenizer::from_hf_dir(dir.path()).expect("tokenizer");
    let data = dir.path().join("d.jsonl");
    std::fs::write(&data, concat!(
        "{\"prompt\": \"Add 1 and 2.\", \"completion\": \"3\"}\n",
        "{\"text\": \"fn main() {}\"}\n",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n",
    )).expect("write");
    let records = forge_peft::read_records(&data).expect("records");
    assert_eq!(records.len(), 3);
    let plain = tokenize(&records, &tok, PromptStyle::Plain, true, 512).expect("tok");
    let pick = |e: &Example| -> Vec<u32> {
        e.ids
            .iter()
            .zip(&e.counts)
            .filter(|(_, c)| **c)
            .map(|(i, _)| *i)
            .collect()
    };
    // Only the completion "3" and the eos (id 0) count.
    assert_eq!(
        tok.decode(&pick(&plain[0]), false).expect("decode"),
        "3<|endoftext|>"
    );
    assert!(
        plain[1].counts[1..].iter().all(|&c| c),
        "raw text trains on every token"
    );
    let chat = tokenize(&records, &tok, PromptStyle::Chat, true, 512).expect("tok");
    let answer = tok.decode(&pick(&chat[2]), false).expect("decode");
    assert!(answer.starts_with("hello"), "{answer:?}");
    let unmasked = tokenize(&records, &tok, PromptStyle::Chat, false, 512).expect("tok");
    assert!(unmasked[2].counts[1..].iter().all(|&c| c));
    let packed = pack(&chat, 16);
    assert!(packed[..packed.len() - 1].iter().all(|e| e.ids.len() == 17));
    let total: usize = chat.iter().map(|e| e.ids.len()).sum();
    assert_eq!(packed.iter().map(|e| e.ids.len()).sum::<usize>(), total);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"foo\": 1}\n").expect("write");
    let e = forge_peft::read_records(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:2"), "{e}");
}

#[test]
fn toml_config_resolves_and_names_bad_keys() {
    let text = r#"
model = "default"
output_dir = "runs/a"
[data]
train = "data/train.jsonl"
packing = true
[adapter]
method = "rora"
rank = 4
targets = ["all-linear"]
rules = [{ pattern = "o_proj", rank = 8, alpha = 32.0 }]
layers = [0, 1]
quantize_bits = 4
[train]
steps = 10
lr = 2e-4
schedule = "linear"
"#;
    let c: RunConfig = RunFile::from_toml_str(text, "run.toml")
        .expect("parse")
        .resolve("/base")
        .expect("resolve");
    assert_eq!(
        c.data.train,
        std::path::PathBuf::from("/base/data/train.jsonl")
    );
    assert_eq!(
        c.train.output_dir.as_deref(),
        Some(std::path::Path::new("/base/runs/a"))
    );
    assert_eq!(c.adapter.method, Method::RsLora);
    assert_eq!(c.adapter.targets[0].rank, Some(8));
    assert_eq!(c.adapter.layers, Some((0, 1)));
    assert!(c.data.packing && c.data.mask_prompt);
    assert_eq!(c.train.schedule, Schedule::Linear);
    let e = RunFile::from_toml_str("[train]\nstepz = 3\n", "run.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("run.toml") && e.contains("stepz"), "{e}");
    let e = RunFile::from_toml_str(
        "[adapter]\nmethod = \"ia3\"\n[data]\ntrain = \"x\"\n",
        "run.toml",
    )
    .expect("parse")
    .resolve("/")
    .unwrap_err()
    .to_string();
    assert!(e.contains("ia3"), "{e}");
}

/// The compiled step (MLX `compile` of forward + loss + backward, fused
/// AdamW with averaging and clipping) follows the uncompiled one: same
/// losses, gradient norms and parameters to float rounding, with
/// accumulation, clipping that triggers, weight decay and checkpointing.
#[test]
fn compiled_step_matches_uncompiled() {
    let train = examples(24, 9);
    for checkpoint in [false, true] {
        let o = TrainOptions::new(6)
            .with_batch_size(2)
            .with_grad_accum(2)
            .with_lr(5e-3)
            .with_warmup(2)
            .with_weight_decay(0.01)
            .with_clip_grad_norm(0.5)
            .with_grad_checkpoint(checkpoint);
        let (mut a, mut b) = (model(), model());
        let ra = Trainer::new(o.clone().with_compile(false))
            .run(&mut a, &train, &[], 0, None)
            .expect("uncompiled");
        let rb = Trainer::new(o.with_compile(true))
            .run(&mut b, &train, &[], 0, None)
            .expect("compiled");
        assert!(
            ra.steps.iter().any(|s| s.grad_norm > 0.5),
            "clipping never triggered: the test would not cover it"
        );
        for (x, y) in ra.steps.iter().zip(&rb.steps) {
            assert!(
                (x.loss - y.loss).abs() <= 1e-5 * x.loss.abs(),
                "step {}: loss {} vs {}",
                x.step,
                x.loss,
                y.loss
            );
            assert!(
                (x.grad_norm - y.grad_norm).abs() <= 1e-4 * x.grad_norm.abs(),
                "step {}: grad norm {} vs {}",
                x.step,
                x.grad_norm,
                y.grad_norm
            );
            assert_eq!(x.tokens, y.tokens);
        }
        let (pa, pb) = (a.trainable_parameters(), b.trainable_parameters());
        let worst = pa.iter().map(|(k, v)| rel(v, &pb[k])).fold(0.0, f64::max);
        println!(
            "compiled vs uncompiled (checkpoint {checkpoint}): worst param rel diff {worst:.2e}"
        );
        assert!(worst <= 1e-4, "{worst}");
    }
}

#[test]
fn skipping_the_gradient_norm_changes_nothing_else() {
    // Without clipping the norm only feeds the metrics and the guard:
    // measuring it every other step, or never, must leave the loss curve
    // and the adapters bit-identical (both with the compiled step and its
    // fused update, and eagerly).
    let train = examples(16, 9);
    for compile in [true, false] {
        let o = TrainOptions::new(4)
            .with_batch_size(2)
            .with_lr(1e-2)
            .with_clip_grad_norm(0.0)
            .with_compile(compile);
        let runs: Vec<_> = [1, 2, 0]
            .into_iter()
            .map(|every| {
                let mut m = model();
                let r = Trainer::new(o.clone().with_grad_norm_every(every))
                    .run(&mut m, &train, &[], 0, None)
                    .expect("run");
                (r, m.trainable_parameters())
            })
            .collect();
        let (base, base_params) = &runs[0];
        assert!(
            base.steps
                .iter()
                .all(|s| s.grad_norm.is_finite() && s.grad_norm > 0.0)
        );
        for (every, (r, params)) in [2, 0].into_iter().zip(&runs[1..]) {
            for (i, (x, y)) in base.steps.iter().zip(&r.steps).enumerate() {
                assert_eq!(
                    x.loss.to_bits(),
                    y.loss.to_bits(),
                    "compile {compile}, every {every}, step {i}"
                );
                let measured = every > 0 && i % every == 0;
                if measured {
                    assert_eq!(x.grad_norm.to_bits(), y.grad_norm.to_bits(), "step {i}");
                } else {
                    assert!(
                        y.grad_norm.is_nan(),
                        "every {every}, step {i}: {}",
                        y.grad_norm
                    );
                }
            }
            for (k, v) in base_params {
                assert_eq!(
                    rel(v, &params[k]),
                    0.0,
                    "compile {compile}, every {every}: {k}"
                );
            }
        }
    }
}

#[test]
fn overlapped_steps_equal_one_at_a_time() {
    // Queuing step n+1 before landing step n changes when the host reads
    // results, not what is computed: the same losses, norms, validation
    // losses, checkpoints (adapters, optimizer, counters) and final
    // adapters, with accumulation, clipping, evaluation and checkpoints.
    let (train, valid) = (examples(24, 5), examples(6, 6));
    let runs: Vec<_> = [true, false]
        .into_iter()
        .map(|overlap| {
            let d = tempfile::tempdir().expect("tmp");
            let mut m = model();
            let r = Trainer::new(opts(d.path()).with_overlap_steps(overlap))
                .run(&mut m, &train, &valid, 0, None)
                .expect("run");
            (d, r, m.trainable_parameters())
        })
        .collect();
    let ((da, ra, pa), (db, rb, pb)) = (&runs[0], &runs[1]);
    assert_eq!(ra.steps.len(), rb.steps.len());
    for (x, y) in ra.steps.iter().zip(&rb.steps) {
        assert_eq!(x.loss.to_bits(), y.loss.to_bits(), "step {}", x.step);
        assert_eq!(
            x.grad_norm.to_bits(),
            y.grad_norm.to_bits(),
            "step {}",
            x.step
        );
        assert_eq!(x.val_loss.map(f32::to_bits), y.val_loss.map(f32::to_bits));
    }
    for (k, v) in pa {
        assert_eq!(rel(v, &pb[k]), 0.0, "{k}");
    }
    for step in [3, 6] {
        let ck = |d: &tempfile::TempDir, f: &str| {
            std::fs::read(d.path().join(format!("checkpoints/step-{step:06}/{f}"))).expect(f)
        };
        for f in [
            "adapters.safetensors",
            "optimizer.safetensors",
            "state.json",
        ] {
            assert!(ck(da, f) == ck(db, f), "checkpoint {step}: {f} differs");
        }
    }
}
