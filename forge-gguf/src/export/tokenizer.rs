//! Tokenizer metadata for an export: the `tokenizer.*` keys llama.cpp reads.
//!
//! Two vocabulary kinds (llama.cpp's `tokenizer.ggml.model`):
//!
//! - `gpt2`: byte-level BPE. Tokens (id = position), token types, merges
//!   (`"a b"`, rank = position) and `tokenizer.ggml.pre`, the pre-tokenizer
//!   name llama.cpp maps to its regexes. A file without merges loads in
//!   llama.cpp but tokenizes character by character: [`TokenizerSpec`]
//!   refuses to write one.
//! - `llama`: SentencePiece. Tokens, scores and types; taken over from a GGUF
//!   source (a Hugging Face `tokenizer.json` does not carry the scores).
//!
//! Special tokens: bos, eos, eot, unk, pad ids and the add-bos/add-eos flags.
//! The traps: a chat template that already writes the bos token plus
//! `add_bos_token = true` doubles the bos (the flag follows the source, and
//! [`TokenizerSpec::check`] refuses the combination); chat models whose turns
//! end with `<|im_end|>` / `<|eot_id|>` / `<|end|>` while eos is a different
//! token get `tokenizer.ggml.eot_token_id` so llama.cpp stops at the end of a
//! turn.

use std::path::Path;

use serde_json::Value as Json;

use crate::file::GgufFile;
use crate::metadata::Metadata;
use crate::value::Value;
use crate::{Error, Result};

/// llama.cpp's token types (`llama_token_type`).
pub mod token_type {
    /// A normal token.
    pub const NORMAL: i32 = 1;
    /// Unknown token.
    pub const UNKNOWN: i32 = 2;
    /// Control (special) token.
    pub const CONTROL: i32 = 3;
    /// Added, user-defined token (matched before pre-tokenization).
    pub const USER_DEFINED: i32 = 4;
    /// Unused slot.
    pub const UNUSED: i32 = 5;
    /// A byte token `<0xAB>`.
    pub const BYTE: i32 = 6;
}

/// The vocabulary kind and its model-specific data.
#[derive(Debug, Clone, PartialEq)]
pub enum VocabModel {
    /// Byte-level BPE (`gpt2`).
    Gpt2 {
        /// Merges `"a b"` in rank order.
        merges: Vec<String>,
        /// `tokenizer.ggml.pre`.
        pre: String,
    },
    /// SentencePiece (`llama`).
    Llama {
        /// One score per token.
        scores: Vec<f32>,
    },
}

/// The tokenizer of an export, as llama.cpp reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerSpec {
    /// The vocabulary kind.
    pub model: VocabModel,
    /// Token strings, id = position.
    pub tokens: Vec<String>,
    /// One [`token_type`] per token.
    pub token_types: Vec<i32>,
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn, when it differs from eos.
    pub eot: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
    /// Whether llama.cpp prepends bos.
    pub add_bos: Option<bool>,
    /// Whether llama.cpp appends eos.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// The Jinja chat template.
    pub chat_template: Option<String>,
}

/// Token texts that end a chat turn (llama.cpp's end-of-generation list).
const END_OF_TURN: &[&str] = &["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"];

impl TokenizerSpec {
    /// The tokenizer stored in a GGUF file's `tokenizer.*` metadata.
    pub fn from_gguf<D: AsRef<[u8]>>(file: &GgufFile<D>) -> Result<Self> {
        Self::from_metadata(file.metadata())
    }

