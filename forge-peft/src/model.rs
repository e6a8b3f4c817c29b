//! A forge-model [`Model`] with adapters on its linear layers.
//!
//! forge-model's layers hold concrete `mlx_rs::nn::Linear` fields, so this
//! wrapper runs the decoder's forward itself (the same ops in the same order
//! as `forge_model::decoder`, checked bit-for-bit by the test
//! `unadapted_forward_is_bit_identical`), calling an [`AdaptedLinear`] for
//! each of the seven projections. Embeddings, norms and the head stay in the
//! wrapped model.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use forge_model::{Model, ModelConfig};
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::module::Module;
use mlx_rs::nn::Linear;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};

use crate::adapter::{AdaptedLinear, Adapter, BaseWeight, same_dtype};
use crate::config::PeftConfig;
use crate::error::{Error, Result};
use crate::methods::{Method, cloq, dora, lora, pissa};
use crate::quant::QuantizedWeight;
use crate::target::Targets;

/// The seven projections of a layer, in forward order: `(block, name)`.
pub const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
];

/// The module name of projection `slot` of layer `layer`.
pub fn module_name(layer: usize, slot: usize) -> String {
    let (block, proj) = PROJECTIONS[slot];
    format!("model.layers.{layer}.{block}.{proj}")
}

fn model_linear(model: &mut Model, layer: usize, slot: usize) -> &mut Linear {
    let l = &mut model.model.layers[layer];
    match slot {
        0 => &mut l.self_attn.q_proj,
        1 => &mut l.self_attn.k_proj,
        2 => &mut l.self_attn.v_proj,
        3 => &mut l.self_attn.o_proj,
        4 => &mut l.mlp.gate_proj,
        5 => &mut l.mlp.up_proj,
        _ => &mut l.mlp.down_proj,
    }
}

/// Per-linear Gram matrices `XᵀX` of the layer inputs (CLoQ calibration).
type Grams = Vec<Vec<Option<Array>>>;

/// A targeted module: `(layer, slot, name, rank, alpha)`.
type Plan = Vec<(usize, usize, String, usize, f32)>;

/// The Gram matrices `XᵀX` of the inputs of every module `config` targets,
/// over the token batches `batches` run through the unadapted `model`
/// (CLoQ's calibration statistics), by module name.
pub fn calibration_grams(
    model: &Model,
    config: &PeftConfig,
    batches: &[Array],
) -> Result<Vec<(String, Array)>> {
    let mut m = PeftModel::plain(model.clone(), config.clone());
    let plan = m.plan()?;
    let g = m.collect_grams(&plan, batches)?;
    Ok(plan
        .into_iter()
        .filter_map(|(i, s, name, ..)| g[i][s].clone().map(|a| (name, a)))
        .collect())
}

/// A model with adapters.
#[derive(Debug, Clone)]
pub struct PeftModel {
    model: Model,
    linears: Vec<Vec<AdaptedLinear>>,
    rope: forge_model::Rope,
    config: PeftConfig,
}

impl PeftModel {
    /// Attaches adapters to `model` as `config` says. CLoQ needs calibration
    /// data: use [`PeftModel::with_calibration`].
    pub fn new(model: Model, config: PeftConfig) -> Result<Self> {
        if config.method == Method::Cloq {
            return Err(Error::invalid(
                "calibration",
                "none",
                "calibration batches for CLoQ (PeftModel::with_calibration)",
            ));
        }
        Self::build(model, config, &[])
    }

    /// Attaches adapters, running `calibration` token batches (`[batch, seq]`)
    /// through the unadapted model first to collect each target's input Gram
    /// `XᵀX` (used by CLoQ; ignored by the other methods).
    pub fn with_calibration(
        model: Model,
        config: PeftConfig,
        calibration: &[Array],
    ) -> Result<Self> {
        if config.method == Method::Cloq && calibration.is_empty() {
            return Err(Error::invalid(
                "calibration",
                "empty",
                "at least one batch for CLoQ",
            ));
        }
        Self::build(model, config, calibration)
    }

