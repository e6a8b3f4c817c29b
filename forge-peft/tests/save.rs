//! Adapter files: PEFT and mlx-lm layouts, PiSSA → LoRA conversion, malformed
//! files, and mlx-lm itself loading Forge's adapters (peer test).

mod common;

use std::path::PathBuf;

use common::*;
use forge_model::write_hf_dir;
use forge_peft::{Method, PeftConfig, PeftModel, TargetRule};
use mlx_rs::Array;

const VOCAB: u32 = 272;

fn trained(cfg: PeftConfig) -> PeftModel {
    let mut m = PeftModel::new(tiny(8), cfg).expect("peft");
    perturb(&mut m, 77);
    m
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

#[test]
fn peft_layout_round_trip() {
    let x = tokens(2, 10, VOCAB, 3);
    let cases = [
        (
            "lora",
            PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["q_proj", "v_proj"]),
        ),
        (
            "rslora",
            PeftConfig::new(Method::RsLora, 4, 8.0).with_targets(["all-linear"]),
        ),
        (
            "dora",
            PeftConfig::new(Method::Dora, 4, 8.0).with_targets(["o_proj", "down_proj"]),
        ),
        (
            "per-pattern",
            PeftConfig::new(Method::Lora, 4, 8.0).with_target_rules(vec![
                TargetRule::new("v_proj").with_rank(8).with_alpha(32.0),
                TargetRule::new("q_proj"),
            ]),
        ),
    ];
    for (name, cfg) in cases {
        let mut m = trained(cfg);
        let dir = tempfile::tempdir().expect("tmp");
        m.save_peft(dir.path(), "tiny-llama").expect("save");
        let c = json(dir.path().join("adapter_config.json"));
        assert_eq!(c["peft_type"], "LORA");
        assert_eq!(c["use_dora"], name == "dora");
        let tensors = safetensors_names(&dir.path().join("adapter_model.safetensors"));
        assert!(
            tensors.iter().any(|(k, s)| k
                == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
                && s[1] == 64)
                || name != "lora",
            "{tensors:?}"
        );
        assert!(
            tensors
                .iter()
                .all(|(k, _)| k.starts_with("base_model.model.model.layers."))
        );
        let mut back = PeftModel::load_peft(tiny(8), dir.path()).expect("load");
        let err = rel(&back.forward(&x).expect("f"), &m.forward(&x).expect("f"));
        println!("{name}: PEFT save → load forward rel error {err:.2e}");
        assert!(err <= 1e-6, "{name}: {err}");
    }
}

fn safetensors_names(path: &std::path::Path) -> Vec<(String, Vec<usize>)> {
    let bytes = std::fs::read(path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(k, t)| (k, t.shape().to_vec()))
        .collect();
    v.sort();
    v
}

#[test]
fn mlx_lm_layout_round_trip_and_layout_rules() {
    let x = tokens(2, 10, VOCAB, 4);
    let mut m = trained(
        PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(["q_proj", "down_proj"])
            .with_layers(1..2),
    );
    let dir = tempfile::tempdir().expect("tmp");
    m.save_mlx_lm(dir.path()).expect("save");
    let c = json(dir.path().join("adapter_config.json"));
    assert_eq!(c["num_layers"], 1);
    assert_eq!(
        c["lora_parameters"]["keys"],
        serde_json::json!(["self_attn.q_proj", "mlp.down_proj"])
    );
    let names = safetensors_names(&dir.path().join("adapters.safetensors"));
    assert!(
        names.contains(&(
            "model.layers.1.mlp.down_proj.lora_a".to_string(),
            vec![128, 4]
        )),
        "{names:?}"
    );
    assert!(
        names.contains(&(
            "model.layers.1.mlp.down_proj.lora_b".to_string(),
            vec![4, 64]
        )),
        "{names:?}"
    );
    let mut back = PeftModel::load_mlx_lm(tiny(8), dir.path()).expect("load");
    let err = rel(&back.forward(&x).expect("f"), &m.forward(&x).expect("f"));
    assert!(err <= 1e-6, "{err}");
    // Layer 0 only is not a suffix of the blocks: mlx-lm cannot express it.
    let first = trained(PeftConfig::new(Method::Lora, 4, 8.0).with_layers(0..1));
    let e = first
        .save_mlx_lm(tempfile::tempdir().expect("tmp").path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("last `num_layers`"), "{e}");
    let mixed = trained(
        PeftConfig::new(Method::Lora, 4, 8.0).with_target_rules(vec![
            TargetRule::new("q_proj").with_rank(2),
            TargetRule::new("v_proj"),
        ]),
    );
    let e = mixed
        .save_mlx_lm(tempfile::tempdir().expect("tmp").path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("one rank and scale"), "{e}");
}

