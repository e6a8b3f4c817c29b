//! Perplexity and mean token loss on a held-out dataset (feature `model`).
//!
//! ```text
//! L   = Σ_b Σ_t m_bt · (logsumexp(z_bt) − z_bt[y_bt])  /  Σ_b Σ_t m_bt
//! PPL = exp(L)
//! ```
//!
//! token-weighted over the whole dataset (not a mean of per-batch means), with the mask `m`
//! of training: the records are read, tokenized, masked, packed and collated by forge-peft's
//! own [`forge_peft::read_records`], [`forge_peft::tokenize`], [`forge_peft::pack`] and
//! [`forge_peft::collate`], and the sum is forge-peft's [`forge_peft::masked_nll_sum`] — the
//! code the trainer runs, so the number is the trainer's validation loss on the same data.
//! Sums are accumulated in f64 on the host.

use std::path::Path;

use forge_model::{Model, Tokenizer};
use forge_peft::{Example, PeftModel, PromptStyle};
use mlx_rs::Array;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Anything that maps token ids `[b, l]` to logits `[b, l, vocab]`: a base model or a model
/// with adapters.
pub trait Logits {
    /// Logits for `tokens`.
    fn logits(&mut self, tokens: &Array) -> Result<Array>;
}

impl Logits for Model {
    fn logits(&mut self, tokens: &Array) -> Result<Array> {
        Ok(self.forward(tokens, None)?)
    }
}

impl Logits for PeftModel {
    fn logits(&mut self, tokens: &Array) -> Result<Array> {
        Ok(self.forward(tokens)?)
    }
}

/// How the data is prepared; the defaults are forge-peft's training defaults (`[data]` of a
/// run file): chat template, prompt masked, no packing, 512 tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerplexityOptions {
    /// How instruction records become text.
    pub prompt_style: PromptStyle,
    /// Leave the prompt out of the loss.
    pub mask_prompt: bool,
    /// Pack examples into rows of `max_seq_len + 1` tokens.
    pub packing: bool,
    /// Longest sequence (longer examples are truncated, as in training).
    pub max_seq_len: usize,
    /// Sequences per forward pass.
    pub batch_size: usize,
}

impl Default for PerplexityOptions {
    fn default() -> Self {
        Self {
            prompt_style: PromptStyle::Chat,
            mask_prompt: true,
            packing: false,
            max_seq_len: 512,
            batch_size: 4,
        }
    }
}

impl PerplexityOptions {
    /// The data options of a forge-peft run, so evaluation masks exactly as that run trained.
    #[must_use]
    pub fn from_data_config(data: &forge_peft::DataConfig) -> Self {
        Self {
            prompt_style: data.prompt_style,
            mask_prompt: data.mask_prompt,
            packing: data.packing,
            max_seq_len: data.max_seq_len,
            ..Self::default()
        }
    }

    /// Set the prompt style.
    #[must_use]
    pub fn with_prompt_style(mut self, style: PromptStyle) -> Self {
        self.prompt_style = style;
        self
    }

    /// Mask the prompt or not.
    #[must_use]
    pub fn with_mask_prompt(mut self, mask: bool) -> Self {
        self.mask_prompt = mask;
        self
    }

    /// Pack or not.
    #[must_use]
    pub fn with_packing(mut self, packing: bool) -> Self {
        self.packing = packing;
        self
    }

    /// Set the longest sequence.
    #[must_use]
    pub fn with_max_seq_len(mut self, n: usize) -> Self {
        self.max_seq_len = n;
        self
    }

    /// Set the batch size (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
}

/// The result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Perplexity {
    /// Mean loss per counted token (nats).
    pub mean_loss: f64,
    /// `exp(mean_loss)`.
    pub perplexity: f64,
    /// Counted (unmasked) target tokens.
    pub tokens: u64,
    /// Sequences evaluated (after packing).
    pub sequences: usize,
}