    pub(crate) fn plain(mut model: Model, config: PeftConfig) -> Self {
        let n_layers = model.model.layers.len();
        let mut linears = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let mut row = Vec::with_capacity(7);
            for slot in 0..7 {
                let lin = model_linear(&mut model, i, slot);
                row.push(AdaptedLinear::new(
                    lin.weight.value.clone(),
                    lin.bias.value.clone(),
                ));
            }
            linears.push(row);
        }
        let c = model.config();
        let rope = forge_model::Rope::new(c.head_dim, c.rope_theta, c.rope_scaling);
        Self {
            model,
            linears,
            rope,
            config,
        }
    }

    /// Targeted modules: `(layer, slot, name, rank, alpha)`.
    fn plan(&self) -> Result<Plan> {
        let targets = Targets::compile(&self.config.targets, self.config.layers)?;
        let mut plan = Vec::new();
        for i in 0..self.linears.len() {
            for slot in 0..7 {
                let name = module_name(i, slot);
                if let Some((r, a)) = targets.lookup(&name, i) {
                    plan.push((
                        i,
                        slot,
                        name,
                        r.unwrap_or(self.config.rank),
                        a.unwrap_or(self.config.alpha),
                    ));
                }
            }
        }
        if plan.is_empty() {
            return Err(Error::NoTargets {
                patterns: self
                    .config
                    .targets
                    .iter()
                    .map(|t| t.pattern.clone())
                    .collect(),
            });
        }
        Ok(plan)
    }

    fn collect_grams(&mut self, plan: &Plan, batches: &[Array]) -> Result<Grams> {
        let mut g: Grams = vec![vec![None; 7]; self.linears.len()];
        for (i, slot, ..) in plan {
            let d = self.linears[*i][*slot].base.shape()[1];
            g[*i][*slot] = Some(mlx_rs::ops::zeros::<f32>(&[d, d])?);
        }
        for batch in batches {
            self.forward_impl(batch, Some(&mut g))?;
        }
        Ok(g)
    }

    fn build(model: Model, config: PeftConfig, calibration: &[Array]) -> Result<Self> {
        config.validate()?;
        let mut this = Self::plain(model, config);
        let plan = this.plan()?;
        let grams = if this.config.method == Method::Cloq && !calibration.is_empty() {
            Some(this.collect_grams(&plan, calibration)?)
        } else {
            None
        };
        for (i, slot, name, rank, alpha) in plan {
            let gram = grams.as_ref().and_then(|g| g[i][slot].clone());
            this.attach(i, slot, &name, rank, alpha, gram.as_ref())?;
            // Free the wrapped model's copy of a replaced base weight.
            let [o, n] = this.linears[i][slot].base.shape();
            model_linear(&mut this.model, i, slot).weight.value =
                mlx_rs::ops::zeros::<f32>(&[o, n])?;
        }
        Ok(this)
    }

    fn attach(
        &mut self,
        i: usize,
        slot: usize,
        name: &str,
        rank: usize,
        alpha: f32,
        gram: Option<&Array>,
    ) -> Result<()> {
        let c = self.config.clone();
        let lin = &mut self.linears[i][slot];
        // The initialisations work in f32; a dense base keeps the model's
        // own dtype (a bf16 model stays bf16: its frozen products and the
        // activations they feed stay half the size, on bf16 kernels).
        let dense = lin.base.dense()?;
        let model_dtype = dense.dtype();
        let w = dense.as_type::<f32>()?;
        let [out, inp] = [w.dim(0) as usize, w.dim(1) as usize];
        if rank > out.min(inp) {
            return Err(Error::invalid(
                "rank",
                format!("{rank} for `{name}`"),
                format!("at most {} (min of its shape [{out}, {inp}])", out.min(inp)),
            ));
        }
        let scale = c.method.scale(rank, alpha);
        let quant = |m: &Array| -> Result<BaseWeight> {
            Ok(match c.quantized_base {
                Some(spec) => BaseWeight::Quantized(QuantizedWeight::quantize(m, spec, name)?),
                None => BaseWeight::Dense(same_dtype(m.clone(), model_dtype)?),
            })
        };
        let (a, b, base, init, magnitude) = match c.method {
            Method::Lora | Method::RsLora | Method::Dora => {
                let (a, b) = lora::init(name, rank, inp, out, c.seed)?;
                let base = quant(&w)?;
                let magnitude = if c.method == Method::Dora {
                    Some(dora::row_norms(&base.dense()?.as_type::<f32>()?)?)
                } else {
                    None
                };
                (a, b, base, None, magnitude)
            }
            Method::Pissa => {
                let (a, b, res) = pissa::init(name, &w, rank, scale, c.svd, c.seed)?;
                (a.clone(), b.clone(), quant(&res)?, Some((a, b)), None)
            }
            Method::Cloq => {
                let base = quant(&w)?;
                let delta = w.subtract(base.dense()?)?;
                let gram = gram.ok_or_else(|| {
                    Error::invalid(
                        "calibration",
                        format!("missing for `{name}`"),
                        "a Gram matrix",
                    )
                })?;
                let (a, b) = cloq::init(&delta, gram, rank, scale, c.cloq_lambda)?;
                (a.clone(), b.clone(), base, Some((a, b)), None)
            }
        };
        mlx_rs::transforms::eval([&a, &b])?;
        if let BaseWeight::Dense(w) = &base {
            // Materialise the cast now, so the f32 copy is freed here.
            w.eval()?;
        }
        lin.base = base;
        lin.adapter = Some(Adapter {
            method: c.method,
            rank,
            alpha,
            scale,
            a,
            b,
            magnitude,
            init,
            detach_norm: c.dora_detach_norm,
        });
        Ok(())
    }

    /// The adapter configuration.
    pub fn config(&self) -> &PeftConfig {
        &self.config
    }

    /// The wrapped model's runtime configuration.
    pub fn model_config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// Every projection with its module name, in layer and forward order.
    pub fn modules(&self) -> impl Iterator<Item = (String, &AdaptedLinear)> {
        self.linears.iter().enumerate().flat_map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(move |(s, l)| (module_name(i, s), l))
        })
    }

    /// The projection called `name` (`model.layers.0.self_attn.q_proj`).
    pub fn module(&self, name: &str) -> Option<&AdaptedLinear> {
        let rest = name.strip_prefix("model.layers.")?;
        let (i, rest) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let slot = PROJECTIONS
            .iter()
            .position(|(b, p)| rest == format!("{b}.{p}"))?;
        self.linears.get(i)?.get(slot)
    }

    pub(crate) fn module_mut(&mut self, name: &str) -> Option<&mut AdaptedLinear> {
        let rest = name.strip_prefix("model.layers.")?;
        let (i, rest) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let slot = PROJECTIONS
            .iter()
            .position(|(b, p)| rest == format!("{b}.{p}"))?;
        self.linears.get_mut(i)?.get_mut(slot)
    }

    /// The trainable arrays by name: `<module>.lora_A`, `<module>.lora_B`
    /// and (DoRA) `<module>.lora_magnitude`.
    pub fn trainable_parameters(&self) -> BTreeMap<String, Array> {
        let mut out = BTreeMap::new();
        for (name, lin) in self.modules() {
            if let Some(ad) = &lin.adapter {
                out.insert(format!("{name}.lora_A"), ad.a.clone());
                out.insert(format!("{name}.lora_B"), ad.b.clone());
                if let Some(m) = &ad.magnitude {
                    out.insert(format!("{name}.lora_magnitude"), m.clone());
                }
            }
        }
        out
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.trainable_parameters().values().map(|a| a.size()).sum()
    }

    /// Sets trainable arrays by the names of [`trainable_parameters`](Self::trainable_parameters).
    pub fn set_trainable<'a>(
        &mut self,
        params: impl IntoIterator<Item = (&'a str, &'a Array)>,
    ) -> Result<()> {
        for (key, value) in params {
            let (module, field) = key.rsplit_once('.').ok_or_else(|| {
                Error::invalid("parameter", key, "`<module>.lora_A|lora_B|lora_magnitude`")
            })?;
            let ad = self
                .module_mut(module)
                .and_then(|l| l.adapter.as_mut())
                .ok_or_else(|| {
                    Error::invalid("parameter", key, "the name of an adapter parameter")
                })?;
            let slot = match field {
                "lora_A" => &mut ad.a,
                "lora_B" => &mut ad.b,
                "lora_magnitude" => ad.magnitude.get_or_insert_with(|| value.clone()),
                _ => {
                    return Err(Error::invalid(
                        "parameter",
                        key,
                        "`<module>.lora_A|lora_B|lora_magnitude`",
                    ));
                }
            };
            if slot.shape() != value.shape() {
                return Err(Error::Shape {
                    path: "<memory>".into(),
                    name: key.to_string(),
                    found: value.shape().to_vec(),
                    expected: slot.shape().to_vec(),
                });
            }
            *slot = value.clone();
        }
        Ok(())
    }

    pub(crate) fn set_trainable_map(&mut self, params: &HashMap<Rc<str>, Array>) -> Result<()> {
        self.set_trainable(params.iter().map(|(k, v)| (&**k, v)))
    }

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]`.
    pub fn forward(&mut self, tokens: &Array) -> Result<Array> {
        self.forward_impl(tokens, None)
    }

    /// Logits like [`forward`](Self::forward), but under a gradient
    /// transform each decoder block from the first adapted one on is
    /// recomputed in the backward pass instead of keeping its activations
    /// (gradient checkpointing, see `checkpoint.rs`). Same values as
    /// `forward`; the gradients are equal too (test `checkpointed_gradients_equal_plain`).
    pub fn forward_checkpointed(&mut self, tokens: &Array) -> Result<Array> {
        let h = self.hidden_checkpointed(tokens)?;
        self.head(&h)
    }

    /// The last decoder block's output `[b, l, d]` (before the final norm),
    /// checkpointed or not.
    ///
    /// Where attention takes MLX's fused backward pass (CUDA, half
    /// precision; see [`attention_padded`]) and the sequence misses its
    /// tile by at most an eighth, the tokens are padded at the end to the
    /// tile and the output cut back: exact, since every operation is per
    /// position except causal attention, which never lets a position see a
    /// later one. One cut instead of padding and cutting `q, k, v` in every
    /// block (3 fills, 3 copies and their gradients per block and step).
    pub(crate) fn hidden(&mut self, tokens: &Array, checkpoint: bool) -> Result<Array> {
        self.hidden_at(tokens, checkpoint, forge_mlx::default_device_is_cuda())
    }

    /// [`hidden`](Self::hidden), padding to the fused tile when `fused`.
    fn hidden_at(&mut self, tokens: &Array, checkpoint: bool, fused: bool) -> Result<Array> {
        self.check_tokens(tokens)?;
        let len = tokens.dim(1);
        let padded = self.padded_len(len).filter(|_| fused);
        let tokens = match padded {
            Some(p) => mlx_rs::ops::pad(tokens, &[(0, 0), (0, p - len)][..], None, None)?,
            None => tokens.clone(),
        };
        let h = if checkpoint {
            self.hidden_checkpointed(&tokens)?
        } else {
            self.hidden_impl(&tokens, None)?
        };
        Ok(match padded {
            Some(_) => h.index((.., ..len, ..)),
            None => h,
        })
    }

    /// The padded length [`hidden`](Self::hidden) runs at, if it pads.
    fn padded_len(&self, len: i32) -> Option<i32> {
        let dtype = self.model.model.embed_tokens.weight.value.dtype();
        let fits = fused_attention_fits(dtype, self.model.config().head_dim as i32);
        let padded = fused_tile_len(len);
        (len > 1 && padded != len && 8 * (padded - len) <= len && fits).then_some(padded)
    }

    /// The summed next-token loss over the positions `rows` (indices into
    /// the flattened `[b·l]` positions, int32) with targets `targets` (int32,
    /// one per row): the final norm, the output projection and the
    /// cross-entropy run on those rows only, `chunk` rows at a time, so the
    /// `[rows, vocab]` logits never exist for all rows at once and masked
    /// positions (prompt, padding) cost no head compute. Equals
    /// `masked_nll_sum(forward(..))` (test
    /// `selected_chunked_loss_equals_full_logits`).
    ///
    /// Each chunk's projection and cross-entropy is one custom-gradient
    /// function (a fused linear cross-entropy): with `z = hWᵀ` and
    /// `ℓ = Σ_i (logsumexp(z_i) − z_{i,t_i})`, the forward also computes
    ///
    /// ```text
    /// ∂ℓ/∂h = (softmax(z) − onehot(t)) W
    /// ```
    ///
    /// while the logits are at hand, and the backward pass only scales it
    /// by the incoming cotangent. The logits are neither kept for the
    /// backward pass (memory) nor recomputed (as checkpointing would: one
    /// more `[rows, d] × [d, vocab]` product per chunk).
    pub(crate) fn selected_nll_sum(
        &mut self,
        hidden: &Array,
        rows: &Array,
        targets: &Array,
        chunk: usize,
    ) -> Result<Array> {
        let d = hidden.dim(-1);
        let picked = hidden.reshape(&[-1, d])?.take_axis(rows, 0)?;
        let n = rows.dim(0);
        let chunk = chunk.max(1) as i32;
        let mut total: Option<Array> = None;
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            let idx = mlx_rs::ops::arange::<_, i32>(start, end, None)?;
            let h = picked.take_axis(&idx, 0)?;
            let t = targets.take_axis(&idx, 0)?;
            let hn = self.model.model.norm.forward(&h)?;
            let mut head = self.model.lm_head.clone();
            let embed = self.model.model.embed_tokens.clone();
            let f = move |xs: &[Array]| -> Result<Vec<Array>> {
                let (hn, t) = (&xs[0], &xs[1]);
                let mut project = |x: &Array| -> Result<Array> {
                    Ok(match head.as_mut() {
                        Some(head) => head.forward(x)?,
                        None => embed.as_linear(x)?,
                    })
                };
                let raw = project(hn)?;
                let logits = raw.as_type::<f32>()?;
                let lse = logits.logsumexp_axis(-1, true)?;
                let t1 = t.expand_dims(-1)?;
                let nll = lse.subtract(logits.take_along_axis(&t1, -1)?)?.sum(None)?;
                let vocab = logits.dim(-1);
                let onehot = mlx_rs::ops::arange::<_, i32>(0, vocab, None)?
                    .expand_dims(0)?
                    .eq(&t1)?
                    .as_type::<f32>()?;
                let dlogits = logits
                    .subtract(&lse)?
                    .exp()?
                    .subtract(&onehot)?
                    .as_dtype(raw.dtype())?;
                let (_, g) = mlx_rs::transforms::fallible_vjp(
                    |x: &[Array]| {
                        project(&x[0]).map(|y| vec![y]).map_err(|e| match e {
                            Error::Mlx(e) => e,
                            other => mlx_rs::error::Exception::custom(other.to_string()),
                        })
                    },
                    std::slice::from_ref(hn),
                    &[dlogits],
                )?;
                let g = g
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::Unsupported("no head gradient".into()))?;
                Ok(vec![nll, g])
            };
            let vjp = |primals: &[Array], cot: &[Array], out: &[Array]| -> Result<Vec<Array>> {
                let g = &out[1];
                Ok(vec![
                    g.multiply(cot[0].as_dtype(g.dtype())?)?,
                    mlx_rs::ops::zeros_like(&primals[1])?,
                ])
            };
            let part = crate::checkpoint::custom_vjp(Box::new(f), Box::new(vjp), &[hn, t])?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Unsupported("the loss head returned nothing".into()))?;
            total = Some(match total {
                Some(t) => t.add(&part)?,
                None => part,
            });
            start = end;
        }
        Ok(total.unwrap_or_else(|| Array::from_f32(0.0)))
    }

    fn hidden_checkpointed(&mut self, tokens: &Array) -> Result<Array> {
        self.check_tokens(tokens)?;
        let ctx = BlockCtx::new(self.model.config(), tokens);
        let first = self
            .linears
            .iter()
            .position(|row| row.iter().any(|l| l.adapter.is_some()))
            .unwrap_or(self.linears.len());
        let mut h = self.model.model.embed_tokens.forward(tokens)?;
        for (i, layer) in self.model.model.layers.iter_mut().enumerate() {
            if i < first {
                h = block(layer, &self.linears[i], &self.rope, &h, ctx, &mut |_, _| {
                    Ok(())
                })?;
                continue;
            }
            // Everything the gradient reaches is an explicit input: h, then
            // each adapter's A, B (and DoRA magnitude) in slot order.
            let mut inputs = vec![h.clone()];
            for l in &self.linears[i] {
                if let Some(ad) = &l.adapter {
                    inputs.push(ad.a.clone());
                    inputs.push(ad.b.clone());
                    if let Some(m) = &ad.magnitude {
                        inputs.push(m.clone());
                    }
                }
            }
            let mut own_layer = layer.clone();
            let mut own_lin = self.linears[i].clone();
            let rope = self.rope.clone();
            let f = move |xs: &[Array]| -> Result<Vec<Array>> {
                let mut k = 1;
                for l in &mut own_lin {
                    if let Some(ad) = l.adapter.as_mut() {
                        ad.a = xs[k].clone();
                        ad.b = xs[k + 1].clone();
                        k += 2;
                        if let Some(m) = ad.magnitude.as_mut() {
                            *m = xs[k].clone();
                            k += 1;
                        }
                    }
                }
                Ok(vec![block(
                    &mut own_layer,
                    &own_lin,
                    &rope,
                    &xs[0],
                    ctx,
                    &mut |_, _| Ok(()),
                )?])
            };
            h = crate::checkpoint::checkpointed(Box::new(f), &inputs)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Unsupported("checkpointed block returned nothing".into()))?;
        }
        Ok(h)
    }

    fn check_tokens(&self, tokens: &Array) -> Result<()> {
        if tokens.ndim() != 2 {
            return Err(Error::invalid(
                "tokens",
                format!("shape {:?}", tokens.shape()),
                "a [batch, seq] array",
            ));
        }
        Ok(())
    }

    fn head(&mut self, h: &Array) -> Result<Array> {
        let h = self.model.model.norm.forward(h)?;
        Ok(match &mut self.model.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.model.model.embed_tokens.as_linear(&h)?,
        })
    }

    fn forward_impl(&mut self, tokens: &Array, grams: Option<&mut Grams>) -> Result<Array> {
        let h = self.hidden_impl(tokens, grams)?;
        self.head(&h)
    }

    fn hidden_impl(&mut self, tokens: &Array, mut grams: Option<&mut Grams>) -> Result<Array> {
        self.check_tokens(tokens)?;
        let ctx = BlockCtx::new(self.model.config(), tokens);
        let mut h = self.model.model.embed_tokens.forward(tokens)?;
        for (i, layer) in self.model.model.layers.iter_mut().enumerate() {
            let mut capture = |slot: usize, x: &Array| -> Result<()> {
                if let Some(g) = grams.as_deref_mut()
                    && let Some(acc) = g[i][slot].as_mut()
                {
                    let d = x.dim(-1);
                    let x2 = x.reshape(&[-1, d])?.as_type::<f32>()?;
                    *acc = acc.add(x2.t().matmul(&x2)?)?;
                    acc.eval()?;
                }
                Ok(())
            };
            h = block(layer, &self.linears[i], &self.rope, &h, ctx, &mut capture)?;
        }
        Ok(h)
    }

    /// Fuses every adapter into its base (dequantizing a quantized base),
    /// keeping the old base for [`unfuse`](Self::unfuse).
    pub fn fuse(&mut self) -> Result<()> {
        for row in &mut self.linears {
            for l in row {
                l.fuse()?;
            }
        }
        Ok(())
    }

    /// Undoes [`fuse`](Self::fuse).
    pub fn unfuse(&mut self) {
        for row in &mut self.linears {
            for l in row {
                l.unfuse();
            }
        }
    }

    /// A plain forge-model [`Model`] whose projections hold the merged
    /// weights `W'` (f32): for generation, evaluation and GGUF export.
    pub fn merged_model(&self) -> Result<Model> {
        let mut m = self.model.clone();
        for (i, row) in self.linears.iter().enumerate() {
            for (slot, l) in row.iter().enumerate() {
                let w = l.merged_weight()?;
                model_linear(&mut m, i, slot).weight.value = w;
            }
        }
        Ok(m)
    }
}

