//! llama.cpp's SentencePiece-style tokenizer, for GGUF vocabularies with
//! `tokenizer.ggml.model = "llama"` (Llama 1/2, Mistral, Phi-3, CodeLlama…).
//!
//! Kudo & Richardson, "SentencePiece: A simple and language independent
//! subword tokenizer and detokenizer for Neural Text Processing" (EMNLP 2018),
//! in its BPE mode (Sennrich et al., ACL 2016), scored the way llama.cpp's
//! `llm_tokenizer_spm` scores it. The text is escaped (`' '` → `▁`, U+2581,
//! with one `▁` prepended when `add_space_prefix`), split into its Unicode
//! characters `s_1 … s_n`, and then, as long as some adjacent pair forms a
//! vocabulary piece,
//!
//! ```text
//! i* = argmax_{i : s_i s_{i+1} ∈ V}  score(s_i s_{i+1})     (ties: the smallest i)
//! s_{i*} ← s_{i*} s_{i*+1},  s_{i*+1} removed
//! ```
//!
//! Each final symbol is its vocabulary id, or, when it is a single character
//! outside the vocabulary, one `<0xXX>` byte token per UTF-8 byte (byte
//! fallback). Around that, as in `llama_vocab::impl::tokenize`:
//!
//! - special tokens (types control 3 and unknown 2 when `parse_special`,
//!   user-defined 4 always) are cut out of the raw text first, longest token
//!   text first, each splitting every remaining text fragment at its
//!   leftmost occurrences; a text fragment gets the space prefix only when it
//!   starts the text or follows a special token;
//! - `add_special` adds the bos (when `add_bos`) and eos (when `add_eos`);
//! - decoding maps `▁` back to spaces, byte tokens to their byte, renders
//!   control/unknown tokens only when asked (`unparse_special`), skips unused
//!   and undefined tokens, and drops the one leading space the prefix added.
//!
//! The vocabulary fix-ups llama.cpp applies at load time are applied too: an
//! empty piece becomes `[EMPTY_<id>]`; end-of-generation, end-of-turn and
//! fill-in-the-middle tokens found by their text are made control tokens;
//! Phi-3 models strip whitespace to the right of their special tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;

/// llama.cpp's token attribute bits (`llama_token_attr`), as far as the
/// tokenizer uses them.
pub(crate) mod attr {
    /// The unknown token (`<unk>`).
    pub(crate) const UNKNOWN: u16 = 1 << 0;
    /// A reserved, unused token.
    pub(crate) const UNUSED: u16 = 1 << 1;
    /// An ordinary piece.
    pub(crate) const NORMAL: u16 = 1 << 2;
    /// A control token (bos, eos, chat markers).
    pub(crate) const CONTROL: u16 = 1 << 3;
    /// A user-defined token, matched in raw text even without special parsing.
    pub(crate) const USER_DEFINED: u16 = 1 << 4;
    /// A byte token `<0xXX>`.
    pub(crate) const BYTE: u16 = 1 << 5;
    /// Whitespace to the left of the token is dropped when it is matched.
    pub(crate) const LSTRIP: u16 = 1 << 7;
    /// Whitespace to the right of the token is dropped when it is matched.
    pub(crate) const RSTRIP: u16 = 1 << 8;
}

