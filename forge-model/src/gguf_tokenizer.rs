//! A [`Tokenizer`] built from GGUF tokenizer metadata, so GGUF and Hugging
//! Face models share one tokenizer type. Vocabulary-only files (no tensors,
//! like llama.cpp's `ggml-vocab-*.gguf`) load too.
//!
//! Supported `tokenizer.ggml.model` values:
//!
//! - `"llama"`: SentencePiece-style vocabularies with scores (Llama 1/2,
//!   Mistral, Phi-3…), encoded and decoded with llama.cpp's algorithm by
//!   [`SpmVocab`](crate::spm) (score-ordered merges, byte fallback, `▁`
//!   escaping with `tokenizer.ggml.add_space_prefix`, special tokens);
//!   `tokenizer.ggml.scores` is required (f32 or i32, one per token),
//!   `tokenizer.ggml.token_type` optional (one per token, else all normal),
//!   bos/eos/unk default to 1/2/0 and `add_bos_token` to true as in
//!   llama.cpp. `Tokenizer::inner` is then the Hugging Face equivalent
//!   (byte-fallback BPE, merges ranked by score) for writing `tokenizer.json`.
//! - `"gpt2"`: byte-level BPE, built as a `tokenizers` tokenizer. The pieces:
//!   - model: BPE over `tokenizer.ggml.tokens` (id = position) and
//!     `tokenizer.ggml.merges` (`"a b"`, rank = position); `ignore_merges` for
//!     the pre-tokenizers where llama.cpp sets it (`llama3` family);
//!   - pre-tokenizer: the regexes llama.cpp uses for `tokenizer.ggml.pre`
//!     (applied one after the other, each match and each gap becoming a piece,
//!     as llama.cpp's `unicode_regex_split` does), then the GPT-2 byte → char
//!     map ([`PRE_TOKENIZER_NAMES`] lists the names known);
//!   - added tokens: every token of type control (3) or unknown (2), both
//!     special, or user-defined (4), plus the end-of-generation / end-of-turn /
//!     fill-in-the-middle tokens llama.cpp makes control by their text (`</s>`
//!     in Qwen2's vocabulary is type 1), matched in the raw text before
//!     pre-tokenization as llama.cpp does (special ones only when parsing
//!     special tokens: [`Tokenizer::encode_with`]);
//!   - special ids: `tokenizer.ggml.{bos,eos}_token_id`, and a bos prepended by
//!     `encode(text, true)` when `tokenizer.ggml.add_bos_token` is true (or the
//!     pre-tokenizer's default says so).
//!
//! Both: the chat template from `tokenizer.chat_template` (else ChatML);
//! eos ids from `tokenizer.ggml.{eos,eot}_token_id`.
//! `tests/gguf_vocab_parity.rs` checks both against llama.cpp's tokenizer
//! tests and against llama.cpp itself.
//!
//! Other models (`bert`, `t5`, `rwkv`…) are [`Error::Unsupported`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use forge_gguf::{Array, GgufFile, Value};

use crate::error::{Error, Result};
use crate::spm::{self, LlamaCppAttrs, SpecialIds, SpmOptions, SpmVocab, attr};
use crate::tokenizer::{CHATML_TEMPLATE, Tokenizer};

/// GPT-2's pre-tokenizer regex.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's (case-insensitive contractions spelled out, as llama.cpp does).
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (single digits).
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values this loader maps to regexes.
pub const PRE_TOKENIZER_NAMES: &[&str] = &[
    "default",
    "gpt2",
    "gpt-2",
    "phi-2",
    "smollm",
    "starcoder",
    "refact",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "qwen2",
    "deepseek-r1-qwen",
];

/// Regexes and `ignore_merges` / default add-bos for a pre-tokenizer name.
fn pre_tokenizer(name: &str) -> Option<(Vec<&'static str>, bool, bool)> {
    Some(match name {
        "default" => (
            vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
            false,
        ),
        "gpt2" | "gpt-2" | "phi-2" => (vec![GPT2], false, false),
        "smollm" | "starcoder" | "refact" => (vec![r"\p{N}", GPT2], false, false),
        "llama3" | "llama-v3" | "llama-bpe" => (vec![LLAMA3], true, true),
        "qwen2" | "deepseek-r1-qwen" => (vec![QWEN2], false, false),
        _ => return None,
    })
}

