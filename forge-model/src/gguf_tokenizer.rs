//! A [`Tokenizer`] built from GGUF tokenizer metadata, so GGUF and Hugging
//! Face models share one tokenizer type.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE). The pieces:
//!
//! - model: BPE over `tokenizer.ggml.tokens` (id = position) and
//!   `tokenizer.ggml.merges` (`"a b"`, rank = position); `ignore_merges` for
//!   the pre-tokenizers where llama.cpp sets it (`llama3` family);
//! - pre-tokenizer: the regexes llama.cpp uses for `tokenizer.ggml.pre`
//!   (applied one after the other, each match and each gap becoming a piece,
//!   as llama.cpp's `unicode_regex_split` does), then the GPT-2 byte → char
//!   map ([`PRE_TOKENIZER_NAMES`] lists the names known);
//! - added tokens: every token of type control (3, special) or user-defined
//!   (4), matched in the raw text before pre-tokenization, as llama.cpp does
//!   when parsing special tokens;
//! - special ids: `tokenizer.ggml.{bos,eos}_token_id`, and a bos prepended by
//!   `encode(text, true)` when `tokenizer.ggml.add_bos_token` is true (or the
//!   pre-tokenizer's default says so);
//! - chat template: `tokenizer.chat_template` (else ChatML).
//!
//! SentencePiece-style vocabularies (`llama`, with scores) are
//! [`Error::Unsupported`] for now.

use std::path::Path;

use forge_gguf::{GgufFile, Value};

use crate::error::{Error, Result};
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
        "gpt2" => (vec![GPT2], false, false),
        "smollm" | "starcoder" | "refact" => (vec![r"\p{N}", GPT2], false, false),
        "llama3" | "llama-v3" | "llama-bpe" => (vec![LLAMA3], true, true),
        "qwen2" | "deepseek-r1-qwen" => (vec![QWEN2], false, false),
        _ => return None,
    })
}

const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

fn tok_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn strings<'a>(file: &'a GgufFile, path: &Path, key: &str) -> Result<&'a [String]> {
    file.get::<&[String]>(key).map_err(|e| match e {
        forge_gguf::Error::MissingKey { .. } => Error::MissingConfigKey {
            path: path.to_path_buf(),
            key: key.to_string(),
        },
        other => tok_err(path, other.to_string()),
    })
}

fn opt_id(file: &GgufFile, key: &str) -> Option<u32> {
    file.value(key)
        .and_then(Value::to_u64)
        .and_then(|v| u32::try_from(v).ok())
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.*`
    /// metadata; `path` names the file in errors.
    pub fn from_gguf(file: &GgufFile, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let model_key = "tokenizer.ggml.model";
        let model: &str = file.get(model_key).map_err(|_| Error::MissingConfigKey {
            path: path.to_path_buf(),
            key: model_key.into(),
        })?;
        if model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "{}: `{model_key}` is {model:?}; only \"gpt2\" (byte-level BPE) tokenizers are \
                 built from GGUF metadata so far",
                path.display()
            )));
        }
        let tokens = strings(file, path, "tokenizer.ggml.tokens")?;
        let merges = strings(file, path, "tokenizer.ggml.merges")?;
        let types: Vec<i32> = match file.value("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(v) => file
                .get::<Vec<i32>>("tokenizer.ggml.token_type")
                .map_err(|_| {
                    Error::invalid(
                        path,
                        "tokenizer.ggml.token_type",
                        v.type_name(),
                        "an array of i32",
                    )
                })?,
        };
        if types.len() != tokens.len() {
            return Err(Error::invalid(
                path,
                "tokenizer.ggml.token_type",
                format!("{} entries", types.len()),
                format!("one per token ({})", tokens.len()),
            ));
        }
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

        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, (token, &ty)) in tokens.iter().zip(&types).enumerate() {
            if vocab.insert(token.clone(), id.into()).is_some() {
                return Err(tok_err(
                    path,
                    format!("token {token:?} appears twice in tokenizer.ggml.tokens"),
                ));
            }
            if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                added.push(serde_json::json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == TOKEN_TYPE_CONTROL,
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
        let chat_template = file
            .get_opt::<&str>("tokenizer.chat_template")
            .ok()
            .flatten()
            .unwrap_or(CHATML_TEMPLATE)
            .to_string();
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            bos_token,
            eos_token,
            bos_id,
            eos_ids,
            chat_template,
        })
    }
}