    /// [`TokenizerSpec::from_gguf`] over a metadata table.
    pub fn from_metadata(meta: &Metadata) -> Result<Self> {
        let model: &str = meta.get("tokenizer.ggml.model")?;
        let tokens: Vec<String> = meta.get("tokenizer.ggml.tokens")?;
        let token_types: Vec<i32> = match meta.get_opt::<Vec<i32>>("tokenizer.ggml.token_type")? {
            Some(t) => t,
            None => vec![token_type::NORMAL; tokens.len()],
        };
        let model = match model {
            "gpt2" => VocabModel::Gpt2 {
                merges: meta.get("tokenizer.ggml.merges")?,
                pre: meta
                    .get_opt::<String>("tokenizer.ggml.pre")?
                    .unwrap_or_else(|| "default".to_string()),
            },
            "llama" => VocabModel::Llama {
                scores: meta.get("tokenizer.ggml.scores")?,
            },
            other => {
                return Err(Error::Export(format!(
                    "`tokenizer.ggml.model` is {other:?}; export writes \"gpt2\" and \"llama\" vocabularies"
                )));
            }
        };
        let id = |key: &str| -> Result<Option<u32>> { meta.get_opt::<u32>(key) };
        let spec = Self {
            model,
            tokens,
            token_types,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            add_bos: meta.get_opt("tokenizer.ggml.add_bos_token")?,
            add_eos: meta.get_opt("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: meta.get_opt("tokenizer.ggml.add_space_prefix")?,
            chat_template: meta.get_opt("tokenizer.chat_template")?,
        };
        spec.check()?;
        Ok(spec)
    }

    /// The tokenizer of a Hugging Face folder: `tokenizer.json` (byte-level
    /// BPE) plus `tokenizer_config.json` (special tokens, add-bos/eos, chat
    /// template) when present. `vocab_size` pads the vocabulary with unused
    /// `[PAD{i}]` tokens up to the model's embedding rows, as llama.cpp's
    /// converter does.
    pub fn from_hf_dir(dir: impl AsRef<Path>, vocab_size: usize) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| -> Result<Option<Json>> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Export(format!("{}: {e}", path.display())))
        };
        let tok = read("tokenizer.json")?
            .ok_or_else(|| Error::Export(format!("{}: no tokenizer.json", dir.display())))?;
        let config = read("tokenizer_config.json")?.unwrap_or(Json::Null);
        Self::from_hf_json(&tok, &config, vocab_size)
            .map_err(|e| Error::Export(format!("{}: {e}", dir.join("tokenizer.json").display())))
    }

    /// [`TokenizerSpec::from_hf_dir`] over parsed JSON documents (errors
    /// carry no path).
    pub fn from_hf_json(tok: &Json, config: &Json, vocab_size: usize) -> Result<Self> {
        let bad = |m: String| Error::Export(m);
        let model = &tok["model"];
        if model["type"].as_str() != Some("BPE") {
            return Err(bad(format!(
                "tokenizer model {} is not byte-level BPE; SentencePiece vocabularies are exported \
                 from GGUF sources (their scores are not in tokenizer.json)",
                model["type"]
            )));
        }
        if model["byte_fallback"].as_bool() == Some(true) {
            return Err(bad(
                "a BPE with byte_fallback is a SentencePiece vocabulary; export it from a GGUF source"
                    .to_string(),
            ));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| bad("`model.vocab` is not an object".into()))?;
        let mut by_id: Vec<Option<String>> = Vec::new();
        let mut put = |id: u64, text: &str| -> Result<()> {
            let id = usize::try_from(id).map_err(|_| bad(format!("token id {id} too large")))?;
            if id >= 1 << 24 {
                return Err(bad(format!("token id {id} too large")));
            }
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some(text.to_string());
            Ok(())
        };
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| bad(format!("vocab entry {text:?} has id {id}")))?;
            put(id, text)?;
        }
        let mut added: Vec<(u64, String, bool)> = Vec::new();
        for t in tok["added_tokens"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let (Some(id), Some(text)) = (t["id"].as_u64(), t["content"].as_str()) else {
                return Err(bad(format!("added token {t} lacks an id or content")));
            };
            put(id, text)?;
            added.push((
                id,
                text.to_string(),
                t["special"].as_bool().unwrap_or(false),
            ));
        }
        let n = by_id.len().max(vocab_size);
        let mut tokens = Vec::with_capacity(n);
        let mut token_types = Vec::with_capacity(n);
        for i in 0..n {
            match by_id.get(i).cloned().flatten() {
                Some(text) => {
                    let ty = match added.iter().find(|(id, _, _)| *id as usize == i) {
                        Some((_, _, true)) => token_type::CONTROL,
                        Some((_, text, false)) if looks_special(text) => token_type::CONTROL,
                        Some(_) => token_type::USER_DEFINED,
                        None => token_type::NORMAL,
                    };
                    tokens.push(text);
                    token_types.push(ty);
                }
                None => {
                    tokens.push(format!("[PAD{i}]"));
                    token_types.push(token_type::UNUSED);
                }
            }
        }
        let merges = match model["merges"].as_array() {
            Some(m) => m
                .iter()
                .map(|m| match m {
                    Json::String(s) => Ok(s.clone()),
                    Json::Array(pair) if pair.len() == 2 => Ok(format!(
                        "{} {}",
                        pair[0].as_str().unwrap_or_default(),
                        pair[1].as_str().unwrap_or_default()
                    )),
                    other => Err(bad(format!("merge {other} is neither \"a b\" nor [a, b]"))),
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let pre = pre_tokenizer_name(&tok["pre_tokenizer"]).ok_or_else(|| {
            bad(format!(
                "pre-tokenizer {} is not one llama.cpp knows by name (known here: gpt-2, smollm, \
                 llama-bpe, qwen2)",
                tok["pre_tokenizer"]
            ))
        })?;
        let token_id = |key: &str| -> Option<u32> {
            let v = &config[key];
            let text = v.as_str().or_else(|| v["content"].as_str())?;
            tokens.iter().position(|t| t == text).map(|i| i as u32)
        };
        let eos = token_id("eos_token");
        let add_space_prefix = tok["pre_tokenizer"]["add_prefix_space"]
            .as_bool()
            .or_else(|| {
                tok["pre_tokenizer"]["pretokenizers"]
                    .as_array()?
                    .iter()
                    .find_map(|p| p["add_prefix_space"].as_bool())
            });
        let chat_template = config["chat_template"].as_str().map(str::to_string);
        let eot = chat_template.as_deref().and_then(|tpl| {
            END_OF_TURN
                .iter()
                .filter(|t| tpl.contains(*t))
                .find_map(|t| tokens.iter().position(|x| x == t))
                .map(|i| i as u32)
                .filter(|&i| Some(i) != eos)
        });
        let spec = Self {
            model: VocabModel::Gpt2 { merges, pre },
            bos: token_id("bos_token"),
            eos,
            eot,
            unk: token_id("unk_token"),
            pad: token_id("pad_token"),
            add_bos: Some(config["add_bos_token"].as_bool().unwrap_or(false)),
            add_eos: config["add_eos_token"].as_bool(),
            add_space_prefix,
            chat_template,
            tokens,
            token_types,
        };
        spec.check()?;
        Ok(spec)
    }

    /// Refuses a tokenizer llama.cpp would load but mis-tokenize: no tokens,
    /// mismatched token types or scores, a BPE without merges, ids out of
    /// range, or a double bos (bos added by llama.cpp *and* written by the
    /// chat template).
    pub fn check(&self) -> Result<()> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(Error::Export("the tokenizer has no tokens".into()));
        }
        if self.token_types.len() != n {
            return Err(Error::Export(format!(
                "{} token types for {n} tokens",
                self.token_types.len()
            )));
        }
        match &self.model {
            VocabModel::Gpt2 { merges, pre } => {
                // A pure byte vocabulary needs no merges; one with longer
                // normal tokens does, or llama.cpp never produces them.
                let needs_merges = self
                    .tokens
                    .iter()
                    .zip(&self.token_types)
                    .any(|(t, &ty)| ty == token_type::NORMAL && t.chars().count() > 1);
                if merges.is_empty() && needs_merges {
                    return Err(Error::Export(
                        "byte-level BPE tokenizer without merges: llama.cpp would split every \
                         word into single characters"
                            .into(),
                    ));
                }
                if pre.is_empty() {
                    return Err(Error::Export("empty `tokenizer.ggml.pre`".into()));
                }
            }
            VocabModel::Llama { scores } => {
                if scores.len() != n {
                    return Err(Error::Export(format!(
                        "{} scores for {n} tokens",
                        scores.len()
                    )));
                }
            }
        }
        for (what, id) in [
            ("bos", self.bos),
            ("eos", self.eos),
            ("eot", self.eot),
            ("unk", self.unk),
            ("pad", self.pad),
        ] {
            if let Some(id) = id
                && id as usize >= n
            {
                return Err(Error::Export(format!(
                    "{what} token id {id} is outside the vocabulary of {n} tokens"
                )));
            }
        }
        if self.add_bos == Some(true)
            && let (Some(bos), Some(tpl)) = (self.bos, &self.chat_template)
        {
            let text = &self.tokens[bos as usize];
            if tpl.contains("bos_token") || tpl.contains(text.as_str()) {
                return Err(Error::Export(format!(
                    "double bos: add_bos_token is true and the chat template already writes \
                     {text:?}; set add_bos_token to false"
                )));
            }
        }
        Ok(())
    }

    /// Writes the `tokenizer.*` keys in the order llama.cpp's converter does.
    pub fn write_metadata(&self, meta: &mut Metadata) {
        if let Some(v) = self.add_space_prefix {
            meta.insert("tokenizer.ggml.add_space_prefix", v);
        }
        if let Some(v) = self.add_bos {
            meta.insert("tokenizer.ggml.add_bos_token", v);
        }
        match &self.model {
            VocabModel::Gpt2 { pre, .. } => {
                meta.insert("tokenizer.ggml.model", "gpt2");
                meta.insert("tokenizer.ggml.pre", pre.as_str());
            }
            VocabModel::Llama { .. } => {
                meta.insert("tokenizer.ggml.model", "llama");
                meta.insert("tokenizer.ggml.pre", "default");
            }
        }
        meta.insert("tokenizer.ggml.tokens", Value::from(self.tokens.clone()));
        if let VocabModel::Llama { scores } = &self.model {
            meta.insert("tokenizer.ggml.scores", Value::from(scores.clone()));
        }
        meta.insert(
            "tokenizer.ggml.token_type",
            Value::from(self.token_types.clone()),
        );
        if let VocabModel::Gpt2 { merges, .. } = &self.model {
            meta.insert("tokenizer.ggml.merges", Value::from(merges.clone()));
        }
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", self.bos),
            ("tokenizer.ggml.eos_token_id", self.eos),
            ("tokenizer.ggml.eot_token_id", self.eot),
            ("tokenizer.ggml.unknown_token_id", self.unk),
            ("tokenizer.ggml.padding_token_id", self.pad),
        ] {
            if let Some(id) = id {
                meta.insert(key, id);
            }
        }
        if let Some(v) = self.add_eos {
            meta.insert("tokenizer.ggml.add_eos_token", v);
        }
        if let Some(t) = &self.chat_template {
            meta.insert("tokenizer.chat_template", t.as_str());
        }
    }

    /// The token strings that end generation: eos and eot.
    pub fn stop_tokens(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for id in [self.eot, self.eos].into_iter().flatten() {
            let t = self.tokens[id as usize].as_str();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }
}

