//! GGUF loading: tiny random models written as GGUF (llama.cpp's names, shapes
//! and q/k permutation) load back into the same logits; metadata errors name
//! the key; bad tensors and files name the tensor and file; the real SmolLM2
//! file gives a sensible greedy continuation.
//!
//! MLX is not thread-safe: run with `--test-threads=1`.

mod common;

use std::path::Path;

use forge_gguf::{GgmlType, GgufWriter, NameArch, Value};
use forge_model::{
    Architecture, CpuModel, Error, GenerateOptions, Generator, KvType, LoadOptions, Model,
    ModelConfig, ModelSource, load, random_model, tiny_config,
};
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;

/// How a test GGUF deviates from a faithful conversion.
#[derive(Default)]
struct Tweaks {
    drop_key: Option<&'static str>,
    set_key: Option<(&'static str, Value)>,
    /// Store 2-D matrices in this type instead of F32.
    matrix_type: Option<GgmlType>,
    /// Skip llama.cpp's q/k permutation (a wrong converter).
    no_permute: bool,
    extra_tensor: Option<&'static str>,
}

fn arch_name(a: Architecture) -> NameArch {
    NameArch::parse(a.model_type()).expect("known")
}

/// Writes `model` as llama.cpp's converter would (F32 tensors).
fn write_gguf(model: &Model, path: &Path, tweaks: &Tweaks) {
    let c = model.config();
    let arch = c.architecture.model_type();
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), arch.into()),
        (format!("{arch}.block_count"), (c.num_layers as u32).into()),
        (
            format!("{arch}.embedding_length"),
            (c.hidden_size as u32).into(),
        ),
        (
            format!("{arch}.feed_forward_length"),
            (c.intermediate_size as u32).into(),
        ),
        (
            format!("{arch}.attention.head_count"),
            (c.num_heads as u32).into(),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            (c.num_kv_heads as u32).into(),
        ),
        (format!("{arch}.rope.freq_base"), c.rope_theta.into()),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            c.rms_norm_eps.into(),
        ),
        (format!("{arch}.context_length"), 4096u32.into()),
        (format!("{arch}.vocab_size"), (c.vocab_size as u32).into()),
    ];
    if let Some(k) = tweaks.drop_key {
        meta.retain(|(key, _)| key != k);
    }
    if let Some((k, v)) = &tweaks.set_key {
        meta.retain(|(key, _)| key != k);
        meta.push(((*k).to_string(), v.clone()));
    }
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w = w.with_metadata(k, v);
    }
    let na = arch_name(c.architecture);
    let params = model.parameters().flatten();
    let mut names: Vec<&str> = params.keys().map(|k| k.as_ref()).collect();
    names.sort();
    let mut datas = Vec::new();
    for name in names {
        let a = params
            .get(name)
            .expect("param")
            .as_dtype(mlx_rs::Dtype::Float32)
            .expect("f32");
        a.eval().expect("eval");
        let shape: Vec<usize> = a.shape().iter().map(|&d| d as usize).collect();
        let mut values = a.as_slice::<f32>().to_vec();
        let gname = forge_gguf::hf_to_gguf(na, name).expect("mapped");
        if forge_gguf::qk_permuted(na)
            && !tweaks.no_permute
            && let Some(is_q) = forge_gguf::gguf_qk(&gname)
        {
            let heads = if is_q { c.num_heads } else { c.num_kv_heads };
            let cols = shape.get(1).copied().unwrap_or(1);
            values = forge_gguf::permute_qk_rows(&values, shape[0], cols, heads).expect("perm");
        }
        let ty = match tweaks.matrix_type {
            Some(t) if shape.len() == 2 => t,
            _ => GgmlType::F32,
        };
        let row = *shape.last().expect("dims");
        let bytes = forge_quant::quantize(ty, &values, row).expect("quantize");
        let gshape: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        w = w.with_tensor(gname, gshape, ty).expect("tensor");
        datas.push(bytes);
    }
    if let Some(extra) = tweaks.extra_tensor {
        w = w.with_tensor(extra, [4u64], GgmlType::F32).expect("tensor");
        datas.push(vec![0u8; 16]);
    }
    let mut out = w.create(path).expect("create");
    for d in &datas {
        out.write_tensor(d).expect("write");
    }
    out.finish().expect("finish");
}