/// Token-weighted loss of `model` over already tokenized `examples`;
/// `progress(done, total)` after each batch.
pub fn perplexity_of_examples(
    model: &mut dyn Logits,
    examples: &[Example],
    pad: u32,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    let batch_size = batch_size.max(1);
    let total = examples.len().div_ceil(batch_size);
    let (mut sum, mut tokens) = (0.0f64, 0.0f64);
    for (k, chunk) in examples.chunks(batch_size).enumerate() {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = forge_peft::collate(&refs, pad);
        let logits = model.logits(&batch.inputs)?;
        let s = forge_peft::masked_nll_sum(&logits, &batch.targets, &batch.mask)?;
        s.eval()?;
        sum += f64::from(s.as_slice::<f32>().first().copied().unwrap_or(f32::NAN));
        tokens += f64::from(batch.num_tokens()?);
        progress(k + 1, total);
    }
    if tokens == 0.0 {
        return Err(Error::InvalidArgument(
            "no counted token in the data (every target masked?)".into(),
        ));
    }
    let mean_loss = sum / tokens;
    Ok(Perplexity {
        mean_loss,
        perplexity: mean_loss.exp(),
        tokens: tokens as u64,
        sequences: examples.len(),
    })
}

/// Perplexity of `model` on the records of `data` (any format forge-peft trains on: forge
/// JSONL, `{"text"}`, `{"prompt","completion"}`, `{"messages"}`, Alpaca, ShareGPT).
pub fn perplexity(
    model: &mut dyn Logits,
    tokenizer: &Tokenizer,
    data: &Path,
    options: &PerplexityOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    let records = forge_peft::read_records(data)?;
    if records.is_empty() {
        return Err(Error::Data {
            path: data.to_path_buf(),
            line: 0,
            message: "no record".into(),
        });
    }
    let mut examples = forge_peft::tokenize(
        &records,
        tokenizer,
        options.prompt_style,
        options.mask_prompt,
        options.max_seq_len,
    )?;
    if options.packing {
        examples = forge_peft::pack(&examples, options.max_seq_len);
    }
    let pad = tokenizer.eos_ids().first().copied().unwrap_or(0);
    perplexity_of_examples(model, &examples, pad, options.batch_size, progress)
}

/// A model loaded for evaluation: the base model, or the base with adapters.
pub enum EvalModel {
    /// No adapters.
    Base(Box<Model>),
    /// With adapters.
    Adapted(Box<PeftModel>),
}

impl Logits for EvalModel {
    fn logits(&mut self, tokens: &Array) -> Result<Array> {
        match self {
            EvalModel::Base(m) => m.logits(tokens),
            EvalModel::Adapted(m) => m.logits(tokens),
        }
    }
}

impl EvalModel {
    /// The model to generate with (adapters merged into the weights).
    pub fn into_model(self) -> Result<Model> {
        match self {
            EvalModel::Base(m) => Ok(*m),
            EvalModel::Adapted(m) => Ok(m.merged_model()?),
        }
    }
}

/// Loads `source` (a Hugging Face folder, a `.gguf`, `default`) with its tokenizer and, when
/// `adapter` is given, the adapters in it (PEFT layout if `adapter_model.safetensors` is
/// there, else mlx-lm's `adapters.safetensors`).
pub fn load_for_eval(source: &str, adapter: Option<&Path>) -> Result<(EvalModel, Tokenizer)> {
    let loaded = forge_model::load(
        &forge_model::ModelSource::parse(source),
        &forge_model::LoadOptions::new(),
    )?;
    let tokenizer = loaded.tokenizer.ok_or_else(|| {
        Error::InvalidArgument(format!("model {source}: no tokenizer in the source"))
    })?;
    let model = match adapter {
        None => EvalModel::Base(Box::new(loaded.model)),
        Some(dir) => {
            let peft = if dir.join(forge_peft::PEFT_WEIGHTS).exists() {
                PeftModel::load_peft(loaded.model, dir)?
            } else if dir.join(forge_peft::MLX_LM_WEIGHTS).exists() {
                PeftModel::load_mlx_lm(loaded.model, dir)?
            } else {
                return Err(Error::InvalidArgument(format!(
                    "adapter folder {}: neither {} nor {}",
                    dir.display(),
                    forge_peft::PEFT_WEIGHTS,
                    forge_peft::MLX_LM_WEIGHTS
                )));
            };
            EvalModel::Adapted(Box::new(peft))
        }
    };
    Ok((model, tokenizer))
}
