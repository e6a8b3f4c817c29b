//! Autoregressive generation with a KV cache: options, the sampler, and
//! streaming iterators over token ids and text.
//!
//! Each step: logits of the last position → repetition penalty (Keskar et al.
//! 2019, *CTRL*, arXiv:1909.05858: a seen token's logit `z` becomes `z/θ` if
//! positive, `z·θ` otherwise) → greedy `argmax` when the temperature is 0,
//! else `softmax(z/T)` restricted to the `k` most likely tokens (top-k) and
//! then to the smallest prefix whose mass reaches `p` (nucleus / top-p,
//! Holtzman et al. 2020, arXiv:1904.09751), renormalised, and sampled with a
//! SplitMix64 stream seeded by [`GenerateOptions::with_seed`]: the same seed
//! gives the same tokens on every run.
//!
//! The prompt is processed in one forward pass that fills the cache; every
//! new token then costs one position.

use std::collections::HashSet;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::cpu::{CpuCache, CpuModel};
use crate::decoder::Model;
use crate::error::{Error, Result};
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::util::SplitMix64;

/// Generation options; the defaults are greedy decoding of at most 256
/// tokens that stops at the model's and tokenizer's eos ids.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct GenerateOptions {
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    repetition_penalty: f32,
    repetition_window: Option<usize>,
    seed: u64,
    stop_tokens: Vec<u32>,
    stop_strings: Vec<String>,
    stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl GenerateOptions {
    /// Greedy, 256 tokens, stop at eos, seed 0.
    pub fn new() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            repetition_window: None,
            seed: 0,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            stop_at_eos: true,
        }
    }

    /// At most `n` new tokens.
    pub fn with_max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }

    /// Sampling temperature; 0 means greedy. Must be finite and ≥ 0.
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }

    /// Keep only the `k` most likely tokens; 0 disables.
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// Nucleus sampling mass in `(0, 1]`; 1 disables.
    pub fn with_top_p(mut self, p: f32) -> Self {
        self.top_p = p;
        self
    }

    /// CTRL repetition penalty θ > 0; 1 disables.
    pub fn with_repetition_penalty(mut self, penalty: f32) -> Self {
        self.repetition_penalty = penalty;
        self
    }

    /// Penalise only the last `n` tokens of the context (default: all).
    pub fn with_repetition_window(mut self, n: usize) -> Self {
        self.repetition_window = Some(n);
        self
    }

    /// The sampling seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Extra token ids that end generation (not emitted).
    pub fn with_stop_tokens(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.stop_tokens.extend(ids);
        self
    }

    /// Strings that end text generation; the text is cut before the match.
    pub fn with_stop_strings<S: Into<String>>(mut self, s: impl IntoIterator<Item = S>) -> Self {
        self.stop_strings.extend(s.into_iter().map(Into::into));
        self
    }

    /// Whether the eos ids of the model config and tokenizer stop generation
    /// (default true).
    pub fn with_stop_at_eos(mut self, stop: bool) -> Self {
        self.stop_at_eos = stop;
        self
    }

    /// The maximum number of new tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::InvalidOption {
                name: "temperature",
                found: self.temperature.to_string(),
                expected: "a finite number ≥ 0",
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidOption {
                name: "top_p",
                found: self.top_p.to_string(),
                expected: "a number in (0, 1]",
            });
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::InvalidOption {
                name: "repetition_penalty",
                found: self.repetition_penalty.to_string(),
                expected: "a finite number > 0",
            });
        }
        Ok(())
    }
}