fn logits(model: &mut Model, ids: &[u32]) -> Vec<f32> {
    let tokens = Array::from_slice(
        &ids.iter().map(|&x| x as i32).collect::<Vec<_>>(),
        &[1, ids.len() as i32],
    );
    let l = model.forward(&tokens, None).expect("forward");
    l.eval().expect("eval");
    l.as_slice::<f32>().to_vec()
}

fn no_tok() -> LoadOptions {
    LoadOptions::new().with_tokenizer(false)
}

fn configs() -> Vec<ModelConfig> {
    vec![
        tiny_config(Architecture::Llama),
        tiny_config(Architecture::Llama).with_tie_word_embeddings(true),
        tiny_config(Architecture::Qwen2),
        tiny_config(Architecture::Mistral).with_tie_word_embeddings(true),
        tiny_config(Architecture::Llama).with_attention_qkv_bias(true),
    ]
}

#[test]
fn gguf_round_trip_gives_identical_logits() {
    let dir = tempfile::tempdir().expect("tmp");
    let ids = [5u32, 17, 99, 3, 250, 42, 7];
    for (i, config) in configs().into_iter().enumerate() {
        let mut reference = random_model(config.clone(), 7 + i as u64).expect("model");
        let path = dir.path().join(format!("m{i}.gguf"));
        write_gguf(&reference, &path, &Tweaks::default());
        let mut loaded = load(&ModelSource::Gguf(path.clone()), &no_tok()).expect("load");
        let c = loaded.model.config();
        assert_eq!(c.tie_word_embeddings, config.tie_word_embeddings, "{i}");
        assert_eq!(c.attention_qkv_bias, config.attention_qkv_bias, "{i}");
        assert_eq!(c.num_kv_heads, config.num_kv_heads);
        let a = logits(&mut reference, &ids);
        let b = logits(&mut loaded.model, &ids);
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert_eq!(diff, 0.0, "config {i}: max abs logit diff {diff}");
    }
}

#[test]
fn unpermuted_file_gives_different_logits() {
    // Guards the test above: without the converter's permutation the q/k rows
    // land in the wrong places (llama), so un-permuting must matter.
    let dir = tempfile::tempdir().expect("tmp");
    let mut reference = random_model(tiny_config(Architecture::Llama), 3).expect("model");
    let path = dir.path().join("m.gguf");
    let tweaks = Tweaks {
        no_permute: true,
        ..Tweaks::default()
    };
    write_gguf(&reference, &path, &tweaks);
    let mut loaded = load(&ModelSource::Gguf(path), &no_tok()).expect("load");
    let ids = [1u32, 2, 3, 4, 5];
    let a = logits(&mut reference, &ids);
    let b = logits(&mut loaded.model, &ids);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff > 1e-3, "{diff}");
}

#[test]
fn quantized_matrices_dequantize_to_the_requested_dtype() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut reference = random_model(tiny_config(Architecture::Qwen2), 11).expect("model");
    let path = dir.path().join("q8.gguf");
    let tweaks = Tweaks {
        matrix_type: Some(GgmlType::Q8_0),
        ..Tweaks::default()
    };
    write_gguf(&reference, &path, &tweaks);
    let ids = [9u32, 8, 7, 6];
    let a = logits(&mut reference, &ids);
    let mut loaded = load(&ModelSource::Gguf(path.clone()), &no_tok()).expect("load");
    let b = logits(&mut loaded.model, &ids);
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff > 0.0 && diff < 0.05, "Q8_0 logits diff {diff}");
    let f16 = load(
        &ModelSource::Gguf(path),
        &no_tok().with_dtype(mlx_rs::Dtype::Float16),
    )
    .expect("load f16");
    let p = f16.model.parameters().flatten();
    assert_eq!(
        p["model.layers.0.self_attn.q_proj.weight"].dtype(),
        mlx_rs::Dtype::Float16
    );
}