/// convert_hf_to_gguf's `does_token_look_special`.
fn looks_special(text: &str) -> bool {
    (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with('<') && text.ends_with('>') && text.len() > 2 && !text.contains(' '))
}

/// Llama 3's pre-tokenizer regex as Hugging Face writes it.
const HF_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's.
const HF_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's own pre-tokenizer regexes (`llama-vocab.cpp`): a
/// `tokenizer.json` built from a GGUF vocabulary (forge-model's GGUF
/// tokenizer, and so `forge_model::write_hf_dir` of a model loaded from a
/// GGUF) spells the pre-tokenizer as these `Split`s, then a `ByteLevel`
/// without its own regex.
const LLAMA_CPP_GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's, contractions spelled out case by case.
const LLAMA_CPP_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (single digits).
const LLAMA_CPP_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The name for a chain of isolating `Split`s with llama.cpp's regexes
/// followed by a regex-free `ByteLevel` (see [`LLAMA_CPP_GPT2`]). `smollm`,
/// `starcoder` and `refact` share their regexes in llama.cpp; `smollm` is
/// written for them.
fn llama_cpp_regex_chain(parts: &[&Json]) -> Option<String> {
    let (last, splits) = parts.split_last()?;
    if last["type"].as_str() != Some("ByteLevel") || last["use_regex"].as_bool() != Some(false) {
        return None;
    }
    let regexes: Vec<&str> = splits
        .iter()
        .map(|p| {
            (p["type"].as_str() == Some("Split")
                && p["behavior"].as_str() == Some("Isolated")
                && p["invert"].as_bool() != Some(true))
            .then(|| p["pattern"]["Regex"].as_str())
            .flatten()
        })
        .collect::<Option<_>>()?;
    match regexes.as_slice() {
        [LLAMA_CPP_GPT2] => Some("gpt-2".into()),
        [r"\p{N}", LLAMA_CPP_GPT2] => Some("smollm".into()),
        [LLAMA_CPP_LLAMA3] => Some("llama-bpe".into()),
        [LLAMA_CPP_QWEN2] => Some("qwen2".into()),
        _ => None,
    }
}