/// Picks the next token from logits.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    repetition_penalty: f32,
    repetition_window: Option<usize>,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler with the options' settings and seed.
    pub fn new(options: &GenerateOptions) -> Result<Self> {
        options.validate()?;
        Ok(Self {
            temperature: options.temperature,
            top_k: options.top_k,
            top_p: options.top_p,
            repetition_penalty: options.repetition_penalty,
            repetition_window: options.repetition_window,
            rng: SplitMix64::new(options.seed),
        })
    }

    /// Applies the repetition penalty to `logits` for the tokens of
    /// `history` (or its last `window` tokens).
    pub fn penalize(&self, logits: &mut [f32], history: &[u32]) {
        if self.repetition_penalty == 1.0 {
            return;
        }
        let start = self
            .repetition_window
            .map_or(0, |w| history.len().saturating_sub(w));
        let seen: HashSet<u32> = history[start..].iter().copied().collect();
        for id in seen {
            if let Some(z) = logits.get_mut(id as usize) {
                *z = if *z > 0.0 {
                    *z / self.repetition_penalty
                } else {
                    *z * self.repetition_penalty
                };
            }
        }
    }

    /// The distribution the sampler draws from: `(id, probability)` sorted
    /// by probability (then id), after temperature, top-k and top-p, summing
    /// to 1. Greedy (temperature 0) gives the argmax with probability 1.
    pub fn candidates(&self, logits: &[f32]) -> Vec<(u32, f32)> {
        // Higher logit first, then lower id: a total order, so partial and
        // full sorts agree.
        let by_rank = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if logits.is_empty() {
            return Vec::new();
        }
        if self.temperature == 0.0 {
            // One pass instead of a sort of the whole vocabulary.
            let best = (1..logits.len() as u32).fold(0u32, |best, i| {
                if by_rank(&i, &best).is_lt() { i } else { best }
            });
            return vec![(best, 1.0)];
        }
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        if self.top_k > 0 && self.top_k < order.len() {
            // Partition the k best to the front, then sort only those.
            order.select_nth_unstable_by(self.top_k - 1, by_rank);
            order.truncate(self.top_k);
        }
        order.sort_unstable_by(by_rank);
        let t = f64::from(self.temperature);
        let max = f64::from(logits[order[0] as usize]) / t;
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| (f64::from(logits[i as usize]) / t - max).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut kept = Vec::with_capacity(order.len());
        let mut mass = 0.0;
        for (&id, w) in order.iter().zip(&weights) {
            if mass >= f64::from(self.top_p) {
                break;
            }
            let p = w / total;
            kept.push((id, p));
            mass += p;
        }
        let kept_total: f64 = kept.iter().map(|(_, p)| p).sum();
        kept.into_iter()
            .map(|(id, p)| (id, (p / kept_total) as f32))
            .collect()
    }

    /// Greedy without a repetition penalty: the next token is the argmax
    /// of the logits alone, so it can be taken on the device.
    pub(crate) fn is_plain_greedy(&self) -> bool {
        self.temperature == 0.0 && self.repetition_penalty == 1.0
    }

    /// Penalises, filters and draws the next token.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.penalize(logits, history);
        let candidates = self.candidates(logits);
        if candidates.len() <= 1 {
            return candidates.first().map_or(0, |c| c.0);
        }
        let u = self.rng.next_f64();
        let mut acc = 0.0;
        for &(id, p) in &candidates {
            acc += f64::from(p);
            if u < acc {
                return id;
            }
        }
        candidates.last().map_or(0, |c| c.0)
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop or eos token was produced.
    StopToken,
    /// A stop string appeared in the text.
    StopString,
    /// `max_tokens` were produced.
    MaxTokens,
}

/// A causal language model generation can drive: the MLX [`Model`] or the
/// CPU engine [`CpuModel`].
pub trait CausalLm: std::fmt::Debug {
    /// The runtime configuration (vocabulary size, eos ids).
    fn config(&self) -> &ModelConfig;

    /// A decoding session with an empty cache.
    fn session(&mut self) -> Box<dyn DecodeSession + '_>;
}

/// One sequence being decoded: feed tokens, get the next-token logits.
pub trait DecodeSession: std::fmt::Debug {
    /// Runs `tokens` after the positions fed so far and returns the logits
    /// (f32, one per vocabulary entry) of the last one.
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;

    /// Greedy decoding on the device, one token ahead: with `input`, runs
    /// it (the prompt) and queues the argmax of its last position; with
    /// `ahead`, also feeds the newest queued token — still being computed —
    /// and queues the argmax after it. Then waits for the oldest queued token
    /// and returns it. The host thus builds step n + 1 while the device
    /// computes step n (what `mx.async_eval` does in mlx-lm's generate).
    /// `Ok(None)`: the session has no such path (the caller then uses
    /// [`feed`](Self::feed) and the sampler).
    fn greedy(&mut self, input: Option<&[u32]>, ahead: bool) -> Result<Option<u32>> {
        let _ = (input, ahead);
        Ok(None)
    }
}

#[derive(Debug)]
struct MlxSession<'a> {
    model: &'a mut Model,
    cache: KvCache,
    /// Greedy tokens queued on the device (scalar `u32` arrays, evaluated
    /// asynchronously), oldest first.
    queued: std::collections::VecDeque<Array>,
}

/// Token ids as the `[1, n]` array the model takes.
fn token_row(ids: &[u32]) -> Array {
    let ids: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    Array::from_slice(&ids, &[1, ids.len() as i32])
}