fn load_err(tweaks: Tweaks) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let model = random_model(tiny_config(Architecture::Llama), 1).expect("model");
    let path = dir.path().join("bad.gguf");
    write_gguf(&model, &path, &tweaks);
    let e = load(&ModelSource::Gguf(path), &no_tok()).expect_err("must fail");
    let text = e.to_string();
    assert!(text.contains("bad.gguf"), "message names the file: {text}");
    text
}

#[test]
fn missing_metadata_keys_are_named() {
    for key in [
        "general.architecture",
        "llama.block_count",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.layer_norm_rms_epsilon",
    ] {
        let e = load_err(Tweaks {
            drop_key: Some(key),
            ..Tweaks::default()
        });
        assert!(
            e.contains(&format!("missing required key `{key}")),
            "{key}: {e}"
        );
    }
    let e = load_err(Tweaks {
        drop_key: Some("llama.vocab_size"),
        ..Tweaks::default()
    });
    assert!(
        e.contains("tokenizer.ggml.tokens (or llama.vocab_size)"),
        "{e}"
    );
}

#[test]
fn bad_metadata_values_are_named() {
    let cases: Vec<(&'static str, Value, &str)> = vec![
        (
            "general.architecture",
            "gpt2".into(),
            "`general.architecture` is \"gpt2\"",
        ),
        (
            "general.architecture",
            3u32.into(),
            "`general.architecture` is u32",
        ),
        (
            "llama.block_count",
            "thirty".into(),
            "`llama.block_count` is string",
        ),
        (
            "llama.block_count",
            Value::I32(-1),
            "`llama.block_count` is i32",
        ),
        (
            "llama.attention.head_count_kv",
            3u32.into(),
            "`num_key_value_heads` is 3",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            1u32.into(),
            "layer_norm_rms_epsilon` is u32",
        ),
        (
            "llama.rope.dimension_count",
            8u32.into(),
            "`llama.rope.dimension_count` is 8",
        ),
        (
            "llama.rope.scaling.type",
            "yarn".into(),
            "`llama.rope.scaling.type` is \"yarn\"",
        ),
        ("llama.embedding_length", 0u32.into(), "`hidden_size` is 0"),
    ];
    for (key, value, expected) in cases {
        let e = load_err(Tweaks {
            set_key: Some((key, value)),
            ..Tweaks::default()
        });
        assert!(e.contains(expected), "{key}: {e}");
    }
}

#[test]
fn unsupported_tensors_and_types_are_named() {
    let e = load_err(Tweaks {
        extra_tensor: Some("blk.0.attn_qkv.weight"),
        ..Tweaks::default()
    });
    assert!(e.contains("`blk.0.attn_qkv.weight`"), "{e}");
    let e = load_err(Tweaks {
        extra_tensor: Some("rope_freqs.weight"),
        ..Tweaks::default()
    });
    assert!(
        e.contains("rope_freqs.weight") && e.contains("not supported"),
        "{e}"
    );
    // A type without a dequantizer (Q8_K), written by hand.
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("q8k.gguf");
    let w = GgufWriter::new()
        .with_metadata("general.architecture", "llama")
        .with_metadata("llama.block_count", 1u32)
        .with_metadata("llama.embedding_length", 256u32)
        .with_metadata("llama.feed_forward_length", 256u32)
        .with_metadata("llama.attention.head_count", 4u32)
        .with_metadata("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .with_metadata("llama.vocab_size", 4u32)
        .with_tensor("token_embd.weight", [256u64, 4], GgmlType::Q8_K)
        .expect("plan");
    let bytes = GgmlType::Q8_K.bytes_for(1024).expect("size") as usize;
    let mut out = w.create(&path).expect("create");
    out.write_tensor(&vec![0u8; bytes]).expect("write");
    out.finish().expect("finish");
    let e = load(&ModelSource::Gguf(path), &no_tok())
        .expect_err("Q8_K")
        .to_string();
    assert!(
        e.contains("`token_embd.weight`") && e.contains("Q8_K"),
        "{e}"
    );
}

#[test]
fn truncated_and_missing_files_name_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = random_model(tiny_config(Architecture::Llama), 1).expect("model");
    let path = dir.path().join("t.gguf");
    write_gguf(&model, &path, &Tweaks::default());
    let bytes = std::fs::read(&path).expect("read");
    for cut in [10, bytes.len() / 3, bytes.len() - 7] {
        let p = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &bytes[..cut]).expect("write");
        let e = load(&ModelSource::Gguf(p), &no_tok()).expect_err("truncated");
        let text = e.to_string();
        assert!(matches!(e, Error::GgufFormat(_)), "{text}");
        assert!(text.contains(&format!("cut{cut}.gguf")), "{text}");
    }
    let e = load(&ModelSource::Gguf(dir.path().join("none.gguf")), &no_tok()).expect_err("missing");
    assert!(e.to_string().contains("none.gguf"), "{e}");
}

