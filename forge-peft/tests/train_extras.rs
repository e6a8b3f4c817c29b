//! Kill-and-resume across processes, 8-bit AdamW against 32-bit AdamW, and
//! gradient checkpointing against the plain backward pass.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use forge_model::{Architecture, ModelConfig};
use forge_peft::{
    Example, Method, OptimizerKind, PeftConfig, PeftModel, Schedule, TrainOptions, Trainer,
    latest_checkpoint, loss_and_grad_with,
};

fn examples(n: usize, len: usize, vocab: u32, seed: u64) -> Vec<Example> {
    let mut s = seed;
    (0..n)
        .map(|i| {
            let ids: Vec<u32> = (0..len)
                .map(|j| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    if j % 2 == 0 {
                        (j as u32 * 7 + i as u32 % 5) % vocab
                    } else {
                        ((s >> 33) % u64::from(vocab)) as u32
                    }
                })
                .collect();
            Example {
                counts: vec![true; ids.len()],
                ids,
            }
        })
        .collect()
}

// ---------------------------------------------------------------- kill/resume

const KILL_STEPS: usize = 30;
const ENV_DIR: &str = "FORGE_PEFT_KILL_CHILD_DIR";
const ENV_RESUME: &str = "FORGE_PEFT_KILL_CHILD_RESUME";

fn kill_model() -> PeftModel {
    PeftModel::new(
        tiny(3),
        PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(5),
    )
    .expect("peft")
}

fn kill_opts(dir: &Path) -> TrainOptions {
    TrainOptions::new(KILL_STEPS)
        .with_batch_size(2)
        .with_lr(5e-3)
        .with_warmup(3)
        .with_schedule(Schedule::Cosine)
        .with_weight_decay(0.01)
        .with_save_every(3)
        .with_eval_every(5)
        .with_output_dir(dir)
}

fn kill_data() -> (Vec<Example>, Vec<Example>) {
    (examples(24, 12, 272, 7), examples(4, 12, 272, 8))
}

/// Entry point of the child processes that `killed_run_resumes_with_the_same_loss_curve`
/// starts (`--ignored --exact`): trains into `$FORGE_PEFT_KILL_CHILD_DIR`,
/// resuming from its latest checkpoint when `$FORGE_PEFT_KILL_CHILD_RESUME` is set.
/// Each step sleeps 40 ms in the progress callback so the parent can kill it mid-run.
#[test]
#[ignore = "child process of killed_run_resumes_with_the_same_loss_curve"]
fn kill_resume_child() {
    let dir = PathBuf::from(std::env::var_os(ENV_DIR).expect("run by the parent test"));
    let (train, valid) = kill_data();
    let resume = std::env::var_os(ENV_RESUME).and_then(|_| latest_checkpoint(&dir));
    Trainer::new(kill_opts(&dir))
        .with_progress(|_| std::thread::sleep(Duration::from_millis(40)))
        .run(&mut kill_model(), &train, &valid, 0, resume.as_deref())
        .expect("child run");
}

fn child(dir: &Path, resume: bool) -> std::process::Command {
    let mut c = std::process::Command::new(std::env::current_exe().expect("exe"));
    c.args([
        "kill_resume_child",
        "--exact",
        "--ignored",
        "--test-threads=1",
    ])
    .env(ENV_DIR, dir)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    if resume {
        c.env(ENV_RESUME, "1");
    }
    c
}

/// `(step, loss bits, val-loss bits)` of each complete metrics line.
fn curve(path: &Path) -> Vec<(u64, u32, Option<u32>)> {
    let text = std::fs::read_to_string(path).expect("metrics");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["step"].as_u64().expect("step"),
                (v["loss"].as_f64().expect("loss") as f32).to_bits(),
                v["val_loss"].as_f64().map(|x| (x as f32).to_bits()),
            )
        })
        .collect()
}