impl MlxSession<'_> {
    /// Runs `tokens` (`[1, n]`) and queues the argmax of the last position.
    fn queue_argmax(&mut self, tokens: &Array) -> Result<()> {
        let logits = self.model.forward_last(tokens, Some(&mut self.cache))?;
        let last = logits.index((0, -1)).as_dtype(Dtype::Float32)?;
        let next = mlx_rs::ops::indexing::argmax_axis(&last, -1, None)?;
        mlx_rs::transforms::async_eval([&next])?;
        self.queued.push_back(next);
        Ok(())
    }
}

impl DecodeSession for MlxSession<'_> {
    fn feed(&mut self, input: &[u32]) -> Result<Vec<f32>> {
        let logits = self
            .model
            .forward_last(&token_row(input), Some(&mut self.cache))?;
        last_logits(&logits)
    }

    fn greedy(&mut self, input: Option<&[u32]>, ahead: bool) -> Result<Option<u32>> {
        if let Some(input) = input {
            self.queue_argmax(&token_row(input))?;
        }
        if ahead && let Some(newest) = self.queued.back() {
            let tokens = newest.reshape(&[1, 1])?;
            self.queue_argmax(&tokens)?;
        }
        let Some(oldest) = self.queued.pop_front() else {
            return Ok(None);
        };
        oldest.eval()?;
        // argmax gives a u32 scalar; a failure here is MLX's, not the user's.
        let token = oldest
            .try_item_exact::<u32>()
            .map_err(|e| mlx_rs::error::Exception::custom(e.to_string()))?;
        Ok(Some(token))
    }
}

impl CausalLm for Model {
    fn config(&self) -> &ModelConfig {
        Model::config(self)
    }

    fn session(&mut self) -> Box<dyn DecodeSession + '_> {
        let cache = self.new_cache();
        Box::new(MlxSession {
            model: self,
            cache,
            queued: std::collections::VecDeque::new(),
        })
    }
}

#[derive(Debug)]
struct CpuSession<'a> {
    model: &'a CpuModel,
    cache: CpuCache,
}

impl DecodeSession for CpuSession<'_> {
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.model.forward_last(tokens, &mut self.cache)
    }
}

impl CausalLm for CpuModel {
    fn config(&self) -> &ModelConfig {
        CpuModel::config(self)
    }

    fn session(&mut self) -> Box<dyn DecodeSession + '_> {
        Box::new(CpuSession {
            cache: self.new_cache(),
            model: self,
        })
    }
}

/// Streaming token ids: each `next()` runs one decoding step.
#[derive(Debug)]
pub struct TokenStream<'a> {
    session: Box<dyn DecodeSession + 'a>,
    sampler: Sampler,
    history: Vec<u32>,
    prompt_len: usize,
    pending: Option<Vec<u32>>,
    max_tokens: usize,
    stop_tokens: HashSet<u32>,
    finish: Option<FinishReason>,
    /// Set once the session turned out to have no device greedy path.
    host_sampling: bool,
}

/// Streams up to `max_tokens` new token ids after `prompt` from any
/// [`CausalLm`] (what [`Model::generate_ids`] and [`CpuModel::generate_ids`]
/// call).
///
/// Stop tokens (and, with `stop_at_eos`, the config's eos ids) end the
/// stream without being yielded.
pub fn generate_ids<'a>(
    model: &'a mut dyn CausalLm,
    prompt: &[u32],
    options: &GenerateOptions,
) -> Result<TokenStream<'a>> {
    if prompt.is_empty() {
        return Err(Error::InvalidOption {
            name: "prompt",
            found: "empty".into(),
            expected: "at least one token",
        });
    }
    let vocab = model.config().vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidOption {
            name: "prompt",
            found: format!("token id {bad}"),
            expected: "ids below the model's vocab_size",
        });
    }
    let mut stop_tokens: HashSet<u32> = options.stop_tokens.iter().copied().collect();
    if options.stop_at_eos {
        stop_tokens.extend(model.config().eos_token_ids.iter().copied());
    }
    Ok(TokenStream {
        session: model.session(),
        sampler: Sampler::new(options)?,
        history: prompt.to_vec(),
        prompt_len: prompt.len(),
        pending: Some(prompt.to_vec()),
        max_tokens: options.max_tokens,
        stop_tokens,
        finish: None,
        host_sampling: false,
    })
}