/// The attribute of a GGUF `tokenizer.ggml.token_type` value (llama.cpp's
/// `llama_token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined,
/// 5 unused, 6 byte; anything else is undefined, 0).
pub(crate) fn attr_of_type(token_type: i32) -> u16 {
    match token_type {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

/// End-of-turn texts llama.cpp recognises when `tokenizer.ggml.eot_token_id`
/// is absent (the first match in byte order becomes the eot id).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
/// End-of-message texts (`tokenizer.ggml.eom_token_id` absent).
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
/// Fill-in-the-middle texts, one group per `tokenizer.ggml.fim_*_token_id`.
const FIM_TEXTS: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pre_token_id",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];
/// Texts llama.cpp treats as end of generation (and makes control tokens).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// What [`SpmVocab::new`] needs besides the pieces: the GGUF flags and ids,
/// already read and range-checked.
#[derive(Debug, Clone)]
pub(crate) struct SpmOptions {
    /// `tokenizer.ggml.bos_token_id` (default 1).
    pub(crate) bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id` (default 2).
    pub(crate) eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id` (default 0).
    pub(crate) unk_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id` / `eom_token_id`, when given.
    pub(crate) eot_id: Option<u32>,
    /// See [`SpmOptions::eot_id`].
    pub(crate) eom_id: Option<u32>,
    /// The `tokenizer.ggml.fim_*_token_id` keys present in the file.
    pub(crate) fim_keys_present: Vec<&'static str>,
    /// The ids of the `fim_pad`, `fim_rep` and `fim_sep` keys present (they
    /// end generation).
    pub(crate) fim_eog_ids: Vec<u32>,
    /// `tokenizer.ggml.add_bos_token` (default true).
    pub(crate) add_bos: bool,
    /// `tokenizer.ggml.add_eos_token` (default false).
    pub(crate) add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix` (default true).
    pub(crate) add_space_prefix: bool,
    /// `general.name`, lowercased (Phi-3's special tokens strip to the right).
    pub(crate) model_name: String,
}

/// The GGUF keys of the fill-in-the-middle ids (for [`SpmOptions::fim_keys_present`]).
pub(crate) fn fim_keys() -> impl Iterator<Item = &'static str> {
    FIM_TEXTS.iter().map(|(k, _)| *k)
}

/// The fill-in-the-middle keys whose tokens end generation (pad, repo, file
/// separator).
pub(crate) fn fim_eog_keys() -> impl Iterator<Item = &'static str> {
    fim_keys().skip(3)
}

/// The special ids a vocabulary names (in range), for [`llama_cpp_attrs`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpecialIds<'a> {
    /// The eos id.
    pub(crate) eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`, when given.
    pub(crate) eot_id: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`, when given.
    pub(crate) eom_id: Option<u32>,
    /// The `tokenizer.ggml.fim_*_token_id` keys present.
    pub(crate) fim_keys_present: &'a [&'static str],
    /// The ids of the `fim_pad`, `fim_rep` and `fim_sep` keys present.
    pub(crate) fim_eog_ids: &'a [u32],
}

/// Token attributes after llama.cpp's load-time fix-ups, and the
/// end-of-generation ids (eos first).
#[derive(Debug, Clone)]
pub(crate) struct LlamaCppAttrs {
    /// One [`attr`] set per token.
    pub(crate) attrs: Vec<u16>,
    /// End-of-generation ids, eos first.
    pub(crate) eog: Vec<u32>,
}