fn tok_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn strings<'a, D: AsRef<[u8]>>(
    file: &'a GgufFile<D>,
    path: &Path,
    key: &str,
) -> Result<&'a [String]> {
    file.get::<&[String]>(key).map_err(|e| match e {
        forge_gguf::Error::MissingKey { .. } => Error::MissingConfigKey {
            path: path.to_path_buf(),
            key: key.to_string(),
        },
        other => tok_err(path, other.to_string()),
    })
}

fn opt_id<D: AsRef<[u8]>>(file: &GgufFile<D>, key: &str) -> Option<u32> {
    file.value(key)
        .and_then(Value::to_u64)
        .and_then(|v| u32::try_from(v).ok())
}

const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
const TYPES_KEY: &str = "tokenizer.ggml.token_type";
const SCORES_KEY: &str = "tokenizer.ggml.scores";

/// `tokenizer.ggml.token_type`: one i32 per token, all normal (1) if absent.
fn token_types<D: AsRef<[u8]>>(file: &GgufFile<D>, path: &Path, n: usize) -> Result<Vec<i32>> {
    let types: Vec<i32> = match file.value(TYPES_KEY) {
        None => vec![1; n],
        Some(v) => file
            .get::<Vec<i32>>(TYPES_KEY)
            .map_err(|_| Error::invalid(path, TYPES_KEY, v.type_name(), "an array of i32"))?,
    };
    if types.len() != n {
        return Err(Error::invalid(
            path,
            TYPES_KEY,
            format!("{} entries", types.len()),
            format!("one per token ({n})"),
        ));
    }
    Ok(types)
}

/// `tokenizer.ggml.scores`: required, f32 (or i32, as llama.cpp accepts),
/// one per token.
fn scores<D: AsRef<[u8]>>(file: &GgufFile<D>, path: &Path, n: usize) -> Result<Vec<f32>> {
    let value = file
        .value(SCORES_KEY)
        .ok_or_else(|| Error::MissingConfigKey {
            path: path.to_path_buf(),
            key: SCORES_KEY.into(),
        })?;
    let scores: Vec<f32> = match value {
        Value::Array(Array::F32(v)) => v.clone(),
        // llama.cpp converts integer scores with a plain cast.
        Value::Array(Array::I32(v)) => v.iter().map(|&s| s as f32).collect(),
        other => {
            return Err(Error::invalid(
                path,
                SCORES_KEY,
                other.type_name(),
                "an array of f32 (or i32)",
            ));
        }
    };
    if scores.len() != n {
        return Err(Error::invalid(
            path,
            SCORES_KEY,
            format!("{} entries", scores.len()),
            format!("one per token ({n})"),
        ));
    }
    Ok(scores)
}

/// An optional boolean key.
fn opt_bool<D: AsRef<[u8]>>(file: &GgufFile<D>, path: &Path, key: &str) -> Result<Option<bool>> {
    match file.value(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(Error::invalid(path, key, other.type_name(), "a bool")),
    }
}

/// A special-token id key as llama.cpp reads it: absent → `default` (when in
/// range), out of range → `default`; not an integer → error.
fn special_id<D: AsRef<[u8]>>(
    file: &GgufFile<D>,
    path: &Path,
    key: &str,
    default: Option<u32>,
    n: usize,
) -> Result<Option<u32>> {
    let default = default.filter(|&d| (d as usize) < n);
    let Some(value) = file.value(key) else {
        return Ok(default);
    };
    let id = value
        .to_u64()
        .ok_or_else(|| Error::invalid(path, key, value.type_name(), "an unsigned integer"))?;
    Ok(match u32::try_from(id) {
        Ok(id) if (id as usize) < n => Some(id),
        _ => default,
    })
}