#[test]
fn killed_run_resumes_with_the_same_loss_curve() {
    // The uninterrupted run, in this process.
    let reference_dir = tempfile::tempdir().expect("tmp");
    let (train, valid) = kill_data();
    Trainer::new(kill_opts(reference_dir.path()))
        .run(&mut kill_model(), &train, &valid, 0, None)
        .expect("reference run");
    let reference = curve(&reference_dir.path().join("metrics.jsonl"));
    assert_eq!(reference.len(), KILL_STEPS);

    // A child run, SIGKILLed once a checkpoint after step 6 exists.
    let dir = tempfile::tempdir().expect("tmp");
    let mut proc = child(dir.path(), false).spawn().expect("spawn child");
    let t = Instant::now();
    let killed_after = loop {
        if let Some(ck) = latest_checkpoint(dir.path()) {
            let step: usize = ck.file_name().and_then(|n| n.to_str()).expect("name")[5..]
                .parse()
                .expect("step");
            if step >= 6 {
                break step;
            }
        }
        if let Some(status) = proc.try_wait().expect("wait") {
            panic!("the child ended before it was killed: {status}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no checkpoint in 2 min"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    proc.kill().expect("SIGKILL");
    let status = proc.wait().expect("wait");
    assert!(!status.success(), "the child was killed, not finished");
    let before = curve(&dir.path().join("metrics.jsonl"));
    assert!(
        before.len() < KILL_STEPS,
        "killed mid-run: {} of {KILL_STEPS} steps logged",
        before.len()
    );
    assert!(before.len() >= killed_after);
    // No temporary checkpoint folder is mistaken for a checkpoint.
    let ck = latest_checkpoint(dir.path()).expect("latest");
    assert!(ck.join("adapters.safetensors").exists());

    // Resume in a new process from the latest checkpoint.
    let status = child(dir.path(), true).status().expect("resume child");
    assert!(status.success(), "resumed child failed: {status}");
    let after = curve(&dir.path().join("metrics.jsonl"));
    // Every logged line, before and after the kill, equals the reference at its step.
    for &(step, loss, val) in &after {
        let r = reference[step as usize - 1];
        assert_eq!(
            (step, loss, val),
            r,
            "step {step} differs from the uninterrupted run"
        );
    }
    // The resumed run covers every step after the checkpoint it resumed from.
    let resumed: Vec<u64> = after[before.len()..].iter().map(|x| x.0).collect();
    let resumed_from = resumed[0] - 1;
    assert!(resumed_from as usize >= killed_after);
    assert_eq!(
        resumed,
        (resumed_from + 1..=KILL_STEPS as u64).collect::<Vec<_>>()
    );
    // Final adapters are byte-identical.
    let last = |d: &Path| {
        std::fs::read(
            d.join("checkpoints")
                .join(format!("step-{KILL_STEPS:06}"))
                .join("adapters.safetensors"),
        )
        .expect("final adapters")
    };
    assert!(last(dir.path()) == last(reference_dir.path()));
    eprintln!(
        "killed after checkpoint step {killed_after} ({} steps logged), resumed from step {resumed_from}: \
         {KILL_STEPS} losses bit-identical",
        before.len()
    );
}

// ---------------------------------------------------------------- 8-bit AdamW

/// Width 256 and rank 16, so every adapter tensor has ≥ 4096 values and gets
/// 8-bit moments (smaller ones stay 32-bit, as in bitsandbytes).
fn wide() -> (PeftModel, Vec<Example>) {
    let cfg = ModelConfig::new(Architecture::Llama, 272, 256, 512, 2, 4)
        .with_num_kv_heads(4)
        .with_rms_norm_eps(1e-5)
        .with_special_tokens(None, vec![0]);
    let peft = PeftModel::new(
        model_with(cfg, 11),
        PeftConfig::new(Method::Lora, 16, 32.0)
            .with_targets(["all-linear"])
            .with_seed(2),
    )
    .expect("peft");
    (peft, examples(32, 24, 272, 3))
}

#[test]
fn adamw_8bit_tracks_32bit_adamw() {
    let run = |kind: OptimizerKind| {
        let (mut m, data) = wide();
        Trainer::new(
            TrainOptions::new(40)
                .with_batch_size(4)
                .with_lr(3e-3)
                .with_warmup(4)
                .with_weight_decay(0.01)
                .with_optimizer(kind),
        )
        .run(&mut m, &data, &[], 0, None)
        .expect("run")
        .steps
    };
    let full = run(OptimizerKind::AdamW);
    let q8 = run(OptimizerKind::AdamW8bit);
    let mut worst = 0f32;
    for (a, b) in full.iter().zip(&q8) {
        worst = worst.max((a.loss - b.loss).abs() / a.loss);
    }
    let (first, last) = (full[0].loss, full[full.len() - 1].loss);
    let last8 = q8[q8.len() - 1].loss;
    let (bytes32, bytes8) = (full[0].optimizer_bytes, q8[0].optimizer_bytes);
    eprintln!(
        "loss {first:.4} -> 32-bit {last:.4}, 8-bit {last8:.4}; worst step gap {:.3} %; \
         optimizer state {bytes32} B -> {bytes8} B ({:.3}x)",
        100.0 * worst,
        bytes8 as f64 / bytes32 as f64
    );
    assert!(last < 0.85 * first, "the run learns: {first} -> {last}");
    assert!(
        worst < 0.01,
        "8-bit curve within 1 % of 32-bit at every step: {worst}"
    );
    assert!(
        (last8 - last).abs() / last < 0.005,
        "final losses agree: {last} vs {last8}"
    );
    // 2·(n + 4⌈n/2048⌉) bytes instead of 8n.
    let n = bytes32 / 8;
    assert!(
        bytes8 >= n * 2 && bytes8 < n * 2 + n / 100,
        "{bytes8} for {n} values"
    );
}

#[test]
fn adamw_8bit_checkpoints_resume_exactly() {
    let (_, data) = wide();
    let opts = |d: &Path| {
        TrainOptions::new(6)
            .with_batch_size(4)
            .with_lr(3e-3)
            .with_save_every(2)
            .with_optimizer(OptimizerKind::AdamW8bit)
            .with_output_dir(d)
    };
    let a = tempfile::tempdir().expect("tmp");
    let full = Trainer::new(opts(a.path()))
        .run(&mut wide().0, &data, &[], 0, None)
        .expect("run");
    let b = tempfile::tempdir().expect("tmp");
    Trainer::new(opts(b.path()).with_stop_after(3))
        .run(&mut wide().0, &data, &[], 0, None)
        .expect("run");
    let ck = latest_checkpoint(b.path()).expect("checkpoint");
    let rest = Trainer::new(opts(b.path()))
        .run(&mut wide().0, &data, &[], 0, Some(&ck))
        .expect("resume");
    let bits =
        |s: &[forge_peft::StepMetrics]| s.iter().map(|m| m.loss.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&rest.steps), bits(&full.steps[2..]));
    let st = safetensors_dtypes(&ck.join("optimizer.safetensors"));
    assert!(
        st.iter().any(|(n, d)| n.starts_with("m8.") && d == "U8"),
        "{st:?}"
    );
}

fn safetensors_dtypes(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, format!("{:?}", v.dtype())))
        .collect()
}