/// Shapes and constants of one forward pass.
#[derive(Debug, Clone, Copy)]
struct BlockCtx {
    nh: i32,
    nkv: i32,
    hd: i32,
    scale: f32,
    bsz: i32,
    len: i32,
    /// Attention through MLX's own fused backward pass (see [`attention`]):
    /// on a CUDA GPU, where MLX 0.32 has one (cuDNN).
    fused_backward: bool,
}

impl BlockCtx {
    fn new(c: &ModelConfig, tokens: &Array) -> Self {
        Self {
            nh: c.num_heads as i32,
            nkv: c.num_kv_heads as i32,
            hd: c.head_dim as i32,
            scale: (c.head_dim as f32).powf(-0.5),
            bsz: tokens.dim(0),
            len: tokens.dim(1),
            fused_backward: forge_mlx::default_device_is_cuda(),
        }
    }
}

/// One decoder block (the same ops, in the same order, as
/// `forge_model::decoder`), with an adapted linear per projection;
/// `capture(slot, x)` sees each projection's input (CLoQ calibration).
fn block(
    layer: &mut forge_model::DecoderLayer,
    lin: &[AdaptedLinear],
    rope: &forge_model::Rope,
    h: &Array,
    c: BlockCtx,
    capture: &mut dyn FnMut(usize, &Array) -> Result<()>,
) -> Result<Array> {
    let normed = layer.input_layernorm.forward(h)?;
    for slot in 0..3 {
        capture(slot, &normed)?;
    }
    let split = |a: Array, heads: i32| -> Result<Array> {
        Ok(a.reshape(&[c.bsz, c.len, heads, c.hd])?
            .transpose_axes(&[0, 2, 1, 3])?)
    };
    let q = split(lin[0].forward(&normed)?, c.nh)?;
    let k = split(lin[1].forward(&normed)?, c.nkv)?;
    let v = split(lin[2].forward(&normed)?, c.nkv)?;
    let q = rope.apply(&q, 0)?;
    let k = rope.apply(&k, 0)?;
    let att = attention(&q, &k, &v, c)?;
    let att = att
        .transpose_axes(&[0, 2, 1, 3])?
        .reshape(&[c.bsz, c.len, c.nh * c.hd])?;
    capture(3, &att)?;
    let h = h.add(lin[3].forward(&att)?)?;
    let normed = layer.post_attention_layernorm.forward(&h)?;
    capture(4, &normed)?;
    capture(5, &normed)?;
    let gate = lin[4].forward(&normed)?;
    let silu = gate.multiply(mlx_rs::ops::sigmoid(&gate)?)?;
    let up = lin[5].forward(&normed)?;
    let act = silu.multiply(&up)?;
    capture(6, &act)?;
    Ok(h.add(lin[6].forward(&act)?)?)
}

