//! Forge against mlx-lm on the same MLX: logits (1e-4 absolute, f32) and 20
//! greedy tokens, for tiny random models of every architecture written as
//! Hugging Face folders and loaded by both.

mod common;

use forge_mlx::mlx_rs::Array;
use forge_model::{
    Architecture, GenerateOptions, LoadOptions, ModelConfig, ModelSource, RopeScaling, load,
    random_model, tiny_config, write_hf_dir,
};

const IDS: [u32; 12] = [5, 77, 3, 140, 258, 9, 33, 33, 201, 1, 64, 120];

fn check(name: &str, config: ModelConfig, seed: u64) {
    let Some(python) = common::mlx_lm_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let model = random_model(config, seed).expect("random model");
    write_hf_dir(&model, dir.path()).expect("write folder");
    drop(model);

    let mut loaded = load(
        &ModelSource::HfDir(dir.path().to_path_buf()),
        &LoadOptions::new(),
    )
    .expect("forge load");
    let ids: Vec<i32> = IDS.iter().map(|&t| t as i32).collect();
    let logits = loaded
        .model
        .forward(&Array::from_slice(&ids, &[1, ids.len() as i32]), None)
        .expect("forward");
    logits.eval().expect("eval");
    let vocab = loaded.model.config().vocab_size;
    let flat = logits.as_slice::<f32>();
    let forge: Vec<Vec<f32>> = flat.chunks(vocab).map(<[f32]>::to_vec).collect();

    let reference = common::mlx_lm_reference(&python, dir.path(), &IDS, 20);
    let diff = common::max_abs_diff(&forge, &reference.logits);
    println!(
        "{name}: max |forge - mlx-lm| logits = {diff:.3e} ({})",
        reference.version
    );
    assert!(diff <= 1e-4, "{name}: logits differ from mlx-lm by {diff}");

    let options = GenerateOptions::new()
        .with_max_tokens(20)
        .with_stop_at_eos(false);
    let greedy: Vec<u32> = loaded
        .model
        .generate_ids(&IDS, &options)
        .expect("generate")
        .collect::<Result<_, _>>()
        .expect("tokens");
    assert_eq!(greedy, reference.greedy, "{name}: greedy tokens differ");
}

#[test]
fn llama_untied_matches_mlx_lm() {
    check("llama", tiny_config(Architecture::Llama), 1);
}

#[test]
fn llama_tied_gqa_matches_mlx_lm() {
    let config = tiny_config(Architecture::Llama)
        .with_tie_word_embeddings(true)
        .with_num_kv_heads(1);
    check("llama tied, 4q/1kv", config, 2);
}

#[test]
fn llama3_rope_scaling_matches_mlx_lm() {
    // A small original context so every regime of the scaling (kept,
    // interpolated, divided) is exercised by the 8 frequency pairs.
    let config = tiny_config(Architecture::Llama)
        .with_rope_theta(500_000.0)
        .with_rope_scaling(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        });
    check("llama3 rope scaling", config, 3);
}

#[test]
fn llama_linear_rope_scaling_matches_mlx_lm() {
    let config =
        tiny_config(Architecture::Llama).with_rope_scaling(RopeScaling::Linear { factor: 4.0 });
    check("llama linear rope scaling", config, 4);
}

#[test]
fn qwen2_biases_untied_matches_mlx_lm() {
    let config = tiny_config(Architecture::Qwen2).with_rope_theta(1_000_000.0);
    check("qwen2 untied", config, 5);
}

#[test]
fn qwen2_biases_tied_matches_mlx_lm() {
    let config = tiny_config(Architecture::Qwen2)
        .with_rope_theta(1_000_000.0)
        .with_tie_word_embeddings(true);
    check("qwen2 tied", config, 6);
}

#[test]
fn mistral_matches_mlx_lm() {
    check("mistral", tiny_config(Architecture::Mistral), 7);
}