// ------------------------------------------------------ gradient checkpointing

#[test]
fn checkpointed_gradients_equal_plain() {
    for method in [Method::Lora, Method::Dora, Method::Pissa] {
        let mut m = PeftModel::new(
            tiny(4),
            PeftConfig::new(method, 4, 8.0)
                .with_targets(["q_proj", "v_proj", "down_proj"])
                .with_layers(1..2)
                .with_dora_detach_norm(false)
                .with_seed(3),
        )
        .expect("peft");
        perturb(&mut m, 9);
        let b = batch(2, 10, 272, 4);
        let (l0, g0) = loss_and_grad_with(&mut m, &b, false).expect("plain");
        let (l1, g1) = loss_and_grad_with(&mut m, &b, true).expect("checkpointed");
        assert_eq!(host(&l0), host(&l1), "{method:?}: same loss");
        assert_eq!(g0.keys().collect::<Vec<_>>(), g1.keys().collect::<Vec<_>>());
        for (k, a) in &g0 {
            let r = rel(&g1[k], a);
            assert!(
                r <= 1e-6,
                "{method:?} {k}: relative gradient difference {r}"
            );
        }
    }
}

#[test]
fn checkpointing_lowers_peak_memory() {
    let cfg = ModelConfig::new(Architecture::Llama, 512, 256, 1024, 6, 4)
        .with_num_kv_heads(4)
        .with_rms_norm_eps(1e-5)
        .with_special_tokens(None, vec![0]);
    let mut m = PeftModel::new(
        model_with(cfg, 1),
        PeftConfig::new(Method::Lora, 8, 16.0)
            .with_targets(["all-linear"])
            .with_seed(1),
    )
    .expect("peft");
    let b = batch(4, 256, 512, 2);
    let mut peak = |ck: bool| {
        // Wait until the device has finished (and released the temporaries
        // of) earlier work: with MLX's direct CUDA launches buffers are freed
        // asynchronously, after `eval` returns.
        // SAFETY: no arguments; synchronises MLX's default stream.
        unsafe { mlx_sys::mlx_synchronize_default() };
        mlx_rs::memory::clear_cache().expect("clear");
        mlx_rs::memory::reset_peak_memory().expect("reset");
        let base = mlx_rs::memory::active_memory().expect("active");
        let (l, g) = loss_and_grad_with(&mut m, &b, ck).expect("grad");
        let mut all: Vec<&mlx_rs::Array> = g.values().collect();
        all.push(&l);
        mlx_rs::transforms::eval(all).expect("eval");
        let peak = mlx_rs::memory::peak_memory().expect("peak");
        peak.checked_sub(base)
            .unwrap_or_else(|| panic!("peak {peak} below the memory in use before ({base})"))
    };
    let plain = peak(false);
    let ck = peak(true);
    eprintln!(
        "6 blocks, batch 4 × 256, width 256: peak above the weights {:.1} MB plain, {:.1} MB checkpointed ({:.2}x)",
        plain as f64 / 1e6,
        ck as f64 / 1e6,
        ck as f64 / plain as f64
    );
    assert!(
        (ck as f64) < 0.7 * plain as f64,
        "checkpointing saves memory: {ck} vs {plain}"
    );
}