#[test]
fn sources_parse() {
    assert_eq!(ModelSource::parse("default"), ModelSource::Default);
    assert_eq!(ModelSource::default(), ModelSource::Default);
    assert_eq!(
        ModelSource::parse("m/SmolLM2.Q4_1.GGUF"),
        ModelSource::Gguf("m/SmolLM2.Q4_1.GGUF".into())
    );
    assert_eq!(
        ModelSource::parse("models/x"),
        ModelSource::HfDir("models/x".into())
    );
}

#[test]
fn smollm2_default_model_loads_and_continues_code() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let mut loaded = load(&ModelSource::Gguf(path), &LoadOptions::new()).expect("load");
    let c = loaded.model.config().clone();
    assert_eq!(
        (
            c.num_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_heads,
            c.num_kv_heads
        ),
        (30, 576, 1536, 9, 3)
    );
    assert_eq!(
        (c.vocab_size, c.head_dim, c.max_position_embeddings),
        (49152, 64, 8192)
    );
    assert_eq!(c.rope_theta, 100_000.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(loaded.report.loaded, 272);
    let tok = loaded.tokenizer.take().expect("tokenizer from metadata");
    assert_eq!(tok.eos_ids(), &[2]);
    assert_eq!(tok.bos_id(), Some(1));
    assert!(tok.chat_template().contains("<|im_start|>"));
    let mut g = Generator::new(&mut loaded.model, &tok);
    let out = g
        .generate(
            "def fibonacci(n):",
            &GenerateOptions::new().with_max_tokens(24),
        )
        .expect("generate");
    println!("def fibonacci(n):{}", out.text);
    assert!(out.text.contains("return"), "{:?}", out.text);
    assert!(
        out.text.contains("fibonacci(n - 1)") || out.text.contains("fibonacci(n-1)"),
        "{:?}",
        out.text
    );
}

/// Max |a − b| over two logit rows.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// The CPU engine computes the same decoder as the MLX model: on F32 files
/// with an F32 cache (no rounding anywhere but float order) the last
/// position's logits agree to float precision for every architecture
/// variant, whether the prompt is one call or token by token.
#[test]
fn cpu_engine_equals_mlx_model_on_f32_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let ids = [5u32, 17, 99, 3, 250, 42, 7];
    for (i, config) in configs().into_iter().enumerate() {
        let mut reference = random_model(config.clone(), 7 + i as u64).expect("model");
        let path = dir.path().join(format!("c{i}.gguf"));
        write_gguf(&reference, &path, &Tweaks::default());
        let all = logits(&mut reference, &ids);
        let vocab = config.vocab_size;
        let want = &all[all.len() - vocab..];
        let engine = CpuModel::open(&path)
            .expect("cpu engine")
            .with_kv_type(KvType::F32);
        let mut cache = engine.new_cache();
        let got = engine.forward_last(&ids, &mut cache).expect("forward");
        assert_eq!(cache.len(), ids.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max_diff(want, &got);
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "config {i}: max abs logit diff {d}"
        );
        // Token by token through the same cache gives the one-call logits.
        let mut cache = engine.new_cache();
        let mut step = Vec::new();
        for &t in &ids {
            step = engine.forward_last(&[t], &mut cache).expect("step");
        }
        assert!(
            max_diff(&step, &got) <= 1e-5 * scale.max(1.0),
            "config {i}: incremental"
        );
    }
}