impl Model {
    /// Streams up to `max_tokens` new token ids after `prompt`.
    ///
    /// Stop tokens (and, with `stop_at_eos`, the config's eos ids) end the
    /// stream without being yielded.
    pub fn generate_ids(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<TokenStream<'_>> {
        generate_ids(self, prompt, options)
    }
}

impl CpuModel {
    /// Streams up to `max_tokens` new token ids after `prompt` (see
    /// [`Model::generate_ids`]).
    pub fn generate_ids(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<TokenStream<'_>> {
        generate_ids(self, prompt, options)
    }
}

impl TokenStream<'_> {
    /// Why the stream ended (`None` while it runs).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }

    /// Adds stop ids (e.g. a tokenizer's eos ids).
    pub(crate) fn add_stop_tokens(&mut self, ids: &[u32]) {
        self.stop_tokens.extend(ids.iter().copied());
    }

    fn step(&mut self) -> Result<Option<u32>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.generated().len() >= self.max_tokens {
            self.finish = Some(FinishReason::MaxTokens);
            return Ok(None);
        }
        // Plain greedy decoding runs on the device unless the session has
        // no such path; the device keeps its own next input then.
        let on_device = self.sampler.is_plain_greedy() && !self.host_sampling;
        let token = if on_device {
            // One token ahead unless this is the last one allowed.
            let ahead = self.generated().len() + 1 < self.max_tokens;
            let input = self.pending.take();
            match self.session.greedy(input.as_deref(), ahead)? {
                Some(t) => t,
                None => {
                    // The session has no device path: sample on the host.
                    self.host_sampling = true;
                    self.pending = input;
                    return self.step();
                }
            }
        } else {
            let Some(input) = self.pending.take() else {
                return Ok(None);
            };
            let mut last = self.session.feed(&input)?;
            self.sampler.sample(&mut last, &self.history)
        };
        if self.stop_tokens.contains(&token) {
            self.finish = Some(FinishReason::StopToken);
            return Ok(None);
        }
        self.history.push(token);
        if !on_device {
            self.pending = Some(vec![token]);
        }
        Ok(Some(token))
    }
}

/// The last position's logits of batch row 0 as f32.
pub(crate) fn last_logits(logits: &Array) -> Result<Vec<f32>> {
    let last = logits.index((0, -1)).as_dtype(Dtype::Float32)?;
    last.eval()?;
    Ok(last.as_slice::<f32>().to_vec())
}

impl Iterator for TokenStream<'_> {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.finish = Some(FinishReason::StopToken);
                Some(Err(e))
            }
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The generated text (stop strings cut).
    pub text: String,
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// Streaming text: each item is the new text since the previous one.
///
/// Text is held back while it ends inside an incomplete UTF-8 sequence or
/// could still become a stop string.
#[derive(Debug)]
pub struct TextStream<'a> {
    tokens: TokenStream<'a>,
    tokenizer: &'a Tokenizer,
    stop_strings: Vec<String>,
    emitted: String,
    finish: Option<FinishReason>,
}

impl TextStream<'_> {
    /// Why the stream ended (`None` while it runs).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// The tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        self.tokens.generated()
    }

    /// The text emitted so far.
    pub fn text(&self) -> &str {
        &self.emitted
    }

    fn step(&mut self) -> Result<Option<String>> {
        loop {
            if self.finish.is_some() {
                return Ok(None);
            }
            let token = self.tokens.step()?;
            let full = self.tokenizer.decode(self.tokens.generated(), true)?;
            if let Some(cut) = self
                .stop_strings
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| full.find(s.as_str()))
                .min()
            {
                self.finish = Some(FinishReason::StopString);
                return Ok(self.emit(&full[..cut]));
            }
            if token.is_none() {
                self.finish = self.tokens.finish_reason();
                return Ok(self.emit(&full));
            }
            let mut safe = full.len();
            if full.ends_with('\u{FFFD}') {
                safe -= '\u{FFFD}'.len_utf8();
            }
            for s in &self.stop_strings {
                let from = full.len().saturating_sub(s.len());
                for (i, _) in full.char_indices().filter(|(i, _)| *i >= from && *i < safe) {
                    if s.starts_with(&full[i..]) {
                        safe = safe.min(i);
                        break;
                    }
                }
            }
            if let Some(delta) = self.emit(&full[..safe]) {
                return Ok(Some(delta));
            }
        }
    }

    fn emit(&mut self, upto: &str) -> Option<String> {
        let delta = upto.strip_prefix(self.emitted.as_str())?.to_string();
        if delta.is_empty() {
            return None;
        }
        self.emitted.push_str(&delta);
        Some(delta)
    }
}