// ------------------------------------------------- selected, chunked head loss

#[test]
fn selected_chunked_loss_equals_full_logits() {
    let mut m = PeftModel::new(
        tiny(6),
        PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(3),
    )
    .expect("peft");
    perturb(&mut m, 2);
    // 4 × 300 positions: more than one HEAD_CHUNK of counted rows, with a
    // mask that drops a prompt and some padding in every row.
    let mut b = batch(4, 300, 272, 8);
    let mask: Vec<f32> = (0..4 * 300)
        .map(|i| {
            let (r, t) = (i / 300, i % 300);
            if t < 5 + r || t >= 290 - 3 * r {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    b.mask = mlx_rs::Array::from_slice(&mask, &[4, 300]);
    let counted: f32 = mask.iter().sum();
    assert!(counted as usize > forge_peft::HEAD_CHUNK);
    let full = forge_peft::masked_nll_sum(&m.forward(&b.inputs).expect("fwd"), &b.targets, &b.mask)
        .expect("nll");
    for ck in [false, true] {
        let (l, _) = loss_and_grad_with(&mut m, &b, ck).expect("grad");
        let (a, f) = (host(&l)[0], host(&full)[0]);
        assert!(((a - f) / f).abs() < 1e-6, "checkpoint {ck}: {a} vs {f}");
    }
}