/// The `tokenizer.ggml.pre` name for a Hugging Face pre-tokenizer, from its
/// structure (llama.cpp's converter hashes a tokenization instead; the
/// structures below are the ones those hashes stand for).
fn pre_tokenizer_name(pre: &Json) -> Option<String> {
    let kind = pre["type"].as_str()?;
    let parts: Vec<&Json> = match kind {
        "Sequence" => pre["pretokenizers"].as_array()?.iter().collect(),
        _ => vec![pre],
    };
    if let Some(name) = llama_cpp_regex_chain(&parts) {
        return Some(name);
    }
    let is = |p: &Json, t: &str| p["type"].as_str() == Some(t);
    match parts.as_slice() {
        [b] if is(b, "ByteLevel") && b["use_regex"].as_bool() != Some(false) => {
            Some("gpt-2".into())
        }
        [d, b]
            if is(d, "Digits")
                && d["individual_digits"].as_bool() == Some(true)
                && is(b, "ByteLevel") =>
        {
            Some("smollm".into())
        }
        [s, b] if is(s, "Split") && is(b, "ByteLevel") => match s["pattern"]["Regex"].as_str()? {
            HF_LLAMA3 => Some("llama-bpe".into()),
            HF_QWEN2 => Some("qwen2".into()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny_json(pre: Json) -> Json {
        json!({
            "model": {"type": "BPE", "vocab": {"a": 3, "b": 4, "ab": 5}, "merges": ["a b"]},
            "added_tokens": [
                {"id": 0, "content": "<|endoftext|>", "special": true},
                {"id": 1, "content": "<|im_start|>", "special": true},
                {"id": 2, "content": "<|im_end|>", "special": true},
                {"id": 6, "content": "<tool>", "special": false},
                {"id": 7, "content": "hello", "special": false}
            ],
            "pre_tokenizer": pre,
        })
    }

    #[test]
    fn llama_cpp_regex_chains_are_recognised() {
        let chain = |regexes: &[&str]| {
            let mut parts: Vec<Json> = regexes
                .iter()
                .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
                .collect();
            parts.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
            json!({"type": "Sequence", "pretokenizers": parts})
        };
        let name = |regexes: &[&str]| pre_tokenizer_name(&chain(regexes));
        assert_eq!(name(&[LLAMA_CPP_GPT2]).as_deref(), Some("gpt-2"));
        assert_eq!(name(&[r"\p{N}", LLAMA_CPP_GPT2]).as_deref(), Some("smollm"));
        assert_eq!(name(&[LLAMA_CPP_LLAMA3]).as_deref(), Some("llama-bpe"));
        assert_eq!(name(&[LLAMA_CPP_QWEN2]).as_deref(), Some("qwen2"));
        // Order matters, other regexes are unknown, and a ByteLevel with its
        // own regex after the splits is not this form.
        assert_eq!(name(&[LLAMA_CPP_GPT2, r"\p{N}"]), None);
        assert_eq!(name(&[r"\p{N}+"]), None);
        let mut own_regex = chain(&[LLAMA_CPP_GPT2]);
        own_regex["pretokenizers"][1]["use_regex"] = json!(true);
        assert_eq!(pre_tokenizer_name(&own_regex), None);
    }

    #[test]
    fn hf_json_to_spec() {
        let tok = tiny_json(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]}));
        let config = json!({"eos_token": "<|endoftext|>", "bos_token": {"content": "<|im_start|>"},
                            "chat_template": "{{'<|im_start|>' + m + '<|im_end|>'}}"});
        let spec = TokenizerSpec::from_hf_json(&tok, &config, 10).expect("spec");
        assert_eq!(spec.tokens.len(), 10);
        assert_eq!(spec.tokens[9], "[PAD9]");
        assert_eq!(spec.token_types[..8], [3, 3, 3, 1, 1, 1, 3, 4]);
        assert_eq!(spec.token_types[9], token_type::UNUSED);
        assert_eq!(
            spec.model,
            VocabModel::Gpt2 {
                merges: vec!["a b".into()],
                pre: "smollm".into()
            }
        );
        assert_eq!((spec.bos, spec.eos, spec.eot), (Some(1), Some(0), Some(2)));
        assert_eq!(spec.add_bos, Some(false));
        assert_eq!(spec.add_space_prefix, Some(false));
        assert_eq!(spec.stop_tokens(), vec!["<|im_end|>", "<|endoftext|>"]);
        let mut meta = Metadata::new();
        spec.write_metadata(&mut meta);
        let back = TokenizerSpec::from_metadata(&meta).expect("read back");
        assert_eq!(back, spec);
    }

    #[test]
    fn traps_are_refused() {
        let tok = tiny_json(json!({"type": "ByteLevel"}));
        let mut spec = TokenizerSpec::from_hf_json(&tok, &Json::Null, 8).expect("spec");
        assert_eq!(
            spec.model,
            VocabModel::Gpt2 {
                merges: vec!["a b".into()],
                pre: "gpt-2".into()
            }
        );
        spec.bos = Some(1);
        spec.add_bos = Some(true);
        spec.chat_template = Some("{{ bos_token }}{{ m }}".into());
        let err = spec.check().expect_err("double bos").to_string();
        assert!(err.contains("double bos"), "{err}");
        spec.chat_template = None;
        spec.check().expect("bos without a template is fine");
        spec.model = VocabModel::Gpt2 {
            merges: vec![],
            pre: "gpt-2".into(),
        };
        assert!(
            spec.check()
                .expect_err("no merges")
                .to_string()
                .contains("without merges")
        );
        let mut no_merges = tiny_json(json!({"type": "ByteLevel"}));
        no_merges["model"]["merges"] = json!([]);
        assert!(TokenizerSpec::from_hf_json(&no_merges, &Json::Null, 8).is_err());
        let unknown = tiny_json(json!({"type": "Whitespace"}));
        let err = TokenizerSpec::from_hf_json(&unknown, &Json::Null, 8)
            .expect_err("pre")
            .to_string();
        assert!(err.contains("pre-tokenizer"), "{err}");
    }
}
