//! DLP-LoRA: a dynamic lightweight plugin that picks and fuses named LoRAs
//! per request.
//!
//! Zhang et al. 2024, *DLP-LoRA: Efficient Task-Specific LoRA Fusion with a
//! Dynamic, Lightweight Plugin for Large Language Models* (arXiv:2410.01497):
//! a small MLP classifies the input sentence into the tasks of a library of
//! task LoRAs; at inference the LoRAs are chosen by top-p over the plugin's
//! probabilities and fused with sentence-level weights (once per request, not
//! per token):
//!
//! ```text
//! f(x)  = (1/L) Σ_t E[x_t]                         sentence feature: mean-pooled input embeddings
//! p     = softmax(MLP(f(x)))                        MLP: Linear → ReLU → … → Linear(T)
//! S     = the smallest set of most probable tasks with Σ_{k∈S} p_k ≥ top_p
//! w_k   = p_k / Σ_{j∈S} p_j                         (k ∈ S)
//! W'_m  = W_m + Σ_{k∈S} w_k · s_k B_{k,m} A_{k,m}   for every module m of any LoRA
//! ```
//!
//! The features are the base model's own input embeddings (`E`, `[vocab,
//! hidden]`), so the plugin needs no separate encoder; with the default
//! hidden sizes `[2048, 2048]` it has about 5M parameters on SmolLM2
//! (hidden 576). Generation runs on the fused weights through forge-model
//! ([`DlpLora::fused_model`] gives a plain [`forge_model::Model`]), so a
//! request costs one plugin forward, one low-rank product per module
//! (`[out, Σr]·[Σr, in]`) and then decoding at the base model's speed.
//! When the plugin is one-hot the fusion is exactly the chosen LoRA (test
//! `one_hot_plugin_equals_the_chosen_lora`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use forge_model::{GenerateOptions, Generation, Generator, Model, Tokenizer};
use mlx_rs::Array;
use mlx_rs::error::Exception;
use mlx_rs::module::Module;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::{PROJECTIONS, PeftModel};
use crate::save::{PlainLora, read_tensors, write_tensors};
use crate::train::optim::AdamW;
use crate::util::{SplitMix64, fnv1a, host_f32};

/// DLP-LoRA's config file.
pub const DLP_CONFIG: &str = "dlp_lora_config.json";
/// The plugin's weights.
pub const DLP_PLUGIN: &str = "plugin.safetensors";
/// The LoRA library's weights.
pub const DLP_LIBRARY: &str = "library.safetensors";
const FORMAT: &str = "forge-dlp-lora";

/// The plugin's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Input width (the base model's hidden size).
    pub input: usize,
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Task names, in output order.
    pub tasks: Vec<String>,
    /// Seed of the initialisation.
    pub seed: u64,
}

impl PluginConfig {
    /// An MLP from `input` features to `tasks`, hidden sizes `[2048, 2048]`
    /// (about 5.4M parameters for `input = 576` and a few tasks), seed 0.
    pub fn new<S: Into<String>>(input: usize, tasks: impl IntoIterator<Item = S>) -> Self {
        Self {
            input,
            hidden: vec![2048, 2048],
            tasks: tasks.into_iter().map(Into::into).collect(),
            seed: 0,
        }
    }

    /// Hidden layer widths.
    #[must_use]
    pub fn with_hidden(mut self, hidden: impl IntoIterator<Item = usize>) -> Self {
        self.hidden = hidden.into_iter().collect();
        self
    }