/// The attributes llama.cpp gives a vocabulary's tokens (`llama_vocab::load`):
/// the GGUF token types, then end-of-turn / end-of-message / fill-in-the-
/// middle / end-of-generation tokens found by their text made control
/// tokens, gpt-oss's channel markers user-defined, Harmony's `<|end|>` and
/// Gemma 4's `</s>` demoted. `ids` maps every piece to its id.
pub(crate) fn llama_cpp_attrs(
    pieces: &[String],
    ids: &HashMap<String, u32>,
    token_types: &[i32],
    special: &SpecialIds<'_>,
) -> LlamaCppAttrs {
    let mut attrs: Vec<u16> = token_types.iter().map(|&t| attr_of_type(t)).collect();

    // llama.cpp finds eot/eom/fim tokens by their text when the file does
    // not name them, and makes every token it finds a control token.
    let mut sorted: Vec<(&str, u32)> = ids.iter().map(|(p, &id)| (p.as_str(), id)).collect();
    sorted.sort_unstable();
    let make_control = |texts: &[&str], attrs: &mut Vec<u16>| -> Option<u32> {
        let (_, id) = sorted.iter().find(|(p, _)| texts.contains(p))?;
        attrs[*id as usize] |= attr::CONTROL;
        Some(*id)
    };
    let eot_id = special
        .eot_id
        .or_else(|| make_control(EOT_TEXTS, &mut attrs));
    let eom_id = special
        .eom_id
        .or_else(|| make_control(EOM_TEXTS, &mut attrs));
    let mut fim_eog = special.fim_eog_ids.to_vec();
    for (i, (key, texts)) in FIM_TEXTS.iter().enumerate() {
        if special.fim_keys_present.contains(key) {
            continue;
        }
        let found = make_control(texts, &mut attrs);
        // pad, repo and file-separator tokens end generation.
        if i >= 3 {
            fim_eog.extend(found);
        }
    }
    let mut eog: Vec<u32> = fim_eog;
    for (piece, id) in &sorted {
        if EOG_TEXTS.contains(piece) {
            eog.push(*id);
            attrs[*id as usize] |= attr::CONTROL;
        }
    }
    // gpt-oss's channel markers are always rendered.
    for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = ids.get(text) {
            attrs[id as usize] = attr::USER_DEFINED;
        }
    }
    eog.extend(special.eos_id);
    eog.extend(eot_id);
    eog.extend(eom_id);
    let eog_text =
        |eog: &[u32], text: &str| eog.iter().copied().find(|&i| pieces[i as usize] == text);
    // Harmony / solar-open: `<|end|>` ends a message, not the generation.
    if let Some(end) = eog_text(&eog, "<|end|>") {
        let has = |t: &str| eog_text(&eog, t).is_some();
        let has_call = has("<|call|>") || has("<|calls|>");
        if has_call && (has("<|return|>") || has("<|flush|>")) {
            eog.retain(|&i| i != end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    // Gemma 4 and PLaMo have an ordinary `</s>`.
    if let Some(s) = eog_text(&eog, "</s>")
        && (eog_text(&eog, "<|tool_response>").is_some()
            || eog_text(&eog, "<|plamo:eos|>").is_some())
    {
        eog.retain(|&i| i != s);
        attrs[s as usize] = attr::NORMAL;
    }
    eog.sort_unstable();
    eog.dedup();
    if let Some(eos) = special.eos_id {
        eog.retain(|&i| i != eos);
        eog.insert(0, eos);
    }
    LlamaCppAttrs { attrs, eog }
}

/// A SentencePiece-style vocabulary with llama.cpp's encoder and decoder.
#[derive(Debug)]
pub(crate) struct SpmVocab {
    pieces: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u16>,
    ids: HashMap<String, u32>,
    /// Special tokens in matching order: longest text first, then by id.
    specials: Vec<u32>,
    /// The token of each byte: `<0xXX>`, else the one-byte piece, else unk.
    byte_ids: [Option<u32>; 256],
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    /// End-of-generation ids, eos first.
    eog_ids: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// A piece of the raw text after special tokens are cut out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// One symbol of the merge chain: a byte range of the escaped text.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    prev: Option<usize>,
    next: Option<usize>,
    start: usize,
    len: usize,
}

/// A candidate merge of `left` with `right` (the symbol after it).
#[derive(Debug, Clone, Copy)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: the higher score first, then the leftmost. Scores are
    /// checked finite at load, so `partial_cmp` always answers.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// C's `isspace` over one byte (what llama.cpp strips around lstrip/rstrip
/// special tokens).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

impl SpmVocab {
    /// Builds the vocabulary; `scores` and `token_types` hold one entry per
    /// piece (checked by the caller, which names the GGUF keys). Errors:
    /// a duplicated piece, a score that is not a number, an `add_*` flag
    /// without its token.
    pub(crate) fn new(
        pieces: &[String],
        scores: Vec<f32>,
        token_types: &[i32],
        options: SpmOptions,
    ) -> Result<Self, String> {
        let n = pieces.len();
        debug_assert_eq!(scores.len(), n);
        debug_assert_eq!(token_types.len(), n);
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return Err(format!("tokenizer.ggml.scores[{i}] is NaN"));
        }
        let mut pieces: Vec<String> = pieces.to_vec();
        for (i, piece) in pieces.iter_mut().enumerate() {
            if piece.is_empty() {
                *piece = format!("[EMPTY_{i}]");
            }
        }
        let mut ids = HashMap::with_capacity(n);
        for (i, piece) in pieces.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| format!("{n} tokens do not fit u32 ids"))?;
            if let Some(first) = ids.insert(piece.clone(), id) {
                return Err(format!(
                    "token {piece:?} appears twice in tokenizer.ggml.tokens (ids {first} and {id})"
                ));
            }
        }
        let mut options = options;
        for id in [
            &mut options.bos_id,
            &mut options.eos_id,
            &mut options.unk_id,
            &mut options.eot_id,
            &mut options.eom_id,
        ] {
            *id = id.filter(|&i| (i as usize) < n);
        }
        let LlamaCppAttrs { mut attrs, eog } = llama_cpp_attrs(
            &pieces,
            &ids,
            token_types,
            &SpecialIds {
                eos_id: options.eos_id,
                eot_id: options.eot_id,
                eom_id: options.eom_id,
                fim_keys_present: &options.fim_keys_present,
                fim_eog_ids: &options.fim_eog_ids,
            },
        );

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                attrs[i as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials.sort_by(|&a, &b| {
            pieces[b as usize]
                .len()
                .cmp(&pieces[a as usize].len())
                .then(a.cmp(&b))
        });
        if options.model_name.contains("phi-3") || options.model_name.contains("phi3") {
            for &id in &specials {
                attrs[id as usize] |= attr::RSTRIP;
            }
            if let Some(&id) = ids.get("</s>") {
                attrs[id as usize] |= attr::RSTRIP;
            }
            for text in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(&id) = ids.get(text) {
                    attrs[id as usize] &= !attr::RSTRIP;
                }
            }
        }

        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids
                .get(&format!("<0x{b:02X}>"))
                .or_else(|| {
                    char::from_u32(b as u32)
                        .filter(char::is_ascii)
                        .and_then(|c| ids.get(c.to_string().as_str()))
                })
                .or(options.unk_id.as_ref())
                .copied();
        }
        if options.add_bos && options.bos_id.is_none() {
            return Err(
                "tokenizer.ggml.add_bos_token is true but the vocabulary has no bos token".into(),
            );
        }
        if options.add_eos && options.eos_id.is_none() {
            return Err(
                "tokenizer.ggml.add_eos_token is true but the vocabulary has no eos token".into(),
            );
        }
        Ok(Self {
            pieces,
            scores,
            attrs,
            ids,
            specials,
            byte_ids,
            bos_id: options.bos_id,
            eos_id: options.eos_id,
            eog_ids: eog,
            add_bos: options.add_bos,
            add_eos: options.add_eos,
            add_space_prefix: options.add_space_prefix,
        })
    }

    /// Number of pieces.
    pub(crate) fn len(&self) -> usize {
        self.pieces.len()
    }

    /// The id of a piece.
    pub(crate) fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// The piece of an id (after the `[EMPTY_<id>]` fix-up).
    pub(crate) fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The score of an id.
    pub(crate) fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The attribute bits of an id (see [`attr`]).
    pub(crate) fn attrs(&self, id: u32) -> Option<u16> {
        self.attrs.get(id as usize).copied()
    }

    /// End-of-generation ids, eos first.
    pub(crate) fn eog_ids(&self) -> &[u32] {
        &self.eog_ids
    }

    /// Whether `add_bos` / `add_eos` / `add_space_prefix` are set.
    pub(crate) fn flags(&self) -> (bool, bool, bool) {
        (self.add_bos, self.add_eos, self.add_space_prefix)
    }

    /// Token ids of `text`, as llama.cpp's `llama_tokenize(vocab, text,
    /// add_special, parse_special)`.
    pub(crate) fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, String> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos_id);
        }
        // The first text fragment, and one after a special token, get the
        // space prefix.
        let mut prev_special = true;
        let mut escaped = String::new();
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Text(range) => {
                    escaped.clear();
                    if self.add_space_prefix && prev_special {
                        escaped.push('▁');
                    }
                    for c in text[range].chars() {
                        escaped.push(if c == ' ' { '▁' } else { c });
                    }
                    self.merge(&escaped, &mut out)?;
                    prev_special = false;
                }
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos_id);
        }
        Ok(out)
    }

    /// Cuts the special tokens out of `text`: each special token in turn
    /// (longest first) splits every text fragment at its leftmost
    /// occurrences (`tokenizer_st_partition`).
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut fragments = Vec::new();
        if !text.is_empty() {
            fragments.push(Fragment::Text(0..text.len()));
        }
        let bytes = text.as_bytes();
        for &id in &self.specials {
            let attrs = self.attrs[id as usize];
            if !parse_special && attrs & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let piece = self.pieces[id as usize].as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(r) if text[r.clone()].contains(piece)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(range) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let (mut start, end) = (range.start, range.end);
                while start < end {
                    let Some(offset) = text[start..end].find(piece) else {
                        next.push(Fragment::Text(start..end));
                        break;
                    };
                    let at = start + offset;
                    let mut left_end = at;
                    if attrs & attr::LSTRIP != 0 {
                        while left_end > start && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > start {
                        next.push(Fragment::Text(start..left_end));
                    }
                    next.push(Fragment::Token(id));
                    start = at + piece.len();
                    if attrs & attr::RSTRIP != 0 {
                        while start < end && is_c_space(bytes[start]) {
                            start += 1;
                        }
                    }
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The score-ordered merges of one escaped fragment, then its ids
    /// (`llm_tokenizer_spm_session::tokenize`).
    fn merge(&self, text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let index = symbols.len();
            symbols.push(Symbol {
                prev: index.checked_sub(1),
                next: None,
                start,
                len: c.len_utf8(),
            });
            if index > 0 {
                symbols[index - 1].next = Some(index);
            }
        }
        if symbols.is_empty() {
            return Ok(());
        }
        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left, right| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let l: &Symbol = &symbols[left];
            let r: &Symbol = &symbols[right];
            let size = l.len + r.len;
            if let Some(&id) = self.ids.get(&text[l.start..l.start + size]) {
                queue.push(Bigram {
                    left,
                    right,
                    score: self.scores[id as usize],
                    size,
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut queue, &symbols, Some(i - 1), Some(i));
        }
        while let Some(bigram) = queue.pop() {
            let (left, right) = (symbols[bigram.left], symbols[bigram.right]);
            // Skip a pair one of whose symbols has changed since it was queued.
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.size {
                continue;
            }
            symbols[bigram.left].len += right.len;
            symbols[bigram.right].len = 0;
            symbols[bigram.left].next = right.next;
            if let Some(after) = right.next {
                symbols[after].prev = Some(bigram.left);
            }
            try_add(&mut queue, &symbols, left.prev, Some(bigram.left));
            try_add(&mut queue, &symbols, Some(bigram.left), right.next);
        }
        // Every merged symbol is a piece (a pair is queued only then), so a
        // symbol outside the vocabulary is a single character: its bytes.
        let mut at = Some(0);
        while let Some(i) = at {
            let symbol = symbols[i];
            let piece = &text[symbol.start..symbol.start + symbol.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        out.push(self.byte_ids[b as usize].ok_or_else(|| {
                            format!(
                                "{piece:?} is not in the vocabulary and neither is the byte \
                                 token <0x{b:02X}> nor an unknown token"
                            )
                        })?);
                    }
                }
            }
            at = symbol.next;
        }
        Ok(())
    }

    /// The bytes of `ids`, as llama.cpp's `llama_detokenize(vocab, ids,
    /// remove_special, unparse_special)` (no space clean-up: SPM vocabularies
    /// have none).
    pub(crate) fn decode(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>, String> {
        let mut ids = ids;
        let mut remove_space = self.add_space_prefix;
        if remove_special && self.add_bos && ids.first().is_some_and(|&i| Some(i) == self.bos_id) {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.add_eos && ids.last().is_some_and(|&i| Some(i) == self.eos_id) {
            ids = &ids[..ids.len() - 1];
        }
        let mut out = Vec::new();
        for &id in ids {
            let start = out.len();
            self.push_piece(id, unparse_special, &mut out)?;
            if remove_space && out.get(start) == Some(&b' ') {
                out.remove(start);
            }
            remove_space = false;
        }
        Ok(out)
    }

    /// One token's text (`token_to_piece`).
    fn push_piece(&self, id: u32, special: bool, out: &mut Vec<u8>) -> Result<(), String> {
        let attrs = *self.attrs.get(id as usize).ok_or_else(|| {
            format!(
                "token id {id} is out of range (vocabulary of {})",
                self.len()
            )
        })?;
        let piece = &self.pieces[id as usize];
        if attrs & (attr::UNKNOWN | attr::CONTROL) != 0 {
            if special {
                out.extend_from_slice(piece.as_bytes());
            }
        } else if attrs & attr::USER_DEFINED != 0 {
            out.extend_from_slice(piece.as_bytes());
        } else if attrs & attr::NORMAL != 0 {
            for c in piece.chars() {
                if c == '▁' {
                    out.push(b' ');
                } else {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        } else if attrs & attr::BYTE != 0 {
            // `<0xXX>`: llama.cpp reads the two hex digits (strtol: 0 when
            // they are not hex).
            let byte = piece
                .get(3..5)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            out.push(byte);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SpmOptions {
        SpmOptions {
            bos_id: Some(1),
            eos_id: Some(2),
            unk_id: Some(0),
            eot_id: None,
            eom_id: None,
            fim_keys_present: Vec::new(),
            fim_eog_ids: Vec::new(),
            add_bos: true,
            add_eos: false,
            add_space_prefix: true,
            model_name: String::new(),
        }
    }

    /// `<unk> <s> </s>`, the bytes, then scored pieces.
    fn vocab(pieces: &[(&str, f32)], options: SpmOptions) -> SpmVocab {
        let mut all: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
        let mut scores = vec![0.0; 3];
        let mut types = vec![2, 3, 3];
        for b in 0..=255u8 {
            all.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(6);
        }
        for (p, s) in pieces {
            all.push((*p).to_string());
            scores.push(*s);
            types.push(1);
        }
        SpmVocab::new(&all, scores, &types, options).expect("vocab")
    }

    fn id(v: &SpmVocab, piece: &str) -> u32 {
        v.token_to_id(piece).expect(piece)
    }

    #[test]
    fn highest_score_merges_first() {
        // "▁ab": ▁a (score -1) beats ab (-2); then ▁ab (-3) joins the rest.
        let v = vocab(
            &[
                ("▁", -9.0),
                ("a", -9.0),
                ("b", -9.0),
                ("▁a", -1.0),
                ("ab", -2.0),
                ("▁ab", -3.0),
            ],
            options(),
        );
        assert_eq!(v.encode("ab", false, false).unwrap(), vec![id(&v, "▁ab")]);
        // Without ▁ab, ▁a wins and b stays alone.
        let v = vocab(
            &[
                ("▁", -9.0),
                ("a", -9.0),
                ("b", -9.0),
                ("▁a", -1.0),
                ("ab", -2.0),
            ],
            options(),
        );
        assert_eq!(
            v.encode("ab", false, false).unwrap(),
            vec![id(&v, "▁a"), id(&v, "b")]
        );
        // ab scores higher than ▁a: ▁ and ab.
        let v = vocab(
            &[
                ("▁", -9.0),
                ("a", -9.0),
                ("b", -9.0),
                ("▁a", -2.0),
                ("ab", -1.0),
            ],
            options(),
        );
        assert_eq!(
            v.encode("ab", false, false).unwrap(),
            vec![id(&v, "▁"), id(&v, "ab")]
        );
    }

    #[test]
    fn equal_scores_merge_leftmost() {
        // "aaa" with only "aa": the left pair merges.
        let v = vocab(&[("a", -9.0), ("aa", -1.0)], options());
        let mut o = options();
        o.add_space_prefix = false;
        let v2 = vocab(&[("a", -9.0), ("aa", -1.0)], o);
        assert_eq!(
            v2.encode("aaa", false, false).unwrap(),
            vec![id(&v2, "aa"), id(&v2, "a")]
        );
        // With the prefix ▁ is not a piece: its three bytes, then aa a.
        assert_eq!(
            v.encode("aaa", false, false).unwrap(),
            vec![
                0x03 + 0xE2,
                0x03 + 0x96,
                0x03 + 0x81,
                id(&v, "aa"),
                id(&v, "a")
            ]
        );
    }

    #[test]
    fn byte_fallback_and_bos_eos() {
        let mut o = options();
        o.add_eos = true;
        let v = vocab(&[("▁", -1.0)], o);
        // é = C3 A9, not a piece.
        assert_eq!(
            v.encode("é", true, false).unwrap(),
            vec![1, id(&v, "▁"), 3 + 0xC3, 3 + 0xA9, 2]
        );
        assert_eq!(v.encode("", true, false).unwrap(), vec![1, 2]);
        assert_eq!(v.encode("", false, false).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn special_tokens_split_text_and_reset_the_prefix() {
        let v = vocab(&[("▁", -1.0), ("a", -2.0), ("▁a", -0.5)], options());
        // parse_special: </s> is cut out, and the text after it gets ▁ again.
        assert_eq!(
            v.encode("a</s>a", false, true).unwrap(),
            vec![id(&v, "▁a"), 2, id(&v, "▁a")]
        );
        // Without it, "</s>" is text: ▁a then bytes of "</s>".
        let ids = v.encode("a</s>a", false, false).unwrap();
        assert_eq!(ids[0], id(&v, "▁a"));
        assert!(!ids.contains(&2));
        // Decoding strips the prefix space; control tokens only on request.
        let text = |ids: &[u32], special| {
            String::from_utf8(v.decode(ids, false, special).unwrap()).unwrap()
        };
        assert_eq!(text(&[id(&v, "▁a"), 2, id(&v, "▁a")], true), "a</s> a");
        assert_eq!(text(&[id(&v, "▁a"), 2, id(&v, "▁a")], false), "a a");
        assert_eq!(text(&ids, true), "a</s>a");
    }

    #[test]
    fn longer_special_tokens_are_matched_first() {
        let mut all: Vec<String> = ["<unk>", "<s>", "</s>", "ab", "bcd"]
            .map(String::from)
            .to_vec();
        all.push("▁".into());
        let scores = vec![0.0; all.len()];
        let types = vec![2, 3, 3, 4, 4, 1];
        let v = SpmVocab::new(&all, scores, &types, options()).unwrap();
        // "bcd" (longer) wins over "ab": a is left as text, falls back to unk.
        assert_eq!(v.encode("abcd", false, false).unwrap(), vec![5, 0, 4]);
    }

    #[test]
    fn bad_vocabularies_are_errors() {
        let pieces: Vec<String> = ["<unk>", "a", "a"].map(String::from).to_vec();
        let e = SpmVocab::new(&pieces, vec![0.0; 3], &[2, 1, 1], options()).unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        let pieces: Vec<String> = ["<unk>", "a"].map(String::from).to_vec();
        let e = SpmVocab::new(&pieces, vec![0.0, f32::NAN], &[2, 1], options()).unwrap_err();
        assert!(e.contains("tokenizer.ggml.scores[1]"), "{e}");
        let mut o = options();
        o.bos_id = None;
        let e = SpmVocab::new(&pieces, vec![0.0; 2], &[2, 1], o).unwrap_err();
        assert!(e.contains("add_bos_token"), "{e}");
    }

    /// The merge rule written out directly: rescan every adjacent pair,
    /// merge the best-scoring one (strictly greater wins, so the leftmost of
    /// equal scores), until no pair forms a piece.
    fn naive_encode(v: &SpmVocab, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let escaped = format!("▁{}", text.replace(' ', "▁"));
        let mut symbols: Vec<String> = escaped.chars().map(String::from).collect();
        loop {
            let mut best: Option<(f32, usize)> = None;
            for i in 0..symbols.len().saturating_sub(1) {
                let pair = format!("{}{}", symbols[i], symbols[i + 1]);
                if let Some(score) = v.token_to_id(&pair).and_then(|id| v.score(id))
                    && best.is_none_or(|(b, _)| score > b)
                {
                    best = Some((score, i));
                }
            }
            let Some((_, i)) = best else { break };
            let right = symbols.remove(i + 1);
            symbols[i].push_str(&right);
        }
        symbols
            .iter()
            .flat_map(|s| match v.token_to_id(s) {
                Some(id) => vec![id],
                None => s.bytes().map(|b| 3 + u32::from(b)).collect(),
            })
            .collect()
    }

    proptest::proptest! {
        /// The heap-and-linked-list encoder equals the rule written out, on
        /// random vocabularies with many tied scores, and decoding gives the
        /// text back.
        #[test]
        fn encoder_matches_the_rule_and_round_trips(
            pieces in proptest::collection::vec(
                ("[ab▁é🦙]{1,4}", -3i8..=0), 0..24),
            text in "[ab é🦙]{0,24}",
        ) {
            // Real vocabularies have `▁` itself, so spaces decode as spaces.
            let mut seen = std::collections::HashSet::new();
            let pieces: Vec<(String, f32)> = pieces
                .into_iter()
                .chain([("▁".to_string(), -3)])
                .filter(|(p, _)| seen.insert(p.clone()))
                .map(|(p, s)| (p, f32::from(s)))
                .collect();
            let refs: Vec<(&str, f32)> = pieces.iter().map(|(p, s)| (p.as_str(), *s)).collect();
            let v = vocab(&refs, options());
            let ids = v.encode(&text, false, false).unwrap();
            proptest::prop_assert_eq!(&ids, &naive_encode(&v, &text));
            let back = String::from_utf8(v.decode(&ids, false, true).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, text);
        }
    }
}
