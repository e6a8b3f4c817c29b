//! GGUF tokenizers against llama.cpp's own tokenizer tests.
//!
//! llama.cpp ships vocabulary-only GGUF files (`models/ggml-vocab-*.gguf`, no
//! tensors) with `test-tokenizer-0` cases: `.inp` holds texts separated by
//! `\n__ggml_vocab_test__\n`, `.out` one line of expected ids per text
//! (tokenized with `add_special = false, parse_special = false`). `cargo
//! xtask peers` copies them from the llama-cpp-python 0.3.36 sdist into
//! `.forge/peers/vocab/`. Every case must give exactly those ids, and
//! decoding them must give the text back.
//!
//! Then llama.cpp itself (node-llama-cpp, vocabulary only) on a larger
//! seeded stress corpus, the special-token switches on the SentencePiece
//! file, its Hugging Face equivalent, and a whole model file carrying it.
//! Without the peers the tests skip (fail with `FORGE_REQUIRE_PEERS=1`).
//! MLX is not thread-safe: run with `--test-threads=1`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use forge_gguf::GgufFile;
use forge_model::Tokenizer;

/// (vocabulary, `tokenizer.ggml.model`).
const VOCABS: &[(&str, &str)] = &[
    ("llama-spm", "llama"),
    ("phi-3", "llama"),
    ("gpt-2", "gpt2"),
    ("llama-bpe", "gpt2"),
    ("qwen2", "gpt2"),
    ("starcoder", "gpt2"),
    ("refact", "gpt2"),
];

fn vocab_path(name: &str) -> Option<PathBuf> {
    let path = common::peers_dir()
        .join("vocab")
        .join(format!("ggml-vocab-{name}.gguf"));
    if path.is_file() {
        return Some(path);
    }
    common::skip_or_fail(&format!(
        "llama.cpp vocabulary not found at {}",
        path.display()
    ));
    None
}

/// The cases of `test-tokenizer-0`: texts split on the separator, ids one
/// line per text.
fn cases(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let read = |ext: &str| {
        let path = PathBuf::from(format!("{}.{ext}", gguf.display()));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let inp = read("inp");
    let out = read("out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(at) => {
                texts.push(rest[..at].to_string());
                rest = &rest[at + sep.len()..];
            }
            None => {
                texts.push(rest.to_string());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|t| t.parse().unwrap_or_else(|e| panic!("{t:?} in .out: {e}")))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{}: .inp and .out disagree",
        gguf.display()
    );
    texts.into_iter().zip(ids).collect()
}

/// The tokenizer of a vocabulary file, built once per test binary (the
/// large BPE vocabularies take seconds in a debug build).
fn load(path: &Path) -> &'static Tokenizer {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, &'static Tokenizer>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    cache.entry(path.to_path_buf()).or_insert_with(|| {
        let file = GgufFile::open(path).expect("vocab-only GGUF opens");
        assert_eq!(file.tensor_count(), 0, "vocabulary-only file");
        Box::leak(Box::new(
            Tokenizer::from_gguf(&file, path).expect("tokenizer"),
        ))
    })
}