impl Iterator for TextStream<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.finish = Some(FinishReason::StopToken);
                Some(Err(e))
            }
        }
    }
}

/// One candidate next token with its probability (see
/// [`Generator::next_token_top_k`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenProb {
    /// Token id.
    pub id: u32,
    /// The token's text (decoded alone, special tokens kept).
    pub text: String,
    /// Probability under softmax of the logits (temperature 1).
    pub prob: f64,
}

/// A model and its tokenizer, generating text.
#[derive(Debug)]
pub struct Generator<'a> {
    model: &'a mut dyn CausalLm,
    tokenizer: &'a Tokenizer,
}

impl<'a> Generator<'a> {
    /// Pairs a model (the MLX [`Model`] or the CPU engine [`CpuModel`]) with
    /// a tokenizer.
    pub fn new<M: CausalLm + 'a>(model: &'a mut M, tokenizer: &'a Tokenizer) -> Self {
        Self { model, tokenizer }
    }

    /// Streams text after `prompt` (encoded with the tokenizer's special
    /// tokens, e.g. a Llama bos).
    pub fn stream(&mut self, prompt: &str, options: &GenerateOptions) -> Result<TextStream<'_>> {
        let ids = self.tokenizer.encode(prompt, true)?;
        self.stream_ids(&ids, options)
    }

    /// Streams text after already-tokenized `prompt`.
    pub fn stream_ids(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
    ) -> Result<TextStream<'_>> {
        let mut tokens = generate_ids(&mut *self.model, prompt, options)?;
        if options.stop_at_eos {
            tokens.add_stop_tokens(self.tokenizer.eos_ids());
        }
        Ok(TextStream {
            tokens,
            tokenizer: self.tokenizer,
            stop_strings: options.stop_strings.clone(),
            emitted: String::new(),
            finish: None,
        })
    }

    /// Generates the whole completion of `prompt`.
    pub fn generate(&mut self, prompt: &str, options: &GenerateOptions) -> Result<Generation> {
        let ids = self.tokenizer.encode(prompt, true)?;
        self.generate_ids(&ids, options)
    }

    /// Renders `messages` with the chat template (plus the assistant
    /// prompt) and generates the reply.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        options: &GenerateOptions,
    ) -> Result<Generation> {
        let text = self.tokenizer.apply_chat_template(messages, true)?;
        let ids = self.tokenizer.encode(&text, false)?;
        self.generate_ids(&ids, options)
    }

    /// Token ids of the chat prompt for `messages` (chat template plus the
    /// assistant prompt, special tokens parsed).
    pub fn chat_prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let text = self.tokenizer.apply_chat_template(messages, true)?;
        self.tokenizer.encode(&text, false)
    }

    /// The `k` most probable next tokens after `prompt` (token ids), by
    /// probability then id: softmax of the last position's logits in f64,
    /// no sampling options applied.
    pub fn next_token_top_k(&mut self, prompt: &[u32], k: usize) -> Result<Vec<TokenProb>> {
        if prompt.is_empty() {
            return Err(Error::InvalidOption {
                name: "prompt",
                found: "no tokens".into(),
                expected: "at least one token",
            });
        }
        let logits = self.model.session().feed(prompt)?;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let exps: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let mut order: Vec<usize> = (0..exps.len()).collect();
        order.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
        order
            .into_iter()
            .take(k)
            .map(|i| {
                Ok(TokenProb {
                    id: i as u32,
                    text: self.tokenizer.decode(&[i as u32], false)?,
                    prob: exps[i] / sum,
                })
            })
            .collect()
    }

    /// Generates one completion per prompt, one prompt after the other, each
    /// with the same options and seed: the result for a prompt equals its
    /// single-prompt generation.
    pub fn generate_batch<S: AsRef<str>>(
        &mut self,
        prompts: &[S],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        prompts
            .iter()
            .map(|p| self.generate(p.as_ref(), options))
            .collect()
    }

    fn generate_ids(&mut self, ids: &[u32], options: &GenerateOptions) -> Result<Generation> {
        let mut stream = self.stream_ids(ids, options)?;
        for delta in stream.by_ref() {
            delta?;
        }
        Ok(Generation {
            text: stream.text().to_string(),
            tokens: stream.tokens().to_vec(),
            finish_reason: stream.finish_reason().unwrap_or(FinishReason::MaxTokens),
        })
    }
}
