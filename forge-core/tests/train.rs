//! `forge_core::train`: a TOML run on a tiny random model written as a
//! Hugging Face folder, then a resume from its checkpoint.

use forge_core::model::{Architecture, random_model, tiny_config, write_hf_dir};
use forge_core::train::{TrainJob, run};

#[test]
fn toml_run_trains_saves_and_resumes() {
    let dir = tempfile::tempdir().expect("tmp");
    let model_dir = dir.path().join("model");
    write_hf_dir(
        &random_model(tiny_config(Architecture::Llama), 1).expect("model"),
        &model_dir,
    )
    .expect("hf dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let line = |i: usize| {
        serde_json::json!({"prompt": format!("fn f{i}() ->"), "completion": format!(" u32 {{ {i} }}")})
            .to_string()
    };
    let train: String = (0..12).map(|i| line(i) + "\n").collect();
    std::fs::write(data.join("train.jsonl"), train).expect("write");
    std::fs::write(data.join("valid.jsonl"), line(99) + "\n").expect("write");
    let toml = dir.path().join("train.toml");
    std::fs::write(
        &toml,
        "[data]\nprompt_style = \"plain\"\nmax_seq_len = 32\n\
         [adapter]\nmethod = \"lora\"\nrank = 4\ntargets = [\"all-linear\"]\n\
         [train]\nsteps = 4\nbatch_size = 2\nlr = 1e-3\nsave_every = 2\neval_every = 2\n",
    )
    .expect("toml");
    let out = dir.path().join("run");
    let job = TrainJob::new()
        .with_config(&toml)
        .with_model(model_dir.to_string_lossy())
        .with_data(&data)
        .with_out(&out);
    let first = run(&job, |_| {}).expect("run");
    assert_eq!(first.steps.len(), 4);
    assert!(first.resumed_from.is_none());
    assert!(
        first.steps[1].val_loss.is_some(),
        "valid.jsonl from the data folder is used"
    );
    assert!(out.join("adapters/adapter_model.safetensors").exists());
    assert!(out.join("mlx-lm/adapters.safetensors").exists());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    assert_eq!(metrics.lines().count(), 4);
    let text = first.to_string();
    assert!(text.contains("12 examples"), "{text}");
    // Same job again: resumes from step 4, nothing left to do.
    let again = run(&job, |_| {}).expect("resume");
    assert!(
        again
            .resumed_from
            .is_some_and(|p| p.ends_with("step-000004"))
    );
    assert!(again.steps.is_empty());
    // A bad key in the run file is named.
    std::fs::write(&toml, "[train]\nstepz = 3\n").expect("toml");
    let err = run(&job, |_| {}).expect_err("bad key").to_string();
    assert!(err.contains("stepz"), "{err}");
}