/// Causal grouped-query attention `O = softmax(s·QKᵀ + M) V` (`M` 0 on and
/// below the diagonal, −∞ above), computed by MLX's fused attention kernel,
/// with a hand-written backward pass. With `P` the attention weights, `Ō`
/// the output cotangent and `δ_i = Σ_d Ō_id O_id` (Dao et al. 2022,
/// *FlashAttention*, arXiv:2205.14135, §B.2: `δ = rowsum(P ⊙ dP)` equals
/// `rowsum(Ō ⊙ O)`):
///
/// ```text
/// dV = Pᵀ Ō        dP = Ō Vᵀ        dS = P ⊙ (dP − δ)
/// dQ = s·dS K      dK = s·dSᵀ Q
/// ```
///
/// summed over the query heads that share a key/value head.
///
/// On a CUDA GPU in half precision the backward pass is MLX's own fused one
/// instead ([`attention_padded`]: cuDNN's flash-attention backward kernel).
/// Elsewhere (CPU, Metal, f32) MLX 0.32 differentiates its fused attention
/// through the unfused fallback graph — a broadcast select masking the
/// `[b, h, l, l]` scores and products against key/value heads broadcast
/// over their query groups; here the keys and values are expanded to all
/// heads (contiguous batched products), the mask and the scale ride in one
/// `addmm` (`s·QKᵀ + M`), and `δ` is a `[b, h, l]` row sum instead of one
/// over the scores. (On an H200 this path still ran its score products on
/// cuBLAS's unaligned fallback kernel, 13.5 ms of a 100 ms Llama-1B-like
/// step, as MLX's own fallback did; hence the fused path there.)
fn attention(q: &Array, k: &Array, v: &Array, c: BlockCtx) -> Result<Array> {
    if c.len <= 1 {
        return Ok(mlx_rs::fast::scaled_dot_product_attention(
            q, k, v, c.scale, None, None,
        )?);
    }
    if c.fused_backward && fused_attention_fits(q.dtype(), c.hd) {
        return attention_padded(q, k, v, c);
    }
    let f = move |xs: &[Array]| -> Result<Vec<Array>> {
        Ok(vec![mlx_rs::fast::scaled_dot_product_attention(
            &xs[0],
            &xs[1],
            &xs[2],
            c.scale,
            ScaledDotProductAttentionMask::Causal,
            None,
        )?])
    };
    let vjp = move |p: &[Array], cot: &[Array], out: &[Array]| -> Result<Vec<Array>> {
        // (q, k, v and the cotangent arrive as transposed views of
        // [b, l, h, d] activations; MLX's matmul copies such batched
        // operands to row-major itself, so no explicit copy here.)
        let (q, k, v) = (p[0].clone(), p[1].clone(), p[2].clone());
        let (d_o, o) = (&cot[0], &out[0]);
        let (b, l, hd) = (c.bsz, c.len, c.hd);
        let rep = c.nh / c.nkv;
        // [b, nkv, l, hd] → [b, nh, l, hd], query head h reading kv head h / rep.
        let expand = |t: &Array| -> Result<Array> {
            if rep == 1 {
                return Ok(t.clone());
            }
            Ok(
                mlx_rs::ops::broadcast_to(t.expand_dims(2)?, &[b, c.nkv, rep, l, hd])?
                    .reshape(&[b, c.nh, l, hd])?,
            )
        };
        let fold = |t: Array| -> Result<Array> {
            if rep == 1 {
                return Ok(t);
            }
            Ok(t.reshape(&[b, c.nkv, rep, l, hd])?.sum_axis(2, false)?)
        };
        let (ke, ve) = (expand(&k)?, expand(&v)?);
        let dt = q.dtype();
        let pos = mlx_rs::ops::arange::<_, i32>(0, l, None)?;
        let future = pos.expand_dims(0)?.gt(pos.expand_dims(1)?)?;
        let mask = mlx_rs::ops::select(
            &future,
            Array::from_f32(f32::NEG_INFINITY).as_dtype(dt)?,
            Array::from_f32(0.0).as_dtype(dt)?,
        )?;
        let scores = mlx_rs::ops::addmm(&mask, &q, ke.swap_axes(-1, -2)?, c.scale, 1.0)?;
        let probs = mlx_rs::ops::softmax_axis(&scores, -1, true)?;
        let dv = probs.swap_axes(-1, -2)?.matmul(d_o)?;
        let dp = d_o.matmul(ve.swap_axes(-1, -2)?)?;
        let delta = d_o
            .as_type::<f32>()?
            .multiply(o.as_type::<f32>()?)?
            .sum_axis(-1, true)?;
        let ds = probs
            .multiply(dp.subtract(&delta)?)?
            .multiply(Array::from_f32(c.scale))?
            .as_dtype(dt)?;
        let dq = ds.matmul(&ke)?;
        let dk = ds.swap_axes(-1, -2)?.matmul(&q)?;
        Ok(vec![dq, fold(dk)?, fold(dv)?])
    };
    crate::checkpoint::custom_vjp(
        Box::new(f),
        Box::new(vjp),
        &[q.clone(), k.clone(), v.clone()],
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Error::Unsupported("attention returned nothing".into()))
}