    /// The seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Number of parameters (weights and biases).
    pub fn num_parameters(&self) -> usize {
        self.widths().windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.input];
        w.extend(&self.hidden);
        w.push(self.tasks.len());
        w
    }

    fn validate(&self) -> Result<()> {
        if self.tasks.is_empty() {
            return Err(Error::invalid("tasks", "empty", "at least one task"));
        }
        if self.input == 0 || self.hidden.contains(&0) {
            return Err(Error::invalid(
                "hidden",
                format!("{:?} (input {})", self.hidden, self.input),
                "positive widths",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tasks {
            if !seen.insert(t) {
                return Err(Error::invalid("tasks", t, "distinct task names"));
            }
        }
        Ok(())
    }
}

/// Options of [`Plugin::train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginTrainOptions {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per step (all when larger than the data).
    pub batch_size: usize,
    /// AdamW learning rate (constant).
    pub lr: f32,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Data-order seed.
    pub seed: u64,
}

impl Default for PluginTrainOptions {
    fn default() -> Self {
        Self {
            steps: 200,
            batch_size: 32,
            lr: 1e-3,
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

/// What plugin training reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginReport {
    /// Mean cross-entropy of each step.
    pub losses: Vec<f32>,
    /// Accuracy on the training features after training.
    pub train_accuracy: f32,
}

/// The task classifier: an MLP over sentence features.
#[derive(Debug, Clone)]
pub struct Plugin {
    config: PluginConfig,
    /// `(weight [out, in], bias [out])` per layer.
    layers: Vec<(Array, Array)>,
}

fn layer_names(i: usize) -> (String, String) {
    (format!("layers.{i}.weight"), format!("layers.{i}.bias"))
}

fn mlp(layers: &[(Array, Array)], x: &Array) -> Result<Array> {
    let mut h = x.clone();
    for (i, (w, b)) in layers.iter().enumerate() {
        h = mlx_rs::ops::addmm(b, &h, w.t(), None, None)?;
        if i + 1 < layers.len() {
            h = mlx_rs::nn::relu(&h)?;
        }
    }
    Ok(h)
}

impl Plugin {
    /// A freshly initialised plugin: weights `U(±1/√in)` (seeded from
    /// `seed ^ fnv1a("plugin.layers.<i>")`), biases 0.
    pub fn new(config: PluginConfig) -> Result<Self> {
        config.validate()?;
        let widths = config.widths();
        let mut layers = Vec::new();
        for (i, w) in widths.windows(2).enumerate() {
            let (inp, out) = (w[0], w[1]);
            let mut rng = SplitMix64::new(config.seed ^ fnv1a(&format!("plugin.layers.{i}")));
            let bound = 1.0 / (inp as f64).sqrt();
            let v: Vec<f32> = (0..inp * out)
                .map(|_| (bound * (2.0 * rng.next_f64() - 1.0)) as f32)
                .collect();
            layers.push((
                Array::from_slice(&v, &[out as i32, inp as i32]),
                mlx_rs::ops::zeros::<f32>(&[out as i32])?,
            ));
        }
        Ok(Self { config, layers })
    }

    /// The configuration.
    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    /// Task names.
    pub fn tasks(&self) -> &[String] {
        &self.config.tasks
    }

    /// The arrays by name (`layers.<i>.weight`, `layers.<i>.bias`).
    pub fn parameters(&self) -> BTreeMap<String, Array> {
        let mut out = BTreeMap::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let (wn, bn) = layer_names(i);
            out.insert(wn, w.clone());
            out.insert(bn, b.clone());
        }
        out
    }

    /// Replaces arrays by name (same shapes).
    pub fn set_parameters<'a>(
        &mut self,
        params: impl IntoIterator<Item = (&'a str, &'a Array)>,
    ) -> Result<()> {
        for (k, v) in params {
            let bad = || Error::invalid("parameter", k, "`layers.<i>.weight` or `layers.<i>.bias`");
            let rest = k.strip_prefix("layers.").ok_or_else(bad)?;
            let (i, field) = rest.split_once('.').ok_or_else(bad)?;
            let i: usize = i.parse().map_err(|_| bad())?;
            let layer = self.layers.get_mut(i).ok_or_else(bad)?;
            let slot = match field {
                "weight" => &mut layer.0,
                "bias" => &mut layer.1,
                _ => return Err(bad()),
            };
            if slot.shape() != v.shape() {
                return Err(Error::Shape {
                    path: "<memory>".into(),
                    name: k.to_string(),
                    found: v.shape().to_vec(),
                    expected: slot.shape().to_vec(),
                });
            }
            *slot = v.clone();
        }
        Ok(())
    }

    /// Task logits `[N, T]` for features `[N, input]`.
    pub fn logits(&self, features: &Array) -> Result<Array> {
        mlp(&self.layers, features)
    }

    /// Task probabilities `[N, T]`.
    pub fn probabilities(&self, features: &Array) -> Result<Array> {
        Ok(mlx_rs::ops::softmax_axis(
            &self.logits(features)?,
            -1,
            true,
        )?)
    }

    /// Trains on `features` `[N, input]` with task indices `labels` by
    /// cross-entropy and AdamW, seeded mini-batches.
    pub fn train(
        &mut self,
        features: &Array,
        labels: &[usize],
        options: &PluginTrainOptions,
    ) -> Result<PluginReport> {
        let n = features.dim(0) as usize;
        if n == 0 || labels.len() != n {
            return Err(Error::invalid(
                "labels",
                format!("{} labels for {n} feature rows", labels.len()),
                "one label per row, at least one row",
            ));
        }
        let t = self.config.tasks.len();
        if let Some(&bad) = labels.iter().find(|&&l| l >= t) {
            return Err(Error::invalid(
                "labels",
                bad,
                format!("task indices below {t}"),
            ));
        }
        let mut opt = AdamW::new((0.9, 0.999), 1e-8, options.weight_decay);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = SplitMix64::new(options.seed ^ fnv1a("plugin.data"));
        let bs = options.batch_size.clamp(1, n);
        let mut pos = n; // forces a shuffle first
        let mut losses = Vec::with_capacity(options.steps);
        let n_layers = self.layers.len();
        for _ in 0..options.steps {
            let mut idx = Vec::with_capacity(bs);
            while idx.len() < bs {
                if pos >= n {
                    for i in (1..n).rev() {
                        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                        order.swap(i, j);
                    }
                    pos = 0;
                }
                idx.push(order[pos] as i32);
                pos += 1;
            }
            let rows = Array::from_slice(&idx, &[bs as i32]);
            let x = features.take_axis(&rows, 0)?;
            let y: Vec<i32> = idx.iter().map(|&i| labels[i as usize] as i32).collect();
            let y = Array::from_slice(&y, &[bs as i32]);
            let params: HashMap<Rc<str>, Array> = self
                .parameters()
                .into_iter()
                .map(|(k, v)| (Rc::from(k.as_str()), v))
                .collect();
            let f = move |p: HashMap<Rc<str>, Array>,
                          (x, y): (Array, Array)|
                  -> std::result::Result<Vec<Array>, Exception> {
                let layers: Vec<(Array, Array)> = (0..n_layers)
                    .map(|i| {
                        let (wn, bn) = layer_names(i);
                        (p[wn.as_str()].clone(), p[bn.as_str()].clone())
                    })
                    .collect();
                let logits = mlp(&layers, &x).map_err(|e| Exception::custom(e.to_string()))?;
                let lse = logits.logsumexp_axis(-1, false)?;
                let picked = logits
                    .take_along_axis(y.expand_dims(-1)?, -1)?
                    .squeeze_axes(&[-1])?;
                Ok(vec![lse.subtract(&picked)?.mean(None)?])
            };
            let mut vg = mlx_rs::transforms::keyed_value_and_grad(f);
            let (values, grads) = vg(params, (x, y))?;
            let loss = host_f32(&values[0])?[0];
            let grads: BTreeMap<String, Array> =
                grads.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let new = opt.step(&self.parameters(), &grads, options.lr)?;
            let mut to_eval: Vec<&Array> = new.values().collect();
            to_eval.extend(opt.m.values());
            to_eval.extend(opt.v.values());
            mlx_rs::transforms::eval(to_eval)?;
            self.set_parameters(new.iter().map(|(k, v)| (k.as_str(), v)))?;
            if !loss.is_finite() {
                return Err(Error::Diverged {
                    step: losses.len() + 1,
                    reason: format!("the plugin loss is {loss}"),
                    checkpoint: None,
                });
            }
            losses.push(loss);
        }
        let train_accuracy = self.accuracy(features, labels)?;
        Ok(PluginReport {
            losses,
            train_accuracy,
        })
    }

    /// Fraction of rows whose most probable task is the label.
    pub fn accuracy(&self, features: &Array, labels: &[usize]) -> Result<f32> {
        let pred = mlx_rs::ops::indexing::argmax_axis(self.logits(features)?, -1, false)?
            .as_type::<i32>()?;
        pred.eval()?;
        let hits = pred
            .as_slice::<i32>()
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p as usize == **l)
            .count();
        Ok(hits as f32 / labels.len().max(1) as f32)
    }
}

