//! Loading Hugging Face folders: exact names, the missing/unexpected key
//! report, shape mismatches, truncated files, shards and dtypes.

use std::path::Path;

use forge_mlx::mlx_rs::{Array, Dtype};
use forge_model::{
    Architecture, Error, LoadOptions, Model, ModelSource, load, random_model, tiny_config,
    write_hf_dir,
};

fn tiny_dir(dir: &Path, tied: bool) -> Model {
    let config = tiny_config(Architecture::Llama).with_tie_word_embeddings(tied);
    let model = random_model(config, 11).expect("random model");
    write_hf_dir(&model, dir).expect("write");
    model
}

/// Rewrites `model.safetensors` with `edit` applied to its tensor list.
fn edit_checkpoint(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Array)>)) {
    let path = dir.join("model.safetensors");
    let mut tensors: Vec<(String, Array)> = Array::load_safetensors(&path)
        .expect("read")
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    // MLX loads lazily: read everything before the file is replaced.
    for (_, a) in &tensors {
        a.eval().expect("eval");
    }
    edit(&mut tensors);
    Array::save_safetensors(tensors, None, &path).expect("write");
}

fn hf(dir: &Path) -> ModelSource {
    ModelSource::HfDir(dir.to_path_buf())
}

fn logits(model: &mut Model) -> Vec<f32> {
    let out = model
        .forward(&Array::from_slice(&[3i32, 40, 7, 99], &[1, 4]), None)
        .expect("forward")
        .as_dtype(Dtype::Float32)
        .expect("cast");
    out.eval().expect("eval");
    out.as_slice::<f32>().to_vec()
}

#[test]
fn parameter_names_are_hf_names() {
    let model = Model::new(tiny_config(Architecture::Qwen2)).expect("model");
    let names: Vec<String> = model
        .parameter_shapes()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut expected = vec![
        "lm_head.weight".to_string(),
        "model.embed_tokens.weight".into(),
        "model.norm.weight".into(),
    ];
    for i in 0..2 {
        for p in ["q", "k", "v"] {
            expected.push(format!("model.layers.{i}.self_attn.{p}_proj.weight"));
            expected.push(format!("model.layers.{i}.self_attn.{p}_proj.bias"));
        }
        expected.push(format!("model.layers.{i}.self_attn.o_proj.weight"));
        for p in ["gate", "up", "down"] {
            expected.push(format!("model.layers.{i}.mlp.{p}_proj.weight"));
        }
        expected.push(format!("model.layers.{i}.input_layernorm.weight"));
        expected.push(format!("model.layers.{i}.post_attention_layernorm.weight"));
    }
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn round_trip_reproduces_logits() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut original = tiny_dir(dir.path(), false);
    let mut loaded = load(&hf(dir.path()), &LoadOptions::new()).expect("load");
    assert_eq!(loaded.report.loaded, original.parameter_shapes().len());
    assert!(loaded.report.unexpected.is_empty() && loaded.report.ignored.is_empty());
    assert!(loaded.tokenizer.is_some());
    assert_eq!(logits(&mut loaded.model), logits(&mut original));
}

#[test]
fn random_factory_is_deterministic() {
    let config = tiny_config(Architecture::Mistral);
    let mut a = random_model(config.clone(), 5).expect("a");
    let mut b = random_model(config.clone(), 5).expect("b");
    let mut c = random_model(config, 6).expect("c");
    assert_eq!(logits(&mut a), logits(&mut b));
    assert_ne!(logits(&mut a), logits(&mut c));
}

#[test]
fn missing_and_unexpected_keys_are_listed() {
    let dir = tempfile::tempdir().expect("tmp");
    tiny_dir(dir.path(), false);
    edit_checkpoint(dir.path(), |t| {
        t.retain(|(n, _)| n != "model.layers.1.mlp.up_proj.weight" && n != "model.norm.weight");
        t.push((
            "model.layers.0.self_attn.extra.weight".into(),
            Array::from_slice(&[1.0f32], &[1]),
        ));
    });
    let e = load(&hf(dir.path()), &LoadOptions::new()).expect_err("must fail");
    match &e {
        Error::KeyMismatch {
            missing,
            unexpected,
            ..
        } => {
            assert_eq!(
                missing,
                &["model.layers.1.mlp.up_proj.weight", "model.norm.weight"]
            );
            assert_eq!(unexpected, &["model.layers.0.self_attn.extra.weight"]);
        }
        other => panic!("wrong error {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.ends_with(
            "2 missing tensor(s): model.layers.1.mlp.up_proj.weight, model.norm.weight; \
             1 unexpected tensor(s): model.layers.0.self_attn.extra.weight"
        ),
        "{msg}"
    );
}

