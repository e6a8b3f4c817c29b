//! Perplexity (feature `model`): token-weighted loss invariants, and the mean loss against
//! mlx-lm's own dataset building and `default_loss` (`tests/reference/mlx_lm_loss.py`) on a
//! seeded tiny model written as a Hugging Face folder, with and without LoRA adapters.
//! MLX is not thread-safe: run with `--test-threads=1`.
#![cfg(feature = "model")]

use std::path::{Path, PathBuf};
use std::process::Command;

use forge_judge::{PerplexityOptions, load_for_eval, perplexity};
use forge_model::{Architecture, random_model, tiny_config, write_hf_dir};
use forge_peft::{Method, PeftConfig, PeftModel};
use mlx_rs::Array;

fn peer_python() -> Option<PathBuf> {
    let dir = std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"));
    let py = dir.join("mlx-lm-venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        std::env::var("FORGE_REQUIRE_PEERS").as_deref() != Ok("1"),
        "peers required but {} is missing",
        py.display()
    );
    println!("skipped: peers not installed (cargo xtask peers)");
    None
}

const DATA: &str = r#"{"text": "fn add(a: u32, b: u32) -> u32 { a + b }"}
{"text": "def mean(xs):\n    return sum(xs) / len(xs)\n"}
{"text": "x"}
{"messages": [{"role": "user", "content": "Write a function that doubles x."}, {"role": "assistant", "content": "def double(x):\n    return 2 * x"}]}
{"messages": [{"role": "system", "content": "You write Rust."}, {"role": "user", "content": "Negate."}, {"role": "assistant", "content": "fn neg(x: i32) -> i32 { -x }"}]}
{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, how can I help?"}]}
"#;

fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let model_dir = dir.join("model");
    write_hf_dir(
        &random_model(tiny_config(Architecture::Llama), 11).expect("model"),
        &model_dir,
    )
    .expect("hf dir");
    let data = dir.join("valid.jsonl");
    std::fs::write(&data, DATA).expect("data");
    (model_dir, data)
}

fn ours(
    model_dir: &Path,
    adapter: Option<&Path>,
    data: &Path,
    mask: bool,
    batch: usize,
) -> forge_judge::Perplexity {
    let (mut m, tok) = load_for_eval(model_dir.to_str().expect("utf8"), adapter).expect("load");
    let opts = PerplexityOptions::default()
        .with_mask_prompt(mask)
        .with_batch_size(batch);
    perplexity(&mut m, &tok, data, &opts, &mut |_, _| {}).expect("perplexity")
}

fn peer(
    py: &Path,
    model_dir: &Path,
    adapter: Option<&Path>,
    data: &Path,
    mask: bool,
) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/mlx_lm_loss.py");
    let mut cmd = Command::new(py);
    cmd.arg(script)
        .arg(model_dir)
        .arg(data)
        .arg(if mask { "1" } else { "0" });
    if let Some(a) = adapter {
        cmd.arg(a);
    }
    let out = cmd.output().expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("peer json")
}

#[test]
fn loss_is_token_weighted_and_batching_free() {
    let dir = tempfile::tempdir().expect("tmp");
    let (model_dir, data) = setup(dir.path());
    let one = ours(&model_dir, None, &data, true, 1);
    let three = ours(&model_dir, None, &data, true, 3);
    // Padding never counts: the batch size changes nothing but rounding.
    assert_eq!(one.tokens, three.tokens);
    assert!(
        (one.mean_loss - three.mean_loss).abs() < 1e-5 * one.mean_loss,
        "{one:?} {three:?}"
    );
    assert!((one.perplexity - one.mean_loss.exp()).abs() < 1e-9 * one.perplexity);
    // Masking the prompt removes exactly the prompt tokens of the chat records.
    let all = ours(&model_dir, None, &data, false, 2);
    assert!(all.tokens > one.tokens, "{all:?} {one:?}");
    assert_eq!(all.sequences, 6);
    // A random model over 272 tokens: loss near ln(272) = 5.6.
    assert!((4.5..7.0).contains(&all.mean_loss), "{all:?}");
    // Bad data names the file and line.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{oops\n").expect("write");
    let (mut m, tok) = load_for_eval(model_dir.to_str().expect("utf8"), None).expect("load");
    let e = perplexity(
        &mut m,
        &tok,
        &bad,
        &PerplexityOptions::default(),
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bad.jsonl") && e.contains(":2"), "{e}");
}

#[test]
fn mean_loss_equals_mlx_lm() {
    let Some(py) = peer_python() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let (model_dir, data) = setup(dir.path());

    // LoRA adapters with non-zero B, saved in mlx-lm's layout.
    let loaded = forge_model::load(
        &forge_model::ModelSource::parse(model_dir.to_str().expect("utf8")),
        &forge_model::LoadOptions::new(),
    )
    .expect("load");
    let mut peft = PeftModel::new(
        loaded.model,
        PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["all-linear"]),
    )
    .expect("peft");
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let noisy: Vec<(String, Array)> = peft
        .trainable_parameters()
        .into_iter()
        .filter(|(k, _)| k.ends_with("lora_B"))
        .map(|(k, v)| {
            let vals: Vec<f32> = (0..v.size())
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect();
            (k, Array::from_slice(&vals, v.shape()))
        })
        .collect();
    peft.set_trainable(noisy.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
    let adapter = dir.path().join("adapters");
    peft.save_mlx_lm(&adapter).expect("save adapters");

    for (adapter, mask) in [(None, false), (None, true), (Some(adapter.as_path()), true)] {
        let o = ours(&model_dir, adapter, &data, mask, 2);
        let p = peer(&py, &model_dir, adapter, &data, mask);
        let theirs = p["mean_loss"].as_f64().expect("mean_loss");
        let toks = p["tokens"].as_u64().expect("tokens");
        println!(
            "adapter {} mask {mask}: forge {:.8} ({} tokens), mlx-lm {} {theirs:.8} ({toks} tokens)",
            adapter.is_some(),
            o.mean_loss,
            o.tokens,
            p["mlx_lm_version"]
        );
        assert_eq!(o.tokens, toks, "counted tokens (masking) differ");
        assert!(
            (o.mean_loss - theirs).abs() <= 1e-6 * theirs,
            "mean loss {} vs mlx-lm {theirs}",
            o.mean_loss
        );
    }
    // The adapters change the loss: the comparison with adapters is not the base one again.
    let base = ours(&model_dir, None, &data, true, 2).mean_loss;
    let adapted = ours(
        &model_dir,
        Some(&dir.path().join("adapters")),
        &data,
        true,
        2,
    )
    .mean_loss;
    assert!((base - adapted).abs() > 1e-3, "{base} {adapted}");
}