/// The sentence feature of `tokens`: the mean of the base model's input
/// embeddings of the ids, `[hidden]` (f32).
pub fn sentence_features(model: &Model, tokens: &[u32]) -> Result<Array> {
    if tokens.is_empty() {
        return Err(Error::invalid("prompt", "empty", "at least one token"));
    }
    let vocab = model.config().vocab_size;
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::invalid(
            "prompt",
            format!("token id {bad}"),
            format!("ids below the vocabulary size {vocab}"),
        ));
    }
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let ids = Array::from_slice(&ids, &[1, ids.len() as i32]);
    let mut embed = model.model.embed_tokens.clone();
    Ok(embed
        .forward(&ids)?
        .as_type::<f32>()?
        .mean_axis(1, false)?
        .squeeze_axes(&[0])?)
}

/// Sentence features `[N, hidden]` of several token sequences.
pub fn sentence_features_batch(model: &Model, prompts: &[Vec<u32>]) -> Result<Array> {
    let rows = prompts
        .iter()
        .map(|p| {
            sentence_features(model, p)?
                .expand_dims(0)
                .map_err(Error::from)
        })
        .collect::<Result<Vec<_>>>()?;
    if rows.is_empty() {
        return Err(Error::invalid("prompts", "empty", "at least one prompt"));
    }
    let out = mlx_rs::ops::concatenate(&rows, 0)?;
    out.eval()?;
    Ok(out)
}

