//! GGUF tokenizers against llama.cpp's own tokenizer tests.
//!
//! llama.cpp ships vocabulary-only GGUF files (`models/ggml-vocab-*.gguf`, no
//! tensors) with `test-tokenizer-0` cases: `.inp` holds texts separated by
//! `\n__ggml_vocab_test__\n`, `.out` one line of expected ids per text
//! (tokenized with `add_special = false, parse_special = false`). `cargo
//! xtask peers` copies them from the llama-cpp-python 0.3.36 sdist into
//! `.forge/peers/vocab/`. Every case must give exactly those ids, and
//! decoding them must give the text back.

mod common;

use std::path::{Path, PathBuf};

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

fn load(path: &Path) -> Tokenizer {
    let file = GgufFile::open(path).expect("vocab-only GGUF opens");
    assert_eq!(file.tensor_count(), 0, "vocabulary-only file");
    Tokenizer::from_gguf(&file, path).expect("tokenizer")
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