#[test]
fn llama_cpp_vocab_cases_tokenize_exactly() {
    let mut failures = Vec::new();
    let mut total = 0;
    for &(name, model) in VOCABS {
        let Some(path) = vocab_path(name) else {
            return;
        };
        let file = GgufFile::open(&path).expect("open");
        assert_eq!(file.get::<&str>("tokenizer.ggml.model").ok(), Some(model));
        let tok = load(&path);
        let cases = cases(&path);
        assert!(cases.len() >= 30, "{name}: only {} cases", cases.len());
        let mut passed = 0;
        for (text, expected) in &cases {
            let got = tok.encode_with(text, false, false).expect("encode");
            if &got == expected {
                passed += 1;
            } else {
                failures.push(format!(
                    "{name}: {text:?}\n  got      {got:?}\n  expected {expected:?}"
                ));
            }
            let back = tok.decode(expected, false).expect("decode");
            if &back != text {
                failures.push(format!("{name}: {text:?} decodes back to {back:?}"));
            }
        }
        total += cases.len();
        println!("{name} ({model}): {passed}/{} cases exact", cases.len());
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The SentencePiece file with the special-token switches: bos by default,
/// `</s>` parsed only when asked, decoding as llama.cpp's detokenizer.
#[test]
fn llama_spm_special_tokens_and_flags() {
    let Some(path) = vocab_path("llama-spm") else {
        return;
    };
    let tok = load(&path);
    assert_eq!(tok.vocab_size(), 32000);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids().first(), Some(&2));
    // " Hello world" is [29871, 15043, 3186] in the .out file; "Hello world" [15043, 3186].
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        vec![1, 15043, 3186]
    );
    assert_eq!(
        tok.encode_with("Hello world</s>", false, true).unwrap(),
        vec![15043, 3186, 2]
    );
    let literal = tok.encode_with("Hello world</s>", false, false).unwrap();
    assert!(
        !literal.contains(&2),
        "</s> is text without parse_special: {literal:?}"
    );
    assert_eq!(tok.decode(&literal, false).unwrap(), "Hello world</s>");
    // After a special token the text gets the space prefix again.
    assert_eq!(
        tok.encode_with("<s>Hello", false, true).unwrap(),
        vec![1, 15043]
    );
    // Control tokens render only when special tokens are kept.
    assert_eq!(tok.decode(&[15043, 3186, 2], true).unwrap(), "Hello world");
    assert_eq!(
        tok.decode(&[15043, 3186, 2], false).unwrap(),
        "Hello world</s>"
    );
    // Byte tokens: 🦙 is four byte tokens (243 162 169 156 = 0xF0 0x9F 0xA6 0x99).
    assert_eq!(tok.decode(&[243, 162, 169, 156], false).unwrap(), "🦙");
}

/// The Hugging Face form of the SentencePiece vocabularies (what
/// `Tokenizer::inner` exports as `tokenizer.json`) on the same cases: the
/// BPE `transformers` builds from scores differs from llama.cpp only where
/// scores tie, which these cases never hit.
#[test]
fn spm_hf_equivalent_agrees_on_the_cases() {
    for name in ["llama-spm", "phi-3"] {
        let Some(path) = vocab_path(name) else {
            return;
        };
        let tok = load(&path);
        for (text, expected) in cases(&path) {
            // The HF normalizer prepends ▁ to empty text too; llama.cpp does not.
            if text.is_empty() {
                continue;
            }
            let got = tok.inner().encode(text.as_str(), false).expect("hf encode");
            assert_eq!(got.get_ids(), expected.as_slice(), "{name}: {text:?}");
        }
    }
}

/// Seeded texts that stress the tokenizer: runs of spaces, tabs and
/// newlines, mixed scripts, emoji, the `▁` character itself, digits, and
/// special-token texts with and without spaces around them.
fn stress_texts(count: usize, seed: u64) -> Vec<String> {
    const PARTS: &[&str] = &[
        "Hello",
        "world",
        "the",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        " \n ",
        "fn",
        "main()",
        "{",
        "}",
        "::",
        "->",
        "==",
        "'s",
        "'ll",
        "don't",
        "123",
        "4567890",
        "3.14",
        "é",
        "Äpfel",
        "naïve",
        "日本語",
        "中文",
        "한국어",
        "Привет",
        "مرحبا",
        "🦙",
        "👍🏽",
        "🇫🇷",
        "\u{2581}",
        "\u{2581}\u{2581}",
        "<s>",
        "</s>",
        "<unk>",
        "<|endoftext|>",
        "<|user|>",
        "<|end|>",
        "<|assistant|>",
        "<0x41>",
        "\u{0}",
        "\u{7f}",
        "\u{a0}",
        "\u{3000}",
        "ǅ",
        "ﬁ",
        "…",
        "—",
        "`code`",
        "//",
        "#[test]",
        "    ",
        "x",
        "a",
        "zz",
    ];
    let mut state = seed;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    (0..count)
        .map(|_| {
            let len = 1 + (next() % 12) as usize;
            (0..len)
                .map(|_| PARTS[(next() % PARTS.len() as u64) as usize])
                .collect()
        })
        .collect()
}

