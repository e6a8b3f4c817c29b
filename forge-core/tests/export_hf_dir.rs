//! Export from a Hugging Face folder (seeded random tiny `llama` and `qwen2`
//! models written by forge-model's factory, byte-level tokenizer) through
//! the MLX path, read back by forge-model's GGUF loader: the F32 export gives
//! the same logits (the Q/K permutation with the kv head count, qwen2's q/k/v
//! biases, untied and tied heads all round-trip), and the tokenizer metadata
//! is what llama.cpp needs (`gpt2`, `gpt-2` pre-tokenizer, padded vocabulary).
//!
//! MLX is not thread-safe: run with `--test-threads=1`.

use std::path::PathBuf;

use forge_core::export::{ExportOptions, export};
use forge_core::gguf::GgufFile;
use forge_core::gguf::export::FileType;
use forge_core::model::{
    Architecture, LoadOptions, ModelSource, load, random_model, tiny_config, write_hf_dir,
};
use mlx_rs::Array;

fn temp(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("forge-core-export-hf");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("{}-{name}", std::process::id()))
}

fn logits(model: &mut forge_core::model::Model, ids: &[i32]) -> Vec<f32> {
    let tokens = Array::from_slice(ids, &[1, ids.len() as i32]);
    let out = model.forward(&tokens, None).expect("forward");
    out.eval().expect("eval");
    out.as_slice::<f32>().to_vec()
}

#[test]
fn hf_folder_export_round_trips_through_the_gguf_loader() {
    let ids: Vec<i32> = vec![1, 72, 101, 108, 108, 111, 2, 40, 250, 7];
    for (arch, tied) in [
        (Architecture::Llama, false),
        (Architecture::Llama, true),
        (Architecture::Qwen2, false),
    ] {
        let config = tiny_config(arch).with_tie_word_embeddings(tied);
        let mut model = random_model(config, 3).expect("model");
        let dir = temp(&format!("{arch}-{tied}"));
        write_hf_dir(&model, &dir).expect("hf dir");
        let out = temp(&format!("{arch}-{tied}.gguf"));
        let mut steps = 0;
        let (report, spec) = export(
            &ModelSource::HfDir(dir.clone()),
            &ExportOptions::new(FileType::F32),
            &out,
            &mut |_| steps += 1,
        )
        .expect("export");
        assert_eq!(steps, report.tensors);
        assert_eq!(spec.tokenizer.tokens.len(), 272);

        let file = GgufFile::open(&out).expect("read back");
        assert_eq!(
            file.get::<&str>("general.architecture").ok(),
            Some(arch.model_type())
        );
        assert_eq!(file.get::<&str>("tokenizer.ggml.model").ok(), Some("gpt2"));
        assert_eq!(file.get::<&str>("tokenizer.ggml.pre").ok(), Some("gpt-2"));
        let tokens: Vec<String> = file.get("tokenizer.ggml.tokens").expect("tokens");
        assert_eq!(tokens.len(), 272);
        assert_eq!(tokens[271], "[PAD271]");
        let types: Vec<i32> = file.get("tokenizer.ggml.token_type").expect("types");
        assert_eq!(&types[..3], &[3, 3, 3]);
        assert_eq!(types[271], 5);
        assert_eq!(file.tensor("output.weight").is_none(), tied);
        assert_eq!(
            file.tensor("blk.0.attn_q.bias").is_some(),
            arch == Architecture::Qwen2
        );
        drop(file);

        let mut back = load(
            &ModelSource::Gguf(out.clone()),
            &LoadOptions::new().with_tokenizer(false),
        )
        .expect("load exported")
        .model;
        let (a, b) = (logits(&mut model, &ids), logits(&mut back, &ids));
        let max = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        println!("{arch} tied={tied}: max |logit difference| {max:e}");
        assert!(max < 1e-4, "{arch} tied={tied}: logits differ by {max}");
        std::fs::remove_file(&out).ok();
        std::fs::remove_dir_all(&dir).ok();
    }
}
