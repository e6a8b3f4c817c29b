//! Training examples from forge-miner records: tokenization with prompt
//! masking, batching with padding, sequence packing.
//!
//! Records come from any format forge-miner reads (its native JSONL, Alpaca,
//! ShareGPT, mlx-lm `{"text"}`, `{"prompt","completion"}`, `{"messages"}`)
//! through [`forge_miner::Record::decode`]:
//!
//! - raw records (`{"text"}`, FIM) train on every token;
//! - the others are rendered with the tokenizer's chat template
//!   ([`PromptStyle::Chat`], as mlx-lm does for chat and completions data) or
//!   as prompt + completion text ([`PromptStyle::Plain`]); with
//!   `mask_prompt` only the answer tokens (and the closing eos) count.

use std::path::Path;

use forge_miner::Record;
use forge_model::{ChatMessage, Tokenizer};
use mlx_rs::Array;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loss::Batch;
use crate::util::SplitMix64;

/// How instruction records become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// The tokenizer's chat template (system/user/assistant turns).
    #[default]
    Chat,
    /// `prompt` immediately followed by `completion`.
    Plain,
}

/// One tokenized example: ids and, per id, whether it is a loss target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `counts[i]`: id `i` is predicted in the loss (from position `i − 1`).
    pub counts: Vec<bool>,
}

/// Reads records from a JSONL file (or a JSON array) in any supported format.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |line: usize, message: String| Error::Dataset {
        path: path.to_path_buf(),
        line,
        message,
    };
    if text.trim_start().starts_with('[') {
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| bad(e.line(), e.to_string()))?;
        return v
            .iter()
            .enumerate()
            .map(|(i, x)| {
                Record::decode(x)
                    .ok_or_else(|| bad(0, format!("element {i}: not a record in a known format")))
            })
            .collect();
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        out.push(Record::decode(&v).ok_or_else(|| {
            bad(i + 1, "not a record in a known format (expected text, prompt/completion, messages, Alpaca, ShareGPT or forge)".into())
        })?);
    }
    Ok(out)
}

/// Tokenizes `records`; examples longer than `max_len` are truncated.
pub fn tokenize(
    records: &[Record],
    tok: &Tokenizer,
    style: PromptStyle,
    mask_prompt: bool,
    max_len: usize,
) -> Result<Vec<Example>> {
    let eos = tok.eos_ids().first().copied();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let (prompt, full) = if r.raw {
            (String::new(), format!("{}{}", r.instruction, r.output))
        } else {
            match style {
                PromptStyle::Plain => (r.prompt(), format!("{}{}", r.prompt(), r.output)),
                PromptStyle::Chat => {
                    let msgs: Vec<ChatMessage> = r
                        .messages()
                        .into_iter()
                        .map(|m| ChatMessage::new(m.role, m.content))
                        .collect();
                    let prompt = tok.apply_chat_template(&msgs[..msgs.len() - 1], true)?;
                    let full = tok.apply_chat_template(&msgs, false)?;
                    (prompt, full)
                }
            }
        };
        let mut ids = tok.encode(&full, true)?;
        if let Some(e) = eos
            && ids.last() != Some(&e)
        {
            ids.push(e);
        }
        let n_prompt = if mask_prompt && !prompt.is_empty() {
            tok.encode(&prompt, true)?.len().min(ids.len())
        } else {
            0
        };
        let mut counts: Vec<bool> = (0..ids.len()).map(|i| i >= n_prompt.max(1)).collect();
        ids.truncate(max_len + 1);
        counts.truncate(max_len + 1);
        if counts.iter().any(|&c| c) && ids.len() >= 2 {
            out.push(Example { ids, counts });
        }
    }
    Ok(out)
}

/// Concatenates examples into rows of exactly `max_len + 1` ids (the last
/// row may be shorter). Attention is causal over the whole row, so a packed
/// example can attend to the one before it (as mlx-lm and most packers do
/// without a block-diagonal mask).
pub fn pack(examples: &[Example], max_len: usize) -> Vec<Example> {
    let row = max_len + 1;
    let mut out = Vec::new();
    let mut cur = Example {
        ids: Vec::with_capacity(row),
        counts: Vec::with_capacity(row),
    };
    for e in examples {
        for (&id, &c) in e.ids.iter().zip(&e.counts) {
            cur.ids.push(id);
            cur.counts.push(c);
            if cur.ids.len() == row {
                out.push(std::mem::replace(
                    &mut cur,
                    Example {
                        ids: Vec::with_capacity(row),
                        counts: Vec::with_capacity(row),
                    },
                ));
            }
        }
    }
    if cur.ids.len() >= 2 {
        out.push(cur);
    }
    out
}

/// A batch of examples, right-padded with `pad` to the longest.
pub fn collate(examples: &[&Example], pad: u32) -> Batch {
    let l = examples
        .iter()
        .map(|e| e.ids.len() - 1)
        .max()
        .unwrap_or(1)
        .max(1);
    let b = examples.len();
    let (mut inp, mut tgt, mut mask) = (
        vec![pad as i32; b * l],
        vec![pad as i32; b * l],
        vec![0f32; b * l],
    );
    for (r, e) in examples.iter().enumerate() {
        for t in 0..e.ids.len() - 1 {
            inp[r * l + t] = e.ids[t] as i32;
            tgt[r * l + t] = e.ids[t + 1] as i32;
            mask[r * l + t] = if e.counts[t + 1] { 1.0 } else { 0.0 };
        }
    }
    let shape = [b as i32, l as i32];
    Batch {
        inputs: Array::from_slice(&inp, &shape),
        targets: Array::from_slice(&tgt, &shape),
        mask: Array::from_slice(&mask, &shape),
    }
}

/// The order of examples in `epoch`: a seeded Fisher–Yates shuffle, so the
/// data position of a run is just its micro-batch counter.
pub(crate) fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    idx
}

/// The micro-batch number `k` of the run (epochs follow each other).
pub(crate) fn micro_batch(
    examples: &[Example],
    batch: usize,
    seed: u64,
    k: u64,
    pad: u32,
) -> Batch {
    let per_epoch = (examples.len() / batch).max(1) as u64;
    let (epoch, pos) = (k / per_epoch, (k % per_epoch) as usize);
    let order = epoch_order(examples.len(), seed, epoch);
    let picked: Vec<&Example> = (0..batch)
        .map(|i| &examples[order[(pos * batch + i) % examples.len()]])
        .collect();
    collate(&picked, pad)
}