/// The texts of a `tests/data` JSONL file.
fn data_texts(name: &str) -> Vec<String> {
    common::jsonl(name)
        .into_iter()
        .map(|v| v["text"].as_str().expect("text").to_string())
        .collect()
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("u32"))
        .collect()
}

/// Every vocabulary against llama.cpp itself (node-llama-cpp, vocabulary
/// only) on a larger corpus: the crate's tokenizer corpora, the
/// `test-tokenizer-0` texts and 400 seeded stress texts, with special tokens
/// parsed and not, and the detokenized text.
#[test]
fn vocabs_match_llama_cpp_on_a_stress_corpus() {
    let Some((dir, node)) = common::node_llama_cpp() else {
        return;
    };
    let mut vocabs = Vec::new();
    for &(name, _) in VOCABS {
        let Some(path) = vocab_path(name) else {
            return;
        };
        vocabs.push((name, path));
    }
    let mut texts = data_texts("tokenize_corpus.jsonl");
    texts.extend(data_texts("llama_cpp_prompts.jsonl"));
    texts.extend(cases(&vocabs[0].1).into_iter().map(|(t, _)| t));
    texts.extend(stress_texts(400, 0x5eed_f0e5));
    let request = serde_json::json!({
        "vocabs": vocabs.iter().map(|(_, p)| serde_json::json!({"model": p, "texts": texts}))
            .collect::<Vec<_>>(),
    });
    let tmp = tempfile::tempdir().expect("temp dir");
    let (req, resp) = (tmp.path().join("req.json"), tmp.path().join("resp.json"));
    std::fs::write(&req, request.to_string()).expect("write request");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/llama_cpp_tokenize.mjs");
    let out = std::process::Command::new(&node)
        .current_dir(&dir)
        .arg(&script)
        .arg(&req)
        .arg(&resp)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "llama.cpp tokenizer reference failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&resp).expect("read response")).expect("json");
    let results = reference["results"].as_array().expect("results");
    let mut failures = Vec::new();
    for (((name, model), path), result) in VOCABS
        .iter()
        .zip(vocabs.iter().map(|(_, p)| p))
        .zip(results)
    {
        // Byte-level BPE decoding is the `tokenizers` decoder, which keeps
        // the text as it was; llama.cpp's also drops spaces before `?!.,`
        // ("clean_up_tokenization_spaces"), so only SentencePiece text is compared.
        let compare_text = *model == "llama";
        let tok = load(path);
        let mut exact = 0;
        for (i, text) in texts.iter().enumerate() {
            let plain = ids(&result["plain"][i]);
            let special = ids(&result["special"][i]);
            let detok = result["detok"][i].as_str().expect("detok");
            let ours_plain = tok.encode_with(text, false, false).expect("encode");
            let ours_special = tok.encode_with(text, false, true).expect("encode");
            let ours_detok = tok.decode(&special, false).expect("decode");
            if ours_plain == plain
                && ours_special == special
                && (!compare_text || ours_detok == detok)
            {
                exact += 1;
                continue;
            }
            failures.push(format!(
                "{name}: {text:?}\n  plain   {ours_plain:?}\n  llama   {plain:?}\n  special {ours_special:?}\n  llama   {special:?}\n  detok   {ours_detok:?}\n  llama   {detok:?}"
            ));
        }
        println!(
            "{name}: {exact}/{} texts exact against {} (ids with and without special parsing{})",
            texts.len(),
            reference["version"].as_str().unwrap_or("?"),
            if compare_text {
                ", detokenized text"
            } else {
                ""
            }
        );
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A whole Llama GGUF whose tokenizer is the SentencePiece vocabulary: a tiny
/// random model (llama.cpp's tensor names and q/k order) carrying
/// llama-spm's `tokenizer.*` metadata loads with that tokenizer on the MLX
/// and CPU paths, and generation decodes through it.
#[test]
fn spm_vocab_in_a_whole_model_file() {
    use forge_gguf::{GgmlType, GgufWriter, NameArch};
    use forge_model::{
        Architecture, GenerateOptions, Generator, LoadOptions, ModelConfig, ModelSource, load,
        load_cpu, random_model,
    };
    use mlx_rs::module::ModuleParameters;

    let Some(vocab) = vocab_path("llama-spm") else {
        return;
    };
    let source = GgufFile::open(&vocab).expect("open");
    let (layers, hidden, heads, kv_heads) = (2, 64, 4, 2);
    let config = ModelConfig::new(Architecture::Llama, 32000, hidden, 128, layers, heads)
        .with_num_kv_heads(kv_heads)
        .with_rms_norm_eps(1e-5)
        .with_tie_word_embeddings(true);
    let model = random_model(config, 11).expect("model");
    let mut w = GgufWriter::new()
        .with_metadata("general.architecture", "llama")
        .with_metadata("llama.block_count", layers as u32)
        .with_metadata("llama.embedding_length", hidden as u32)
        .with_metadata("llama.feed_forward_length", 128u32)
        .with_metadata("llama.attention.head_count", heads as u32)
        .with_metadata("llama.attention.head_count_kv", kv_heads as u32)
        .with_metadata("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .with_metadata("llama.context_length", 256u32)
        .with_metadata("llama.rope.dimension_count", (hidden / heads) as u32);
    for (key, value) in source.metadata().iter() {
        if key.starts_with("tokenizer.") {
            w = w.with_metadata(key, value.clone());
        }
    }
    let params = model.parameters().flatten();
    let mut names: Vec<&str> = params.keys().map(|k| k.as_ref()).collect();
    names.sort_unstable();
    let mut data = Vec::new();
    for name in names {
        let a = params
            .get(name)
            .expect("param")
            .as_dtype(mlx_rs::Dtype::Float32)
            .expect("f32");
        a.eval().expect("eval");
        let shape: Vec<usize> = a.shape().iter().map(|&d| d as usize).collect();
        let mut values = a.as_slice::<f32>().to_vec();
        let gguf_name = forge_gguf::hf_to_gguf(NameArch::Llama, name).expect("mapped");
        if let Some(is_q) = forge_gguf::gguf_qk(&gguf_name) {
            let h = if is_q { heads } else { kv_heads };
            values = forge_gguf::permute_qk_rows(&values, shape[0], shape[1], h).expect("permute");
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        w = w
            .with_tensor(gguf_name, dims, GgmlType::F32)
            .expect("tensor");
        data.push(
            values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny-spm.gguf");
    let mut out = w.create(&path).expect("create");
    for d in &data {
        out.write_tensor(d).expect("write");
    }
    out.finish().expect("finish");

    let mut loaded = load(&ModelSource::Gguf(path.clone()), &LoadOptions::new()).expect("load");
    let tok = loaded
        .tokenizer
        .take()
        .expect("tokenizer from the metadata");
    assert_eq!(tok.vocab_size(), 32000);
    assert_eq!(
        tok.encode("Hello world", true).unwrap(),
        vec![1, 15043, 3186]
    );
    let options = GenerateOptions::new()
        .with_max_tokens(6)
        .with_stop_at_eos(false);
    let generation = Generator::new(&mut loaded.model, &tok)
        .generate("Hello world", &options)
        .expect("generate");
    assert_eq!(generation.tokens.len(), 6);
    assert_eq!(
        generation.text,
        tok.decode(&generation.tokens, true).unwrap()
    );

    let (mut cpu, cpu_tok) = load_cpu(&ModelSource::Gguf(path)).expect("load_cpu");
    assert_eq!(
        cpu_tok.encode("Hello world", true).unwrap(),
        vec![1, 15043, 3186]
    );
    let cpu_generation = Generator::new(&mut cpu, &cpu_tok)
        .generate("Hello world", &options)
        .expect("generate");
    assert_eq!(cpu_generation.tokens.len(), 6);
}