#[test]
fn unexpected_keys_can_be_allowed() {
    let dir = tempfile::tempdir().expect("tmp");
    tiny_dir(dir.path(), false);
    edit_checkpoint(dir.path(), |t| {
        t.push((
            "vision.patch.weight".into(),
            Array::from_slice(&[1.0f32], &[1]),
        ));
        t.push((
            "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
            Array::from_slice(&[1.0f32], &[1]),
        ));
    });
    let options = LoadOptions::new().with_allow_unexpected(true);
    let loaded = load(&hf(dir.path()), &options).expect("load");
    assert_eq!(loaded.report.unexpected, ["vision.patch.weight"]);
    assert_eq!(
        loaded.report.ignored,
        ["model.layers.0.self_attn.rotary_emb.inv_freq"]
    );
    // Without the option the unexpected tensor is an error.
    let e = load(&hf(dir.path()), &LoadOptions::new()).expect_err("must fail");
    assert!(
        e.to_string()
            .contains("1 unexpected tensor(s): vision.patch.weight"),
        "{e}"
    );
}

#[test]
fn tied_checkpoint_with_lm_head_is_ignored_by_rule() {
    let dir = tempfile::tempdir().expect("tmp");
    tiny_dir(dir.path(), true);
    edit_checkpoint(dir.path(), |t| {
        let embed = t
            .iter()
            .find(|(n, _)| n == "model.embed_tokens.weight")
            .map(|(_, a)| a.clone())
            .expect("embedding");
        t.push(("lm_head.weight".into(), embed));
    });
    let loaded = load(&hf(dir.path()), &LoadOptions::new()).expect("load");
    assert_eq!(loaded.report.ignored, ["lm_head.weight"]);
}

#[test]
fn shape_mismatch_names_tensor_and_shapes() {
    let dir = tempfile::tempdir().expect("tmp");
    tiny_dir(dir.path(), false);
    edit_checkpoint(dir.path(), |t| {
        for (n, a) in t.iter_mut() {
            if n == "model.layers.0.self_attn.k_proj.weight" {
                *a = forge_mlx::mlx_rs::ops::zeros::<f32>(&[64, 64]).expect("zeros");
            }
        }
    });
    let e = load(&hf(dir.path()), &LoadOptions::new()).expect_err("must fail");
    let file = dir.path().join("model.safetensors");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: tensor `model.layers.0.self_attn.k_proj.weight` has shape [64, 64], expected [32, 64]",
            file.display()
        )
    );
}

#[test]
fn truncated_safetensors_is_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    tiny_dir(dir.path(), false);
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    for keep in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..keep]).expect("truncate");
        let e = load(&hf(dir.path()), &LoadOptions::new()).expect_err("must fail");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{}: invalid safetensors file", path.display())),
            "{keep}: {msg}"
        );
    }
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = load(&hf(dir.path()), &LoadOptions::new()).expect_err("no config");
    assert!(e.to_string().contains("config.json"), "{e}");
    tiny_dir(dir.path(), false);
    std::fs::remove_file(dir.path().join("model.safetensors")).expect("rm");
    let e = load(&hf(dir.path()), &LoadOptions::new()).expect_err("no weights");
    assert!(
        e.to_string()
            .contains("neither model.safetensors nor model.safetensors.index.json found"),
        "{e}"
    );
}

#[test]
fn sharded_checkpoint_loads() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut original = tiny_dir(dir.path(), false);
    let path = dir.path().join("model.safetensors");
    let mut tensors: Vec<(String, Array)> = Array::load_safetensors(&path)
        .expect("read")
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, a) in &tensors {
        a.eval().expect("eval");
    }
    std::fs::remove_file(&path).expect("rm");
    let second = tensors.split_off(tensors.len() / 2);
    let mut map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", tensors),
        ("model-00002-of-00002.safetensors", second),
    ] {
        for (n, _) in &part {
            map.insert(n.clone(), shard.into());
        }
        Array::save_safetensors(part, None, dir.path().join(shard)).expect("shard");
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .expect("index");
    let mut loaded = load(&hf(dir.path()), &LoadOptions::new()).expect("load");
    assert_eq!(logits(&mut loaded.model), logits(&mut original));

    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).expect("rm");
    let e = load(&hf(dir.path()), &LoadOptions::new()).expect_err("missing shard");
    assert!(
        e.to_string().contains("model-00002-of-00002.safetensors"),
        "{e}"
    );
}

#[test]
fn half_precision_checkpoints_convert() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut original = tiny_dir(dir.path(), false);
    let reference = logits(&mut original);
    for stored in [Dtype::Float16, Dtype::Bfloat16] {
        edit_checkpoint(dir.path(), |t| {
            for (_, a) in t.iter_mut() {
                *a = a.as_dtype(stored).expect("cast");
            }
        });
        for wanted in [Dtype::Float32, Dtype::Bfloat16] {
            let options = LoadOptions::new().with_dtype(wanted);
            let mut loaded = load(&hf(dir.path()), &options).expect("load");
            let dtypes: Vec<Dtype> = {
                use forge_mlx::mlx_rs::module::ModuleParameters;
                loaded
                    .model
                    .parameters()
                    .flatten()
                    .values()
                    .map(|a| a.dtype())
                    .collect()
            };
            assert!(
                dtypes.iter().all(|d| *d == wanted),
                "{stored:?}->{wanted:?}"
            );
            let got = logits(&mut loaded.model);
            let diff = got
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 0.5, "{stored:?}->{wanted:?}: {diff}");
        }
    }
}