/// A library of named LoRA adapters (each as plain LoRA on the original base).
#[derive(Debug, Clone, Default)]
pub struct LoraLibrary {
    entries: Vec<(String, Vec<PlainLora>)>,
}

impl LoraLibrary {
    /// An empty library.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` with `model`'s adapters (PiSSA converted to plain LoRA;
    /// DoRA is refused: its magnitude does not fuse linearly).
    pub fn with_adapter(mut self, name: impl Into<String>, model: &PeftModel) -> Result<Self> {
        self.add(name, model.to_plain_lora()?)?;
        Ok(self)
    }

    /// Adds `name` from a PEFT adapter folder, for the base `model`.
    pub fn with_peft_dir(
        self,
        name: impl Into<String>,
        model: &Model,
        dir: impl AsRef<Path>,
    ) -> Result<Self> {
        let peft = PeftModel::load_peft(model.clone(), dir)?;
        self.with_adapter(name, &peft)
    }

    /// Adds `name` with these modules.
    pub fn add(&mut self, name: impl Into<String>, modules: Vec<PlainLora>) -> Result<()> {
        let name = name.into();
        if self.entries.iter().any(|(n, _)| *n == name) {
            return Err(Error::invalid("library", &name, "distinct adapter names"));
        }
        if modules.iter().any(|m| m.magnitude.is_some()) {
            return Err(Error::Unsupported(format!(
                "adapter `{name}` is DoRA: its per-row magnitude does not fuse as a weighted sum of deltas"
            )));
        }
        if modules.is_empty() {
            return Err(Error::invalid("library", &name, "an adapter with modules"));
        }
        self.entries.push((name, modules));
        Ok(())
    }

    /// Adapter names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Number of adapters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the library is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The adapter called `name`.
    pub fn get(&self, name: &str) -> Option<&[PlainLora]> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.as_slice())
    }
}

/// The plugin's choice for one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    /// The plugin's probability of every task, in library order.
    pub probabilities: Vec<f32>,
    /// `(task index, fusion weight)` of the selected tasks, most probable
    /// first; the weights sum to 1.
    pub weights: Vec<(usize, f32)>,
}

/// Top-p selection: the most probable tasks until their mass reaches
/// `top_p`, with weights renormalised over them (ties by index).
pub fn top_p_select(probabilities: &[f32], top_p: f32) -> Selection {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(a.cmp(&b))
    });
    let mut chosen = Vec::new();
    let mut mass = 0.0f64;
    for i in order {
        chosen.push(i);
        mass += f64::from(probabilities[i]);
        if mass >= f64::from(top_p) {
            break;
        }
    }
    let weights = chosen
        .iter()
        .map(|&i| (i, (f64::from(probabilities[i]) / mass.max(1e-30)) as f32))
        .collect();
    Selection {
        probabilities: probabilities.to_vec(),
        weights,
    }
}

/// A base model, a library of named LoRAs and the plugin that picks them.
#[derive(Debug, Clone)]
pub struct DlpLora {
    base: Model,
    library: LoraLibrary,
    plugin: Plugin,
    top_p: f32,
}

fn slot_of(module: &str) -> Option<(usize, usize)> {
    let rest = module.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    let slot = PROJECTIONS
        .iter()
        .position(|(b, p)| rest == format!("{b}.{p}"))?;
    Some((i, slot))
}