/// The sequence tile of MLX 0.32's fused attention backward pass on CUDA:
/// MLX differentiates its fused attention with cuDNN's flash-attention
/// backward kernel only when the query length is a multiple of it, and
/// otherwise through the unfused fallback graph.
const FUSED_ATTENTION_TILE: i32 = 128;

/// `len` rounded up to [`FUSED_ATTENTION_TILE`].
fn fused_tile_len(len: i32) -> i32 {
    (len + FUSED_ATTENTION_TILE - 1) / FUSED_ATTENTION_TILE * FUSED_ATTENTION_TILE
}

/// Whether MLX 0.32's cuDNN attention takes this dtype and head size
/// (bf16/f16, head size a multiple of 8 up to 128); the device is the
/// caller's check.
fn fused_attention_fits(dtype: Dtype, head_dim: i32) -> bool {
    matches!(dtype, Dtype::Bfloat16 | Dtype::Float16) && head_dim % 8 == 0 && head_dim <= 128
}

/// Causal attention through MLX's fused kernels in both directions (cuDNN
/// flash attention forward and backward on CUDA; Dao 2023, *FlashAttention-2*,
/// arXiv:2307.08691), with the sequence zero-padded at its end to a multiple
/// of [`FUSED_ATTENTION_TILE`] and the output cut back.
///
/// Exact: under the causal mask `M_ij = −∞ for j > i`, a padded key `j ≥ L`
/// is seen only by padded queries `i ≥ L`, so rows `i < L` of
/// `O = softmax(s·QKᵀ + M) V` are unchanged; the cut output's cotangent is
/// zero on the padded rows, so they add nothing to `dK`, `dV` (and `dQ` of
/// the padding is dropped by the pad's own gradient).
///
/// Why: a training step feeds `L = len − 1` positions (511 for 512-token
/// rows), which misses the tile, so MLX (and mlx-lm, with the same rows)
/// ran the unfused backward — score products on an unaligned cuBLAS kernel,
/// a softmax and its gradient over `[b, h, L, L]`: ~25 ms of a ~100 ms
/// Llama-1B-like step traced on an H200 (docs/benchmarks.md).
fn attention_padded(q: &Array, k: &Array, v: &Array, c: BlockCtx) -> Result<Array> {
    let padded = fused_tile_len(c.len);
    let pad = |t: &Array| -> Result<Array> {
        if padded == c.len {
            return Ok(t.clone());
        }
        let widths = [(0, 0), (0, 0), (0, padded - c.len), (0, 0)];
        Ok(mlx_rs::ops::pad(t, &widths[..], None, None)?)
    };
    let o = mlx_rs::fast::scaled_dot_product_attention(
        pad(q)?,
        pad(k)?,
        pad(v)?,
        c.scale,
        ScaledDotProductAttentionMask::Causal,
        None,
    )?;
    if padded == c.len {
        return Ok(o);
    }
    Ok(o.index((.., .., ..c.len, ..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in (−1, 1), built on the host.
    fn data(shape: &[i32], seed: u64) -> Array {
        let n: i32 = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Array::from_slice(&v, shape)
    }

    /// The unfused reference: repeat the kv heads, mask, softmax, product.
    fn reference(q: &Array, k: &Array, v: &Array, c: BlockCtx) -> Result<Array> {
        let rep = c.nh / c.nkv;
        let grow = |t: &Array| -> Result<Array> {
            Ok(
                mlx_rs::ops::broadcast_to(t.expand_dims(2)?, &[c.bsz, c.nkv, rep, c.len, c.hd])?
                    .reshape(&[c.bsz, c.nh, c.len, c.hd])?,
            )
        };
        let s = q
            .matmul(grow(k)?.swap_axes(-1, -2)?)?
            .multiply(Array::from_f32(c.scale))?;
        let pos = mlx_rs::ops::arange::<_, i32>(0, c.len, None)?;
        let keep = pos.expand_dims(0)?.le(pos.expand_dims(1)?)?;
        let s = mlx_rs::ops::select(&keep, &s, Array::from_f32(f32::NEG_INFINITY))?;
        Ok(mlx_rs::ops::softmax_axis(&s, -1, true)?.matmul(grow(v)?)?)
    }

    /// Largest `|ours − theirs|` over largest `|theirs|`, in f32.
    fn rel_err(a: &Array, b: &Array) -> Result<f32> {
        let (a, b) = (a.as_type::<f32>()?, b.as_type::<f32>()?);
        let d = a.subtract(&b)?.abs()?.max(None)?.item_cast::<f32>();
        let m = b.abs()?.max(None)?.item_cast::<f32>();
        Ok(d / m)
    }

    /// Output and `dq, dk, dv` of `path` against autodiff of [`reference`]
    /// in f32, inputs of `dtype`; returns the largest relative error.
    fn check_attention(
        path: fn(&Array, &Array, &Array, BlockCtx) -> Result<Array>,
        c: BlockCtx,
        dtype: Dtype,
    ) -> Result<f32> {
        let (b, l, hd) = (c.bsz, c.len, c.hd);
        let q = data(&[b, c.nh, l, hd], 1);
        let k = data(&[b, c.nkv, l, hd], 2);
        let v = data(&[b, c.nkv, l, hd], 3);
        let cot = data(&[b, c.nh, l, hd], 4);
        let cast = |t: &Array| t.as_dtype(dtype);
        let ours = mlx_rs::transforms::fallible_vjp(
            |x: &[Array]| {
                path(&x[0], &x[1], &x[2], c)
                    .map(|y| vec![y])
                    .map_err(to_exc)
            },
            &[cast(&q)?, cast(&k)?, cast(&v)?],
            &[cast(&cot)?],
        )?;
        let theirs = mlx_rs::transforms::fallible_vjp(
            |x: &[Array]| {
                reference(&x[0], &x[1], &x[2], c)
                    .map(|y| vec![y])
                    .map_err(to_exc)
            },
            &[q, k, v],
            &[cot],
        )?;
        let mut worst = rel_err(&ours.0[0], &theirs.0[0])?;
        for (i, name) in ["dq", "dk", "dv"].iter().enumerate() {
            assert_eq!(ours.1[i].shape(), theirs.1[i].shape(), "{name}");
            worst = worst.max(rel_err(&ours.1[i], &theirs.1[i])?);
        }
        Ok(worst)
    }

    fn ctx(nh: i32, nkv: i32, hd: i32, len: i32, fused_backward: bool) -> BlockCtx {
        BlockCtx {
            nh,
            nkv,
            hd,
            scale: (hd as f32).powf(-0.5),
            bsz: 2,
            len,
            fused_backward,
        }
    }

    #[test]
    fn attention_gradients_equal_autodiff_of_the_unfused_graph() -> Result<()> {
        for (nh, nkv) in [(4, 2), (4, 4), (6, 1)] {
            let e = check_attention(attention, ctx(nh, nkv, 8, 7, false), Dtype::Float32)?;
            assert!(e < 1e-5, "heads {nh}/{nkv}: relative error {e:.2e}");
        }
        Ok(())
    }

    /// The padded path is exact: lengths off the tile (130 → 256, 1 row of
    /// padding short of it: 255 → 256) and on it (128), GQA and not.
    #[test]
    fn padding_to_the_fused_tile_changes_nothing() -> Result<()> {
        for (nh, nkv, len) in [(4, 2, 130), (4, 4, 255), (6, 1, 128)] {
            let e = check_attention(attention_padded, ctx(nh, nkv, 8, len, true), Dtype::Float32)?;
            assert!(
                e < 1e-5,
                "heads {nh}/{nkv}, len {len}: relative error {e:.2e}"
            );
        }
        Ok(())
    }

    /// In bf16 through whichever path the default device takes (on CUDA:
    /// padding and cuDNN's fused backward; elsewhere the hand-written one),
    /// within bf16's rounding of the f32 reference.
    #[test]
    fn bf16_attention_on_the_default_device_matches_f32() -> Result<()> {
        let fused = forge_mlx::default_device_is_cuda();
        for (nh, nkv, len) in [(4, 2, 130), (2, 2, 128)] {
            let e = check_attention(attention, ctx(nh, nkv, 64, len, fused), Dtype::Bfloat16)?;
            assert!(
                e < 2e-2,
                "fused {fused}, heads {nh}/{nkv}, len {len}: relative error {e:.2e}"
            );
        }
        Ok(())
    }

    /// Token-level padding: only where it costs at most an eighth, and the
    /// hidden states of the real positions are unchanged (bf16 tiny model).
    #[test]
    fn padding_the_tokens_to_the_fused_tile_changes_nothing() -> Result<()> {
        use mlx_rs::module::ModuleParameters;
        let config = forge_model::tiny_config(forge_model::Architecture::Llama);
        let mut m = forge_model::random_model(config, 3)?;
        for (_, p) in m.parameters_mut().flatten().iter_mut() {
            **p = p.as_dtype(Dtype::Bfloat16)?;
        }
        let cfg = PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(1);
        let mut peft = PeftModel::new(m, cfg)?;
        assert_eq!(peft.padded_len(120), Some(128));
        assert_eq!(peft.padded_len(511), Some(512));
        assert_eq!(peft.padded_len(100), None, "28 of 100: too costly");
        assert_eq!(peft.padded_len(256), None, "already on the tile");
        assert_eq!(peft.padded_len(1), None);
        let ids: Vec<i32> = (0..240).map(|i| (i * 37 + 5) % 272).collect();
        let tokens = Array::from_slice(&ids, &[2, 120]);
        for checkpoint in [false, true] {
            let padded = peft.hidden_at(&tokens, checkpoint, true)?;
            let plain = peft.hidden_at(&tokens, checkpoint, false)?;
            assert_eq!(padded.shape(), &[2, 120, 64]);
            let e = rel_err(&padded, &plain)?;
            assert!(e < 1e-2, "checkpoint {checkpoint}: relative error {e:.2e}");
        }
        Ok(())
    }

    fn to_exc(e: Error) -> mlx_rs::error::Exception {
        match e {
            Error::Mlx(e) => e,
            other => mlx_rs::error::Exception::custom(other.to_string()),
        }
    }
}