fn chat_template<D: AsRef<[u8]>>(file: &GgufFile<D>) -> String {
    file.get_opt::<&str>("tokenizer.chat_template")
        .ok()
        .flatten()
        .unwrap_or(CHATML_TEMPLATE)
        .to_string()
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.*`
    /// metadata; `path` names the file in errors.
    pub fn from_gguf<D: AsRef<[u8]>>(file: &GgufFile<D>, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let model_key = "tokenizer.ggml.model";
        let model: &str = file.get(model_key).map_err(|_| Error::MissingConfigKey {
            path: path.to_path_buf(),
            key: model_key.into(),
        })?;
        match model {
            "gpt2" => Self::from_gguf_bpe(file, path),
            "llama" => Self::from_gguf_spm(file, path),
            _ => Err(Error::Unsupported(format!(
                "{}: `{model_key}` is {model:?}; Forge builds \"gpt2\" (byte-level BPE) and \
                 \"llama\" (SentencePiece) tokenizers from GGUF metadata",
                path.display()
            ))),
        }
    }

    /// A SentencePiece-style (`llama`) vocabulary: llama.cpp's encoder.
    fn from_gguf_spm<D: AsRef<[u8]>>(file: &GgufFile<D>, path: &Path) -> Result<Self> {
        let tokens = strings(file, path, TOKENS_KEY)?;
        let n = tokens.len();
        let scores = scores(file, path, n)?;
        let types = token_types(file, path, n)?;
        let id = |key: &str, default| special_id(file, path, key, default, n);
        let fim_keys_present = spm::fim_keys()
            .filter(|k| file.value(k).is_some())
            .collect();
        let options = SpmOptions {
            bos_id: id("tokenizer.ggml.bos_token_id", Some(1))?,
            eos_id: id("tokenizer.ggml.eos_token_id", Some(2))?,
            unk_id: id("tokenizer.ggml.unknown_token_id", Some(0))?,
            eot_id: id("tokenizer.ggml.eot_token_id", None)?,
            eom_id: id("tokenizer.ggml.eom_token_id", None)?,
            fim_keys_present,
            fim_eog_ids: spm::fim_eog_keys()
                .map(|k| id(k, None))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect(),
            add_bos: opt_bool(file, path, "tokenizer.ggml.add_bos_token")?.unwrap_or(true),
            add_eos: opt_bool(file, path, "tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            add_space_prefix: opt_bool(file, path, "tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true),
            model_name: file
                .get_opt::<&str>("general.name")
                .ok()
                .flatten()
                .unwrap_or("")
                .to_lowercase(),
        };
        let (bos_id, eos_id, unk_id) = (options.bos_id, options.eos_id, options.unk_id);
        let vocab = SpmVocab::new(tokens, scores, &types, options).map_err(|e| tok_err(path, e))?;
        let inner = hf_equivalent(&vocab, bos_id, eos_id, unk_id)
            .map_err(|e| tok_err(path, format!("building the Hugging Face equivalent: {e}")))?;
        let piece = |id: Option<u32>| id.and_then(|i| vocab.piece(i)).map(str::to_string);
        Ok(Self {
            inner,
            bos_token: piece(bos_id),
            eos_token: piece(eos_id),
            bos_id,
            eos_ids: vocab.eog_ids().to_vec(),
            spm: Some(Arc::new(vocab)),
            literal: OnceLock::new(),
            path: path.to_path_buf(),
            chat_template: chat_template(file),
        })
    }

    /// A byte-level BPE (`gpt2`) vocabulary, as a `tokenizers` tokenizer.
    fn from_gguf_bpe<D: AsRef<[u8]>>(file: &GgufFile<D>, path: &Path) -> Result<Self> {
        let tokens = strings(file, path, TOKENS_KEY)?;
        let merges = strings(file, path, "tokenizer.ggml.merges")?;
        let types = token_types(file, path, tokens.len())?;
        let pre_key = "tokenizer.ggml.pre";
        let pre: &str = file.get_opt(pre_key).ok().flatten().unwrap_or("default");
        let (regexes, ignore_merges, default_add_bos) = pre_tokenizer(pre).ok_or_else(|| {
            Error::invalid(
                path,
                pre_key,
                format!("{pre:?}"),
                format!("one of {PRE_TOKENIZER_NAMES:?}"),
            )
        })?;

        let n = tokens.len();
        let mut ids = HashMap::with_capacity(n);
        for (id, token) in tokens.iter().enumerate() {
            if ids.insert(token.clone(), id as u32).is_some() {
                return Err(tok_err(
                    path,
                    format!("token {token:?} appears twice in tokenizer.ggml.tokens"),
                ));
            }
        }
        // Special tokens as llama.cpp sees them: the control (3), unknown (2)
        // and user-defined (4) types plus the end-of-generation / fill-in-the-
        // middle tokens it recognises by their text.
        let in_range = |key: &str| opt_id(file, key).filter(|&i| (i as usize) < n);
        let fim_keys_present: Vec<&'static str> = spm::fim_keys()
            .filter(|k| file.value(k).is_some())
            .collect();
        let LlamaCppAttrs { attrs, .. } = spm::llama_cpp_attrs(
            tokens,
            &ids,
            &types,
            &SpecialIds {
                eos_id: in_range("tokenizer.ggml.eos_token_id"),
                eot_id: in_range("tokenizer.ggml.eot_token_id"),
                eom_id: in_range("tokenizer.ggml.eom_token_id"),
                fim_keys_present: &fim_keys_present,
                fim_eog_ids: &[],
            },
        );
        let mut vocab = serde_json::Map::with_capacity(n);
        let mut added = Vec::new();
        for (id, (token, &a)) in tokens.iter().zip(&attrs).enumerate() {
            vocab.insert(token.clone(), id.into());
            if a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0 {
                added.push(serde_json::json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false,
                    "special": a & (attr::CONTROL | attr::UNKNOWN) != 0,
                }));
            }
        }
        let merges: Vec<serde_json::Value> = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| serde_json::json!([a, b]))
                    .ok_or_else(|| {
                        tok_err(
                            path,
                            format!("tokenizer.ggml.merges[{i}] is {m:?}, expected \"a b\""),
                        )
                    })
            })
            .collect::<Result<_>>()?;

        let mut pre_tokenizers: Vec<serde_json::Value> = regexes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false
                })
            })
            .collect();
        pre_tokenizers.push(serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false
        }));

        let bos_id = opt_id(file, "tokenizer.ggml.bos_token_id");
        let eos_id = opt_id(file, "tokenizer.ggml.eos_token_id");
        let add_bos = file
            .get_opt::<bool>("tokenizer.ggml.add_bos_token")
            .ok()
            .flatten()
            .unwrap_or(default_add_bos);
        let token_text = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize)).cloned();
        let bos_token = token_text(bos_id);
        let eos_token = token_text(eos_id);
        let post_processor = match (&bos_token, bos_id, add_bos) {
            (Some(bos), Some(id), true) => serde_json::json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos.as_str(): {"id": bos, "ids": [id], "tokens": [bos]}},
            }),
            _ => serde_json::Value::Null,
        };
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre_tokenizers},
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                "vocab": vocab, "merges": merges
            }
        });
        let bytes = serde_json::to_vec(&json).map_err(|e| tok_err(path, e.to_string()))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| tok_err(path, format!("building the BPE tokenizer: {e}")))?;
        let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
        if let Some(eot) = opt_id(file, "tokenizer.ggml.eot_token_id")
            && !eos_ids.contains(&eot)
        {
            eos_ids.push(eot);
        }
        let chat_template = chat_template(file);
        Ok(Self {
            inner,
            spm: None,
            literal: OnceLock::new(),
            path: path.to_path_buf(),
            bos_token,
            eos_token,
            bos_id,
            eos_ids,
            chat_template,
        })
    }
}

/// The `tokenizers` form of a SentencePiece vocabulary, as `transformers`
/// converts Llama tokenizers: byte-fallback BPE whose merges are every split
/// of a normal piece into two pieces, ranked by the piece's score (highest
/// first, ties in id order); `▁` escaping with the space prefix as a
/// normalizer; bos/eos by the add flags. It is what `tokenizer.json` export
/// needs; encoding goes through [`SpmVocab`], which is exact.
fn hf_equivalent(
    vocab: &SpmVocab,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    unk_id: Option<u32>,
) -> std::result::Result<tokenizers::Tokenizer, String> {
    let n = vocab.len() as u32;
    let piece = |id: u32| vocab.piece(id).unwrap_or_default();
    let attrs = |id: u32| vocab.attrs(id).unwrap_or_default();
    let mut map = serde_json::Map::with_capacity(vocab.len());
    let mut added = Vec::new();
    let mut merges: Vec<(f32, u32, u32)> = Vec::new();
    for id in 0..n {
        let text = piece(id);
        map.insert(text.to_string(), id.into());
        let a = attrs(id);
        if a & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0 {
            added.push(serde_json::json!({
                "id": id, "content": text, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false,
                "special": a & (attr::CONTROL | attr::UNKNOWN) != 0,
            }));
        }
        if a & attr::NORMAL == 0 {
            continue;
        }
        let mut local: Vec<(u32, u32)> = text
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                Some((
                    vocab.token_to_id(&text[..at])?,
                    vocab.token_to_id(&text[at..])?,
                ))
            })
            .collect();
        local.sort_unstable();
        let score = vocab.score(id).unwrap_or_default();
        merges.extend(local.into_iter().map(|(l, r)| (score, l, r)));
    }
    // Stable: equal scores keep id order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|&(_, l, r)| serde_json::json!([piece(l), piece(r)]))
        .collect();
    let (add_bos, add_eos, add_space_prefix) = vocab.flags();
    let mut specials = serde_json::Map::new();
    let mut single = Vec::new();
    for (id, add, seq) in [
        (bos_id, add_bos, false),
        (None, true, true),
        (eos_id, add_eos, false),
    ] {
        if seq {
            single.push(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}}));
        } else if let (Some(id), true) = (id, add) {
            let text = piece(id);
            single.push(serde_json::json!({"SpecialToken": {"id": text, "type_id": 0}}));
            specials.insert(
                text.to_string(),
                serde_json::json!({"id": text, "ids": [id], "tokens": [text]}),
            );
        }
    }
    let pair: Vec<serde_json::Value> = single
        .iter()
        .cloned()
        .chain(single.iter().map(|p| {
            let mut p = p.clone();
            if let Some(seq) = p.get_mut("Sequence") {
                *seq = serde_json::json!({"id": "B", "type_id": 1});
            } else if let Some(tok) = p.get_mut("SpecialToken") {
                tok["type_id"] = 1.into();
            }
            p
        }))
        .collect();
    let replace =
        serde_json::json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
    let normalizer = if add_space_prefix {
        serde_json::json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"}, replace]})
    } else {
        replace
    };
    let mut decoders = vec![
        serde_json::json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        serde_json::json!({"type": "ByteFallback"}),
        serde_json::json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(serde_json::json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": null,
        "post_processor": {
            "type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": specials,
        },
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null,
            "unk_token": unk_id.map(piece),
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": map, "merges": merges
        }
    });
    let bytes = serde_json::to_vec(&json).map_err(|e| e.to_string())?;
    tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use forge_gguf::GgufWriter;

    use super::*;

    /// A small SentencePiece vocabulary: `<unk> <s> </s>`, the 256 byte
    /// tokens, then `▁`, letters and a few merges.
    fn spm_writer() -> GgufWriter {
        let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
        let mut types = vec![2i32, 3, 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
        for piece in ["▁", "h", "i", "▁h", "▁hi", "<|user|>"] {
            tokens.push(piece.to_string());
            types.push(if piece.starts_with("<|") { 4 } else { 1 });
        }
        let n = tokens.len();
        let scores: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
        GgufWriter::new()
            .with_metadata("general.architecture", "llama")
            .with_metadata("tokenizer.ggml.model", "llama")
            .with_metadata(TOKENS_KEY, tokens)
            .with_metadata(SCORES_KEY, scores)
            .with_metadata(TYPES_KEY, types)
    }

    fn load(writer: GgufWriter) -> Result<Tokenizer> {
        let bytes = writer
            .write_to(Vec::new())
            .and_then(|w| w.finish())
            .expect("write");
        let file = GgufFile::from_bytes(bytes).expect("parse");
        Tokenizer::from_gguf(&file, "vocab.gguf")
    }

    fn message(writer: GgufWriter) -> String {
        load(writer).expect_err("must fail").to_string()
    }

    #[test]
    fn spm_vocab_encodes_decodes_and_keeps_llama_defaults() {
        let tok = load(spm_writer()).expect("tokenizer");
        let id = |p: &str| tok.token_to_id(p).expect(p);
        assert_eq!(tok.vocab_size(), 3 + 256 + 6);
        assert_eq!(tok.bos_id(), Some(1));
        assert_eq!(tok.eos_ids(), &[2]);
        // bos by default; "▁hi" merges fully; "!" falls back to its byte.
        let ids = tok.encode("hi!", true).expect("encode");
        assert_eq!(ids, vec![1, id("▁hi"), 3 + u32::from(b'!')]);
        // llama.cpp strips the prefix space only when no bos was removed.
        assert_eq!(tok.decode(&ids[1..], true).expect("decode"), "hi!");
        assert_eq!(tok.decode(&ids, true).expect("decode"), " hi!");
        assert_eq!(tok.decode(&ids, false).expect("decode"), "<s> hi!");
        // The user-defined token is cut out of the text either way.
        let ids = tok.encode_with("<|user|>hi", false, false).expect("encode");
        assert_eq!(ids, vec![id("<|user|>"), id("▁hi")]);
        // The `tokenizers` equivalent agrees on plain text.
        let hf = tok.inner().encode("hi hi", false).expect("hf");
        assert_eq!(hf.get_ids(), tok.encode("hi hi", false).expect("spm"));
        // Out-of-range ids are an error, not a panic.
        let e = tok.decode(&[100_000], false).expect_err("range");
        assert!(e.to_string().contains("100000"), "{e}");
    }

    #[test]
    fn spm_flags_from_metadata() {
        let tok = load(
            spm_writer()
                .with_metadata("tokenizer.ggml.add_bos_token", false)
                .with_metadata("tokenizer.ggml.add_eos_token", true)
                .with_metadata("tokenizer.ggml.add_space_prefix", false),
        )
        .expect("tokenizer");
        let ids = tok.encode("hi", true).expect("encode");
        assert_eq!(
            ids,
            vec![
                tok.token_to_id("h").unwrap(),
                tok.token_to_id("i").unwrap(),
                2
            ]
        );
    }

    #[test]
    fn spm_bad_metadata_names_the_key() {
        let mut w = spm_writer();
        w.metadata_mut().remove(SCORES_KEY);
        let e = message(w);
        assert!(e.contains("vocab.gguf") && e.contains(SCORES_KEY), "{e}");

        let e = message(spm_writer().with_metadata(SCORES_KEY, vec![0.0f32; 3]));
        assert!(e.contains(SCORES_KEY) && e.contains("3 entries"), "{e}");

        let e = message(spm_writer().with_metadata(SCORES_KEY, vec!["x"; 265]));
        assert!(e.contains(SCORES_KEY) && e.contains("f32"), "{e}");

        let e = message(spm_writer().with_metadata(TYPES_KEY, vec![1i32; 7]));
        assert!(e.contains(TYPES_KEY) && e.contains("7 entries"), "{e}");

        let e = message(spm_writer().with_metadata("tokenizer.ggml.add_bos_token", 1u32));
        assert!(e.contains("tokenizer.ggml.add_bos_token"), "{e}");

        let mut scores = vec![0.0f32; 265];
        scores[7] = f32::NAN;
        let e = message(spm_writer().with_metadata(SCORES_KEY, scores));
        assert!(e.contains("tokenizer.ggml.scores[7]"), "{e}");

        let e = message(spm_writer().with_metadata("tokenizer.ggml.model", "t5"));
        assert!(e.contains("\"t5\""), "{e}");
    }

    #[test]
    fn gpt2_bad_token_types_name_the_key() {
        let w = GgufWriter::new()
            .with_metadata("tokenizer.ggml.model", "gpt2")
            .with_metadata(TOKENS_KEY, vec!["a", "b"])
            .with_metadata("tokenizer.ggml.merges", vec!["a b"])
            .with_metadata(TYPES_KEY, vec![1i32]);
        let e = message(w);
        assert!(e.contains(TYPES_KEY) && e.contains("1 entries"), "{e}");
    }
}