fn weight_mut(model: &mut Model, layer: usize, slot: usize) -> &mut Array {
    let l = &mut model.model.layers[layer];
    let lin = match slot {
        0 => &mut l.self_attn.q_proj,
        1 => &mut l.self_attn.k_proj,
        2 => &mut l.self_attn.v_proj,
        3 => &mut l.self_attn.o_proj,
        4 => &mut l.mlp.gate_proj,
        5 => &mut l.mlp.up_proj,
        _ => &mut l.mlp.down_proj,
    };
    &mut lin.weight.value
}

impl DlpLora {
    /// Pairs `base` with a library and a plugin whose tasks are the
    /// library's names in the same order; `top_p` in `(0, 1]`.
    pub fn new(base: Model, library: LoraLibrary, plugin: Plugin, top_p: f32) -> Result<Self> {
        if library.names()
            != plugin
                .tasks()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        {
            return Err(Error::invalid(
                "plugin",
                format!("tasks {:?}", plugin.tasks()),
                format!("the library's adapter names in order {:?}", library.names()),
            ));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::invalid("top_p", top_p, "a number in (0, 1]"));
        }
        if plugin.config().input != base.config().hidden_size {
            return Err(Error::invalid(
                "plugin",
                format!("input width {}", plugin.config().input),
                format!("the model's hidden size {}", base.config().hidden_size),
            ));
        }
        for (name, modules) in &library.entries {
            for m in modules {
                if slot_of(&m.module).is_none_or(|(i, _)| i >= base.model.layers.len()) {
                    return Err(Error::invalid(
                        "library",
                        format!("module `{}` of `{name}`", m.module),
                        "a projection of this model",
                    ));
                }
            }
        }
        Ok(Self {
            base,
            library,
            plugin,
            top_p,
        })
    }

    /// The plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The library.
    pub fn library(&self) -> &LoraLibrary {
        &self.library
    }

    /// The top-p threshold.
    pub fn top_p(&self) -> f32 {
        self.top_p
    }

    /// The base model.
    pub fn base(&self) -> &Model {
        &self.base
    }

    /// The plugin's selection for a prompt (token ids).
    pub fn select(&self, prompt: &[u32]) -> Result<Selection> {
        let f = sentence_features(&self.base, prompt)?.expand_dims(0)?;
        let p = host_f32(&self.plugin.probabilities(&f)?)?;
        Ok(top_p_select(&p, self.top_p))
    }

    /// The base with `Σ_k w_k s_k B_k A_k` added to every module any selected
    /// LoRA adapts (one `[out, Σr]·[Σr, in]` product per module).
    pub fn fused_model(&self, selection: &Selection) -> Result<Model> {
        let mut per_module: BTreeMap<&str, (Vec<Array>, Vec<Array>)> = BTreeMap::new();
        for &(k, w) in &selection.weights {
            let (_, modules) = self.library.entries.get(k).ok_or_else(|| {
                Error::invalid(
                    "selection",
                    k,
                    format!("a task below {}", self.library.len()),
                )
            })?;
            for m in modules {
                let e = per_module.entry(m.module.as_str()).or_default();
                e.0.push(m.a.clone());
                e.1.push(m.b.multiply(Array::from_f32(w * m.scale))?);
            }
        }
        let mut model = self.base.clone();
        let mut touched = Vec::new();
        for (module, (a, b)) in per_module {
            let (i, slot) = slot_of(module)
                .ok_or_else(|| Error::invalid("library", module, "a projection module name"))?;
            let a = mlx_rs::ops::concatenate(&a, 0)?;
            let b = mlx_rs::ops::concatenate(&b, 1)?;
            let w = weight_mut(&mut model, i, slot);
            let dtype = w.dtype();
            *w = w.as_type::<f32>()?.add(b.matmul(&a)?)?.as_dtype(dtype)?;
            touched.push(w.clone());
        }
        mlx_rs::transforms::eval(touched.iter())?;
        Ok(model)
    }

    /// Selects and fuses for `prompt` (token ids).
    pub fn fused_for(&self, prompt: &[u32]) -> Result<(Model, Selection)> {
        let s = self.select(prompt)?;
        Ok((self.fused_model(&s)?, s))
    }

    /// Generates a completion of `prompt` (text, encoded with the
    /// tokenizer's special tokens) on the weights fused for it.
    pub fn generate(
        &self,
        tokenizer: &Tokenizer,
        prompt: &str,
        options: &GenerateOptions,
    ) -> Result<(Generation, Selection)> {
        let ids = tokenizer.encode(prompt, true)?;
        let (mut model, s) = self.fused_for(&ids)?;
        let g = Generator::new(&mut model, tokenizer).generate(prompt, options)?;
        Ok((g, s))
    }

    /// Writes the plugin (`plugin.safetensors`), the library
    /// (`library.safetensors`: `<task>/<module>.lora_A` `[r, in]`,
    /// `<task>/<module>.lora_B` `[out, r]`) and `dlp_lora_config.json`
    /// (format, plugin config, top_p, per task and module the scale).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_tensors(&dir.join(DLP_PLUGIN), &self.plugin.parameters(), None)?;
        let mut lib = BTreeMap::new();
        let mut scales = serde_json::Map::new();
        for (name, modules) in &self.library.entries {
            let mut s = serde_json::Map::new();
            for m in modules {
                lib.insert(format!("{name}/{}.lora_A", m.module), m.a.clone());
                lib.insert(format!("{name}/{}.lora_B", m.module), m.b.clone());
                s.insert(m.module.clone(), json!(m.scale));
            }
            scales.insert(name.clone(), serde_json::Value::Object(s));
        }
        write_tensors(&dir.join(DLP_LIBRARY), &lib, None)?;
        let cfg = json!({
            "format": FORMAT,
            "version": 1,
            "plugin": self.plugin.config,
            "top_p": self.top_p,
            "library": self.library.names(),
            "scales": scales,
        });
        let p = dir.join(DLP_CONFIG);
        crate::save::write_json(&p, &cfg)?;
        Ok(dir.to_path_buf())
    }

    /// Reads what [`save`](Self::save) wrote, for the base `model`.
    pub fn load(base: Model, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let p = dir.join(DLP_CONFIG);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let jerr = |m: String| Error::Json {
            path: p.clone(),
            message: m,
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| jerr(e.to_string()))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(jerr(format!(
                "`format` is not \"{FORMAT}\" (not a DLP-LoRA folder)"
            )));
        }
        let pc: PluginConfig = serde_json::from_value(v["plugin"].clone())
            .map_err(|e| jerr(format!("`plugin`: {e}")))?;
        let top_p = v["top_p"]
            .as_f64()
            .ok_or_else(|| jerr("`top_p` is missing or not a number".into()))?
            as f32;
        let names: Vec<String> = serde_json::from_value(v["library"].clone())
            .map_err(|e| jerr(format!("`library`: {e}")))?;
        let mut plugin = Plugin::new(pc)?;
        let pp = dir.join(DLP_PLUGIN);
        let tensors = read_tensors(&pp)?;
        for k in plugin.parameters().keys() {
            if !tensors.contains_key(k) {
                return Err(Error::Safetensors {
                    path: pp.clone(),
                    message: format!("missing tensor `{k}`"),
                });
            }
        }
        plugin
            .set_parameters(tensors.iter().map(|(k, v)| (k.as_str(), v)))
            .map_err(|e| Error::Safetensors {
                path: pp.clone(),
                message: e.to_string(),
            })?;
        let lp = dir.join(DLP_LIBRARY);
        let lib = read_tensors(&lp)?;
        let mut library = LoraLibrary::new();
        for name in &names {
            let scales = v["scales"][name]
                .as_object()
                .ok_or_else(|| jerr(format!("`scales.{name}` is missing")))?;
            let mut modules = Vec::new();
            for (module, s) in scales {
                let scale = s
                    .as_f64()
                    .ok_or_else(|| jerr(format!("`scales.{name}.{module}` is not a number")))?;
                let get = |half: &str| {
                    let key = format!("{name}/{module}.{half}");
                    lib.get(&key).cloned().ok_or_else(|| Error::Safetensors {
                        path: lp.clone(),
                        message: format!("missing tensor `{key}`"),
                    })
                };
                modules.push(PlainLora {
                    module: module.clone(),
                    a: get("lora_A")?,
                    b: get("lora_B")?,
                    scale: scale as f32,
                    magnitude: None,
                });
            }
            library.add(name.clone(), modules)?;
        }
        Self::new(base, library, plugin, top_p)
    }
}
