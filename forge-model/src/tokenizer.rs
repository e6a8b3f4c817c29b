//! Tokenizer: a `tokenizers::Tokenizer` from `tokenizer.json`, the special
//! tokens from `tokenizer_config.json` / `generation_config.json`, and chat
//! templates rendered with minijinja. GGUF SentencePiece vocabularies encode
//! and decode through [`SpmVocab`] (llama.cpp's algorithm) instead.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::spm::SpmVocab;
use crate::util::read_json;

/// The ChatML template (Qwen, SmolLM2): used when `tokenizer_config.json`
/// has no `chat_template`.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A tokenizer with its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    /// llama.cpp's SentencePiece encoder/decoder (GGUF `llama` vocabularies):
    /// when set, it encodes and decodes, and `inner` is the Hugging Face
    /// equivalent kept for [`Tokenizer::inner`].
    pub(crate) spm: Option<Arc<SpmVocab>>,
    /// `inner` with special tokens encoded as text, built on first use.
    pub(crate) literal: OnceLock<tokenizers::Tokenizer>,
    pub(crate) path: PathBuf,
    pub(crate) bos_token: Option<String>,
    pub(crate) eos_token: Option<String>,
    pub(crate) bos_id: Option<u32>,
    pub(crate) eos_ids: Vec<u32>,
    pub(crate) chat_template: String,
}

fn token_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` from `dir`, plus `tokenizer_config.json` and
    /// `generation_config.json` when present.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut tok = Self::from_file(dir.join("tokenizer.json"))?;
        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.is_file() {
            let cfg = read_json(&cfg_path)?;
            tok.bos_token = token_string(cfg.get("bos_token"));
            tok.eos_token = token_string(cfg.get("eos_token"));
            match cfg.get("chat_template") {
                Some(serde_json::Value::String(t)) => tok.chat_template = t.clone(),
                Some(serde_json::Value::Array(list)) => {
                    let pick = list
                        .iter()
                        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                        .or_else(|| list.first());
                    if let Some(t) = pick
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                    {
                        tok.chat_template = t.to_string();
                    }
                }
                _ => {}
            }
            tok.bos_id = tok
                .bos_token
                .as_deref()
                .and_then(|t| tok.inner.token_to_id(t));
            if let Some(id) = tok
                .eos_token
                .as_deref()
                .and_then(|t| tok.inner.token_to_id(t))
            {
                tok.eos_ids.push(id);
            }
        }
        let gen_path = dir.join("generation_config.json");
        if gen_path.is_file() {
            let generation = read_json(&gen_path)?;
            if let Some(ids) = generation
                .get("eos_token_id")
                .and_then(|v| serde_json::from_value::<crate::config::TokenIds>(v.clone()).ok())
            {
                for id in ids.to_vec() {
                    if !tok.eos_ids.contains(&id) {
                        tok.eos_ids.push(id);
                    }
                }
            }
            if tok.bos_id.is_none() {
                tok.bos_id = generation
                    .get("bos_token_id")
                    .and_then(|v| v.as_u64())
                    .and_then(|v| u32::try_from(v).ok());
            }
        }
        Ok(tok)
    }

    /// Loads a `tokenizer.json` alone (no special tokens, ChatML template).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            spm: None,
            literal: OnceLock::new(),
            path: path.to_path_buf(),
            bos_token: None,
            eos_token: None,
            bos_id: None,
            eos_ids: Vec::new(),
            chat_template: CHATML_TEMPLATE.to_string(),
        })
    }

    /// Replaces the chat template (a Jinja template over `messages`,
    /// `add_generation_prompt`, `bos_token`, `eos_token`).
    #[must_use]
    pub fn with_chat_template(mut self, template: impl Into<String>) -> Self {
        self.chat_template = template.into();
        self
    }

    /// Token ids of `text`; `add_special_tokens` runs the tokenizer's
    /// post-processor (e.g. a Llama bos). Special tokens written in the text
    /// (`<|im_start|>`) become their ids.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.encode_with(text, add_special_tokens, true)
    }

    /// Token ids of `text` with llama.cpp's two switches: `add_special_tokens`
    /// adds the bos/eos the tokenizer asks for, `parse_special` turns control
    /// tokens written in the text into their ids (otherwise they are
    /// tokenized as plain text; user-defined tokens match either way).
    pub fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        if let Some(spm) = &self.spm {
            return spm
                .encode(text, add_special_tokens, parse_special)
                .map_err(|e| self.err(e));
        }
        let tokenizer = if parse_special {
            &self.inner
        } else {
            self.literal.get_or_init(|| {
                let mut literal = self.inner.clone();
                literal.set_encode_special_tokens(true);
                literal
            })
        };
        tokenizer
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.err(e))
    }

    /// Text of `ids`. For GGUF SentencePiece vocabularies this is llama.cpp's
    /// detokenizer (`skip_special_tokens` = its `remove_special` and not
    /// `unparse_special`); bytes that are not UTF-8 on their own (a character
    /// cut between byte tokens) become U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        if let Some(spm) = &self.spm {
            return spm
                .decode(ids, skip_special_tokens, !skip_special_tokens)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(|e| self.err(e));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.err(e))
    }

    /// The id of a token string, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.spm {
            Some(spm) => spm.token_to_id(token),
            None => self.inner.token_to_id(token),
        }
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.spm {
            Some(spm) => spm.len(),
            None => self.inner.get_vocab_size(true),
        }
    }

    /// The beginning-of-sequence id, if any.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// End-of-sequence ids (from `tokenizer_config.json` and
    /// `generation_config.json`).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The chat template in use.
    pub fn chat_template(&self) -> &str {
        &self.chat_template
    }

    /// Renders `messages` with the chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        render_chat_template(
            &self.chat_template,
            messages,
            add_generation_prompt,
            self.bos_token.as_deref().unwrap_or(""),
            self.eos_token.as_deref().unwrap_or(""),
        )
    }

    /// The underlying `tokenizers` tokenizer. For a GGUF SentencePiece
    /// vocabulary this is its Hugging Face equivalent (byte-fallback BPE with
    /// merges ranked by score, as `transformers` converts Llama tokenizers),
    /// for writing a `tokenizer.json`; [`encode`](Self::encode) and
    /// [`decode`](Self::decode) run llama.cpp's algorithm instead.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

/// Renders a Hugging Face chat template (Jinja) with minijinja, with
/// Python-style string methods (`.strip()`, `.startswith()`, …) and
/// `raise_exception` available as in transformers.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| Error::ChatTemplate(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| Error::ChatTemplate(e.to_string()))?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    })
    .map_err(|e| Error::ChatTemplate(e.to_string()))
}

/// GPT-2's reversible byte → printable-char map.
fn bytes_to_unicode() -> Vec<char> {
    let printable: Vec<u32> = ('!' as u32..='~' as u32)
        .chain('¡' as u32..='¬' as u32)
        .chain('®' as u32..='ÿ' as u32)
        .collect();
    let mut chars = vec!['\0'; 256];
    let mut extra = 0u32;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        chars[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    chars
}

/// `tokenizer.json` of a byte-level BPE with no merges: `<|endoftext|>` = 0,
/// `<|im_start|>` = 1, `<|im_end|>` = 2, then byte `b` = `3 + b`.
pub(crate) fn byte_level_tokenizer_json() -> serde_json::Value {
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let mut vocab = serde_json::Map::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert((*s).to_string(), i.into());
    }
    for (b, c) in bytes_to_unicode().into_iter().enumerate() {
        vocab.insert(c.to_string(), (specials.len() + b).into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({
                "id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true
            })
        })
        .collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []
        }
    })
}