#[test]
fn pissa_converts_to_plain_lora_of_double_rank() {
    let x = tokens(2, 10, VOCAB, 5);
    let mut m = trained(PeftConfig::new(Method::Pissa, 4, 8.0).with_targets(["all-linear"]));
    let dir = tempfile::tempdir().expect("tmp");
    m.save_peft(dir.path(), "tiny").expect("save");
    let names = safetensors_names(&dir.path().join("adapter_model.safetensors"));
    assert!(
        names
            .iter()
            .filter(|(k, _)| k.ends_with("lora_A.weight"))
            .all(|(_, s)| s[0] == 8)
    );
    // The converted adapter on the ORIGINAL base reproduces the PiSSA model.
    let mut plain = PeftModel::load_peft(tiny(8), dir.path()).expect("load");
    let err = rel(&plain.forward(&x).expect("f"), &m.forward(&x).expect("f"));
    println!("PiSSA → LoRA (rank 2r) on the original base: forward rel error {err:.2e}");
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn malformed_adapter_files_name_the_problem() {
    let m = trained(PeftConfig::new(Method::Lora, 4, 8.0));
    let dir = tempfile::tempdir().expect("tmp");
    m.save_peft(dir.path(), "tiny").expect("save");
    let wpath = dir.path().join("adapter_model.safetensors");
    // Drop one lora_B.
    let bytes = std::fs::read(&wpath).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let keep: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| k != "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
        .collect();
    let out = safetensors::serialize(keep, None).expect("ser");
    std::fs::write(&wpath, out).expect("write");
    let e = PeftModel::load_peft(tiny(8), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.1.self_attn.v_proj.lora_B.weight"),
        "{e}"
    );
    std::fs::write(&wpath, b"garbage").expect("write");
    let e = PeftModel::load_peft(tiny(8), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("invalid safetensors"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("adapter_config.json"),
        b"{\"peft_type\": \"IA3\"}",
    )
    .expect("write");
    let e = PeftModel::load_peft(tiny(8), dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("peft_type"), "{e}");
}

fn peers_python() -> Option<PathBuf> {
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

#[test]
fn mlx_lm_loads_forge_adapters_with_the_same_logits() {
    let Some(py) = peers_python() else { return };
    let ids: Vec<i32> = (0..12).map(|i| (i * 37 + 5) % 259).collect();
    let x = Array::from_slice(&ids, &[1, 12]);
    let cases = [
        (
            "lora all-linear, 2 layers",
            PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["all-linear"]),
        ),
        (
            "lora q/v last layer",
            PeftConfig::new(Method::Lora, 8, 16.0)
                .with_targets(["q_proj", "v_proj"])
                .with_layers(1..2),
        ),
        (
            "rslora",
            PeftConfig::new(Method::RsLora, 4, 8.0).with_targets(["all-linear"]),
        ),
        (
            "dora",
            PeftConfig::new(Method::Dora, 4, 8.0).with_targets(["all-linear"]),
        ),
        (
            "pissa → lora rank 2r",
            PeftConfig::new(Method::Pissa, 4, 8.0).with_targets(["all-linear"]),
        ),
    ];
    let root = tempfile::tempdir().expect("tmp");
    let model_dir = root.path().join("model");
    write_hf_dir(&tiny(8), &model_dir).expect("write model");
    for (name, cfg) in cases {
        let mut m = trained(cfg);
        let ad = root.path().join("adapters");
        let _ = std::fs::remove_dir_all(&ad);
        m.save_mlx_lm(&ad).expect("save");
        let req = root.path().join("req.json");
        let resp = root.path().join("resp.json");
        std::fs::write(
            &req,
            serde_json::json!({"model_dir": model_dir, "adapter_dir": ad, "ids": ids}).to_string(),
        )
        .expect("write");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/reference/mlx_lm_adapter_logits.py");
        let out = std::process::Command::new(&py)
            .arg(script)
            .arg(&req)
            .arg(&resp)
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = json(resp);
        let theirs: Vec<f64> = r["logits"]
            .as_array()
            .expect("logits")
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .expect("row")
                    .iter()
                    .map(|v| v.as_f64().expect("f"))
            })
            .collect();
        let ours = host(&m.forward(&x).expect("forward"));
        let base = host(&tiny(8).forward(&x, None).expect("forward"));
        let moved = ours
            .iter()
            .zip(&base)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            moved > 1e-3,
            "{name}: the adapters barely change the logits ({moved}); the comparison would be vacuous"
        );
        let max = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "{name}: mlx-lm {} logits vs forge: max abs diff {max:.2e} (adapters move logits by up to {moved:.3})",
            r["mlx_lm_version"]
        );
        assert!(max <= 1e-4, "{name}: {max}");
    }
}