/// With llama.cpp's defaults (F16 cache, quantized activations for a
/// quantized file) the engine stays close to the MLX model, and a wrong
/// permutation is caught like in the MLX path.
#[test]
fn cpu_engine_on_quantized_files_and_f16_cache() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut reference = random_model(tiny_config(Architecture::Llama), 5).expect("model");
    let ids = [9u32, 8, 7, 6, 30, 12];
    let all = logits(&mut reference, &ids);
    let vocab = reference.config().vocab_size;
    let want = all[all.len() - vocab..].to_vec();
    for (ty, bound) in [
        (None, 0.02f32),
        (Some(GgmlType::Q8_0), 0.1),
        (Some(GgmlType::Q4_1), 0.6),
        (Some(GgmlType::Q4_0), 0.6),
    ] {
        let path = dir.path().join(format!("{ty:?}.gguf"));
        write_gguf(
            &reference,
            &path,
            &Tweaks {
                matrix_type: ty,
                ..Tweaks::default()
            },
        );
        let engine = CpuModel::open(&path).expect("engine");
        let got = engine
            .forward_last(&ids, &mut engine.new_cache())
            .expect("forward");
        let d = max_diff(&want, &got);
        assert!(d > 0.0 && d < bound, "{ty:?}: max abs logit diff {d}");
    }
    let path = dir.path().join("unpermuted.gguf");
    write_gguf(
        &reference,
        &path,
        &Tweaks {
            no_permute: true,
            ..Tweaks::default()
        },
    );
    let engine = CpuModel::open(&path)
        .expect("engine")
        .with_kv_type(KvType::F32);
    let got = engine
        .forward_last(&ids, &mut engine.new_cache())
        .expect("forward");
    assert!(max_diff(&want, &got) > 1e-3);
}

#[test]
fn cpu_engine_bad_input_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let reference = random_model(tiny_config(Architecture::Llama), 2).expect("model");
    let path = dir.path().join("m.gguf");
    write_gguf(&reference, &path, &Tweaks::default());
    let engine = CpuModel::open(&path).expect("engine");
    let vocab = engine.config().vocab_size as u32;
    let err = engine
        .forward_last(&[1, vocab], &mut engine.new_cache())
        .expect_err("bad id")
        .to_string();
    assert!(err.contains(&format!("token id {vocab}")), "{err}");
    assert!(engine.forward_last(&[], &mut engine.new_cache()).is_err());
    let err = forge_model::load_cpu(&ModelSource::HfDir(dir.path().to_path_buf()))
        .expect_err("hf dir")
        .to_string();
    assert!(err.contains("GGUF"), "{err}");
    let missing = CpuModel::open(dir.path().join("nope.gguf")).expect_err("missing");
    assert!(missing.to_string().contains("nope.gguf"), "{missing}");
}

/// The generator drives the CPU engine like the MLX model: greedy tokens
/// equal an argmax loop over `forward_last`.
#[test]
fn generator_drives_the_cpu_engine() {
    let dir = tempfile::tempdir().expect("tmp");
    let reference = random_model(tiny_config(Architecture::Qwen2), 8).expect("model");
    let path = dir.path().join("m.gguf");
    write_gguf(&reference, &path, &Tweaks::default());
    let mut engine = CpuModel::open(&path).expect("engine");
    let prompt = [3u32, 1, 4, 1, 5];
    let options = GenerateOptions::new()
        .with_max_tokens(6)
        .with_stop_at_eos(false);
    let got: Vec<u32> = engine
        .generate_ids(&prompt, &options)
        .expect("stream")
        .map(|t| t.expect("token"))
        .collect();
    let mut cache = engine.new_cache();
    let mut logits = engine.forward_last(&prompt, &mut cache).expect("prompt");
    let mut want = Vec::new();
    for _ in 0..6 {
        let t = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|x| x.0 as u32)
            .expect("argmax");
        want.push(t);
        logits = engine.forward_last(&[t], &mut cache).expect("step");
    }
    assert_eq!(got, want);
}
