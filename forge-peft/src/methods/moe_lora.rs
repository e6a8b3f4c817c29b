//! MoELoRA: LoRA experts behind a learned router.
//!
//! Luo et al. 2024, *MoELoRA: Contrastive Learning Guided Mixture of Experts
//! on Parameter-Efficient Fine-Tuning for Large Language Models*
//! (arXiv:2402.12851), §3: every adapted linear layer gets `E` LoRA experts
//! `(A_e, B_e)` and a gate over the token representation `x`:
//!
//! ```text
//! h = W₀x + b + s · Σ_e G(x)_e · B_e A_e x
//! G(x) = softmax(W_g x)                  (dense gating)
//! G(x) = softmax(TopK(W_g x, k))         (top-k: logits outside the k largest → −∞)
//! ```
//!
//! with `W_g ∈ ℝ^{E×in}`, `A_e ∈ ℝ^{r×in}`, `B_e ∈ ℝ^{out×r}`, `s = α/r`.
//! Expert 0 is initialised exactly like LoRA for the module (same seed, same
//! name), experts `e > 0` from the name `<module>.experts.<e>`; every `B_e = 0`,
//! so the output equals the base at step 0. The router is Kaiming-uniform
//! (`U(±1/√in)`), seeded from `<module>.router`. With `E = 1` the gate is 1
//! and MoELoRA is LoRA (test `one_expert_equals_lora`).
//!
//! Two auxiliary losses are added to the language-model loss through the
//! trainer's auxiliary-loss hook ([`crate::Trainable::hidden_with_aux`]),
//! averaged over the adapted modules:
//!
//! - **Contrastive** (the paper's §3.2: outputs of the same expert are
//!   positives, outputs of other experts negatives, so the experts learn
//!   distinct features). With `o_{t,e} = B_e A_e x_t` and
//!   `z = o / √(‖o‖² + δ²)`, each token `t` is paired with `t' = t + ⌊N/2⌋ mod N`
//!   (N tokens, at most `contrastive_tokens` of the batch) and
//!   `L_c = −1/(N·E) Σ_t Σ_e log softmax_j(z_{t,e}·z_{t',j} / τ)[e]`
//!   (InfoNCE: one positive — expert `e` on the other token — against the
//!   `E − 1` other experts on it). `L_c = 0` for `E = 1`; δ keeps the
//!   normalisation smooth while `B = 0`.
//! - **Load balancing** (Fedus, Zoph & Shazeer 2022, *Switch Transformers*,
//!   arXiv:2101.03961, eq. 4): `L_b = E · Σ_e f_e · P_e`, `f_e` the fraction
//!   of routing slots sent to expert `e` (top-k, or the arg-max for dense
//!   gating; not differentiable), `P_e` the mean router probability of `e`
//!   (full softmax). `L_b = 1` for a uniform router.
//!
//! `aux = λ_c · L_c + λ_b · L_b`. Routed experts cannot be merged into one
//! weight (the mixture depends on each token), so [`MoeLoraModel::merged_model`]
//! is an error, and [`MoeLoraModel::export_experts`] writes every expert as a
//! separate PEFT LoRA adapter plus the router.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use forge_model::{CausalLm, DecodeSession, Model, ModelConfig, Rope};
use mlx_rs::Array;
use mlx_rs::fast::ScaledDotProductAttentionMask;
use mlx_rs::module::Module;
use mlx_rs::nn::Linear;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::PeftConfig;
use crate::error::{Error, Result};
use crate::methods::{Method, lora};
use crate::model::{PROJECTIONS, PeftModel, module_name};
use crate::save::{read_tensors, write_tensors};
use crate::target::{TargetRule, Targets};
use crate::train::trainable::Trainable;
use crate::util::{SplitMix64, fnv1a};

/// MoELoRA's weights file.
pub const MOE_WEIGHTS: &str = "moe_lora.safetensors";
/// MoELoRA's config file.
pub const MOE_CONFIG: &str = "moe_lora_config.json";
/// The router file of an expert export.
pub const MOE_ROUTER: &str = "router.safetensors";
const FORMAT: &str = "forge-moe-lora";

/// How tokens are routed to experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Gating {
    /// Every expert, weighted by `softmax(W_g x)`.
    Softmax,
    /// The `k` experts with the largest logits, weighted by the softmax over them.
    TopK {
        /// Experts per token.
        k: usize,
    },
}

/// MoELoRA settings (the serde mirror of `moe_lora_config.json`'s `config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeLoraConfig {
    /// Experts per adapted module.
    pub experts: usize,
    /// Routing.
    pub gating: Gating,
    /// Rank of each expert.
    pub rank: usize,
    /// `α` (scale `α/r`).
    pub alpha: f32,
    /// Target rules, first match wins (per-rule rank/alpha apply to every expert).
    pub targets: Vec<TargetRule>,
    /// Only layers `start..end`.
    pub layers: Option<(usize, usize)>,
    /// Seed of the initialisation.
    pub seed: u64,
    /// `λ_c`, weight of the contrastive loss.
    pub contrastive_weight: f32,
    /// `τ`, temperature of the contrastive loss.
    pub contrastive_temperature: f32,
    /// `δ`, smoothing of the output normalisation.
    pub contrastive_delta: f32,
    /// Tokens of a batch used by the contrastive loss (the first N).
    pub contrastive_tokens: usize,
    /// `λ_b`, weight of the load-balancing loss.
    pub balance_weight: f32,
}

impl MoeLoraConfig {
    /// `experts` experts of rank `rank` with `α = alpha` on `q_proj` and
    /// `v_proj`, dense softmax gating, `λ_c = 1e-3`, `τ = 0.5`, `δ = 1e-2`,
    /// 256 contrastive tokens, `λ_b = 1e-2` (Switch Transformers' α), seed 0.
    pub fn new(experts: usize, rank: usize, alpha: f32) -> Self {
        Self {
            experts,
            gating: Gating::Softmax,
            rank,
            alpha,
            targets: vec![TargetRule::new("q_proj"), TargetRule::new("v_proj")],
            layers: None,
            seed: 0,
            contrastive_weight: 1e-3,
            contrastive_temperature: 0.5,
            contrastive_delta: 1e-2,
            contrastive_tokens: 256,
            balance_weight: 1e-2,
        }
    }

    /// Top-k gating.
    #[must_use]
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.gating = Gating::TopK { k };
        self
    }

    /// Dense softmax gating.
    #[must_use]
    pub fn with_softmax_gating(mut self) -> Self {
        self.gating = Gating::Softmax;
        self
    }

    /// Replaces the targets by these patterns.
    #[must_use]
    pub fn with_targets<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.targets = patterns.into_iter().map(TargetRule::new).collect();
        self
    }

    /// Only layers `start..end`.
    #[must_use]
    pub fn with_layers(mut self, range: std::ops::Range<usize>) -> Self {
        self.layers = Some((range.start, range.end));
        self
    }

    /// The seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Contrastive weight `λ_c` and temperature `τ`.
    #[must_use]
    pub fn with_contrastive(mut self, weight: f32, temperature: f32) -> Self {
        self.contrastive_weight = weight;
        self.contrastive_temperature = temperature;
        self
    }

    /// Load-balancing weight `λ_b`.
    #[must_use]
    pub fn with_balance_weight(mut self, weight: f32) -> Self {
        self.balance_weight = weight;
        self
    }

    /// The equivalent single-adapter LoRA configuration (targets, rank,
    /// alpha, layers, seed): what each exported expert is.
    pub fn lora_config(&self) -> PeftConfig {
        let mut c = PeftConfig::new(Method::Lora, self.rank, self.alpha)
            .with_target_rules(self.targets.clone())
            .with_seed(self.seed);
        c.layers = self.layers;
        c
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.experts == 0 {
            return Err(Error::invalid("experts", 0, "at least 1"));
        }
        if let Gating::TopK { k } = self.gating
            && (k == 0 || k > self.experts)
        {
            return Err(Error::invalid(
                "top_k",
                k,
                format!("between 1 and the number of experts ({})", self.experts),
            ));
        }
        for (name, v) in [
            ("contrastive_weight", self.contrastive_weight),
            ("balance_weight", self.balance_weight),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::invalid(name, v, "a non-negative number"));
            }
        }
        for (name, v) in [
            ("contrastive_temperature", self.contrastive_temperature),
            ("contrastive_delta", self.contrastive_delta),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(Error::invalid(name, v, "a positive number"));
            }
        }
        if self.contrastive_tokens < 2 {
            return Err(Error::invalid(
                "contrastive_tokens",
                self.contrastive_tokens,
                "at least 2",
            ));
        }
        self.lora_config().validate()
    }
}

/// The experts and router of one adapted module.
#[derive(Debug, Clone)]
pub struct Experts {
    /// `[E, r, in]`.
    pub(crate) a: Array,
    /// `[E, out, r]`.
    pub(crate) b: Array,
    /// `W_g`, `[E, in]`.
    pub(crate) router: Array,
    pub(crate) rank: usize,
    pub(crate) alpha: f32,
    pub(crate) scale: f32,
}

impl Experts {
    /// The experts' `lora_A`, `[E, r, in]`.
    pub fn a(&self) -> &Array {
        &self.a
    }
    /// The experts' `lora_B`, `[E, out, r]`.
    pub fn b(&self) -> &Array {
        &self.b
    }
    /// The router `W_g`, `[E, in]`.
    pub fn router(&self) -> &Array {
        &self.router
    }
    /// Rank of each expert.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// The scale `s`.
    pub fn scale(&self) -> f32 {
        self.scale
    }
}

/// A projection with optional routed experts.
#[derive(Debug, Clone)]
struct MoeLinear {
    weight: Array,
    bias: Option<Array>,
    experts: Option<Experts>,
}

/// One module's auxiliary terms `(L_c, L_b)`.
type AuxTerms = (Array, Array);

/// The gate `[N, E]` and the arg-top-k mask `[N, E]` (f32 0/1) for router
/// logits `[N, E]`.
fn gate(logits: &Array, gating: Gating, experts: usize) -> Result<(Array, Array)> {
    let k = match gating {
        Gating::Softmax => None,
        Gating::TopK { k } => Some(k),
    };
    // The k-th largest logit of each row (k = 1 for the dense gate's f_e).
    let kth = |k: usize| -> Result<Array> {
        let sorted = mlx_rs::ops::sort_axis(logits, -1)?;
        let idx = Array::from_slice(&[(experts - k) as i32], &[1]);
        Ok(sorted.take_axis(&idx, -1)?)
    };
    match k {
        Some(k) if k < experts => {
            let keep = logits.ge(&kth(k)?)?;
            let masked = mlx_rs::ops::select(&keep, logits, Array::from_f32(f32::NEG_INFINITY))?;
            let g = mlx_rs::ops::softmax_axis(&masked, -1, true)?;
            Ok((g, keep.as_type::<f32>()?))
        }
        _ => {
            let g = mlx_rs::ops::softmax_axis(logits, -1, true)?;
            let top = if k.is_some() {
                mlx_rs::ops::ones_like(logits)?
            } else {
                logits.ge(&kth(1)?)?.as_type::<f32>()?
            };
            Ok((g, top))
        }
    }
}

impl MoeLinear {
    fn base(&self, x: &Array) -> Result<Array> {
        Ok(match &self.bias {
            // Same op as mlx_rs::nn::Linear.
            Some(b) => mlx_rs::ops::addmm(b, x, self.weight.t(), None, None)?,
            None => x.matmul(self.weight.t())?,
        })
    }

    /// `x` `[…, in]` → `[…, out]`, and the auxiliary terms when asked.
    fn forward(
        &self,
        x: &Array,
        cfg: &MoeLoraConfig,
        aux: bool,
    ) -> Result<(Array, Option<AuxTerms>)> {
        let Some(ex) = &self.experts else {
            return Ok((self.base(x)?, None));
        };
        let e = ex.a.dim(0);
        let r = ex.a.dim(1);
        let din = ex.a.dim(2);
        let dout = ex.b.dim(1);
        let lead: Vec<i32> = x.shape()[..x.ndim() - 1].to_vec();
        let x2 = x.reshape(&[-1, din])?;
        let logits = x2.matmul(ex.router.t())?;
        let (g, top) = gate(&logits, cfg.gating, e as usize)?;
        // u = [N, E·r]: every expert's down-projection in one product.
        let u = x2.matmul(ex.a.reshape(&[e * r, din])?.t())?;
        let gated = u
            .reshape(&[-1, e, r])?
            .multiply(g.expand_dims(-1)?)?
            .reshape(&[-1, e * r])?;
        // B as [E·r, out]: row (e, j) is column j of B_e.
        let b_cat = ex.b.transpose_axes(&[0, 2, 1])?.reshape(&[e * r, dout])?;
        let lora = gated.matmul(&b_cat)?.multiply(Array::from_f32(ex.scale))?;
        let mut out_shape = lead;
        out_shape.push(dout);
        let base = self.base(&x2)?;
        let lora = crate::adapter::same_dtype(lora, base.dtype())?;
        let y = base.add(&lora)?.reshape(&out_shape)?;
        if !aux {
            return Ok((y, None));
        }
        // Load balancing: E · Σ f_e P_e.
        let slots = top.sum(None)?;
        let f = top.sum_axis(0, false)?.divide(&slots)?;
        let p = mlx_rs::ops::softmax_axis(&logits, -1, true)?.mean_axis(0, false)?;
        let balance = f
            .multiply(&p)?
            .sum(None)?
            .multiply(Array::from_f32(e as f32))?;
        // Contrastive: expert outputs o_{t,e} = B_e A_e x_t on the first N tokens.
        let n = (x2.dim(0) as usize).min(cfg.contrastive_tokens) as i32;
        let contrastive = if e > 1 && n >= 2 {
            let idx = mlx_rs::ops::arange::<_, i32>(0, n, None)?;
            let un = u.take_axis(&idx, 0)?.reshape(&[n, e, r])?;
            // [E, N, r] @ [E, r, out] → [E, N, out]
            let o = un
                .transpose_axes(&[1, 0, 2])?
                .matmul(ex.b.transpose_axes(&[0, 2, 1])?)?;
            let delta = cfg.contrastive_delta;
            let norm = o
                .square()?
                .sum_axis(-1, true)?
                .add(Array::from_f32(delta * delta))?
                .sqrt()?;
            let z = o.divide(&norm)?.transpose_axes(&[1, 0, 2])?; // [N, E, out]
            let shift = n / 2;
            let pair: Vec<i32> = (0..n).map(|t| (t + shift) % n).collect();
            let zp = z.take_axis(Array::from_slice(&pair, &[n]), 0)?; // [N, E, out]
            // sim[t, e, j] = z_{t,e} · z_{t',j} / τ
            let sim = z
                .matmul(zp.transpose_axes(&[0, 2, 1])?)?
                .multiply(Array::from_f32(1.0 / cfg.contrastive_temperature))?;
            let lse = sim.logsumexp_axis(-1, false)?; // [N, E]
            let eye = mlx_rs::ops::eye::<f32>(e, None, None)?;
            let diag = sim.multiply(&eye)?.sum_axis(-1, false)?; // [N, E]
            lse.subtract(&diag)?.mean(None)?
        } else {
            Array::from_f32(0.0)
        };
        Ok((y, Some((contrastive, balance))))
    }
}

/// Keys and values of every layer for incremental decoding.
#[derive(Debug, Clone)]
struct Cache {
    layers: Vec<Option<(Array, Array)>>,
    offset: usize,
}

/// A forge-model [`Model`] with MoELoRA experts on its linear layers.
#[derive(Debug, Clone)]
pub struct MoeLoraModel {
    model: Model,
    /// The plain model: final norm, output head, chunked loss.
    head: PeftModel,
    linears: Vec<Vec<MoeLinear>>,
    rope: Rope,
    config: MoeLoraConfig,
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

/// Uniform `U(±1/√in)` `[rows, in]` from a seed and a name.
fn uniform(name: &str, rows: usize, input: usize, seed: u64) -> Array {
    let mut rng = SplitMix64::new(seed ^ fnv1a(name));
    let bound = 1.0 / (input as f64).sqrt();
    let v: Vec<f32> = (0..rows * input)
        .map(|_| (bound * (2.0 * rng.next_f64() - 1.0)) as f32)
        .collect();
    Array::from_slice(&v, &[rows as i32, input as i32])
}

impl MoeLoraModel {
    /// Attaches `config.experts` LoRA experts and a router to every module
    /// `config` targets.
    pub fn new(mut model: Model, config: MoeLoraConfig) -> Result<Self> {
        config.validate()?;
        let targets = Targets::compile(&config.targets, config.layers)?;
        let n_layers = model.model.layers.len();
        let mut linears = Vec::with_capacity(n_layers);
        let mut any = false;
        for i in 0..n_layers {
            let mut row = Vec::with_capacity(7);
            for slot in 0..7 {
                let lin = model_linear(&mut model, i, slot);
                let weight = lin.weight.value.clone();
                let bias = lin.bias.value.clone();
                let name = module_name(i, slot);
                let experts = match targets.lookup(&name, i) {
                    None => None,
                    Some((r, a)) => {
                        any = true;
                        let rank = r.unwrap_or(config.rank);
                        let alpha = a.unwrap_or(config.alpha);
                        Some(init_experts(&name, &weight, rank, alpha, &config)?)
                    }
                };
                row.push(MoeLinear {
                    weight,
                    bias,
                    experts,
                });
            }
            linears.push(row);
        }
        if !any {
            return Err(Error::NoTargets {
                patterns: config.targets.iter().map(|t| t.pattern.clone()).collect(),
            });
        }
        let c = model.config();
        let rope = Rope::new(c.head_dim, c.rope_theta, c.rope_scaling);
        let head = PeftModel::plain(model.clone(), config.lora_config());
        Ok(Self {
            model,
            head,
            linears,
            rope,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MoeLoraConfig {
        &self.config
    }

    /// The wrapped model's runtime configuration.
    pub fn model_config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// Every adapted module's experts, by module name, in layer order.
    pub fn experts(&self) -> impl Iterator<Item = (String, &Experts)> {
        self.linears.iter().enumerate().flat_map(|(i, row)| {
            row.iter()
                .enumerate()
                .filter_map(move |(s, l)| l.experts.as_ref().map(|e| (module_name(i, s), e)))
        })
    }

    /// The trainable arrays: `<module>.experts.lora_A` `[E, r, in]`,
    /// `<module>.experts.lora_B` `[E, out, r]`, `<module>.router.weight` `[E, in]`.
    pub fn trainable_parameters(&self) -> BTreeMap<String, Array> {
        let mut out = BTreeMap::new();
        for (name, ex) in self.experts() {
            out.insert(format!("{name}.experts.lora_A"), ex.a.clone());
            out.insert(format!("{name}.experts.lora_B"), ex.b.clone());
            out.insert(format!("{name}.router.weight"), ex.router.clone());
        }
        out
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.trainable_parameters().values().map(|a| a.size()).sum()
    }

    fn experts_mut(&mut self, module: &str) -> Option<&mut Experts> {
        let rest = module.strip_prefix("model.layers.")?;
        let (i, rest) = rest.split_once('.')?;
        let i: usize = i.parse().ok()?;
        let slot = PROJECTIONS
            .iter()
            .position(|(b, p)| rest == format!("{b}.{p}"))?;
        self.linears.get_mut(i)?.get_mut(slot)?.experts.as_mut()
    }

    /// Sets trainable arrays by the names of
    /// [`trainable_parameters`](Self::trainable_parameters).
    pub fn set_trainable<'a>(
        &mut self,
        params: impl IntoIterator<Item = (&'a str, &'a Array)>,
    ) -> Result<()> {
        const EXPECTED: &str =
            "`<module>.experts.lora_A`, `<module>.experts.lora_B` or `<module>.router.weight`";
        for (key, value) in params {
            let (module, field) = if let Some(m) = key.strip_suffix(".experts.lora_A") {
                (m, 0)
            } else if let Some(m) = key.strip_suffix(".experts.lora_B") {
                (m, 1)
            } else if let Some(m) = key.strip_suffix(".router.weight") {
                (m, 2)
            } else {
                return Err(Error::invalid("parameter", key, EXPECTED));
            };
            let ex = self
                .experts_mut(module)
                .ok_or_else(|| Error::invalid("parameter", key, EXPECTED))?;
            let slot = match field {
                0 => &mut ex.a,
                1 => &mut ex.b,
                _ => &mut ex.router,
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

    /// Logits `[batch, seq, vocab]` for token ids `[batch, seq]`.
    pub fn forward(&mut self, tokens: &Array) -> Result<Array> {
        let (h, _) = self.hidden_impl(tokens, false, None)?;
        self.head_logits(&h)
    }

    /// The auxiliary loss `λ_c L_c + λ_b L_b` (averaged over the adapted
    /// modules) of a forward over `tokens`, with its two parts
    /// `(aux, L_c, L_b)`.
    pub fn aux_loss(&mut self, tokens: &Array) -> Result<(Array, Array, Array)> {
        let (_, aux) = self.hidden_impl(tokens, true, None)?;
        aux.ok_or_else(|| Error::Unsupported("no adapted module".into()))
    }

    /// The router's gate `[tokens, E]` of module `module` for its inputs
    /// `x` `[…, in]` (for inspection and tests).
    pub fn gate(&self, module: &str, x: &Array) -> Result<Array> {
        let ex = self
            .experts()
            .find(|(n, _)| n == module)
            .map(|(_, e)| e.clone())
            .ok_or_else(|| Error::invalid("module", module, "an adapted module"))?;
        let d = ex.router.dim(1);
        let logits = x.reshape(&[-1, d])?.matmul(ex.router.t())?;
        Ok(gate(&logits, self.config.gating, ex.router.dim(0) as usize)?.0)
    }

    fn head_logits(&mut self, h: &Array) -> Result<Array> {
        let h = self.model.model.norm.forward(h)?;
        Ok(match &mut self.model.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.model.model.embed_tokens.as_linear(&h)?,
        })
    }

    /// Hidden states and, with `aux`, `(λ_c L_c + λ_b L_b, L_c, L_b)`
    /// averaged over modules.
    #[allow(clippy::type_complexity)]
    fn hidden_impl(
        &mut self,
        tokens: &Array,
        aux: bool,
        mut cache: Option<&mut Cache>,
    ) -> Result<(Array, Option<(Array, Array, Array)>)> {
        if tokens.ndim() != 2 {
            return Err(Error::invalid(
                "tokens",
                format!("shape {:?}", tokens.shape()),
                "a [batch, seq] array",
            ));
        }
        let c = self.model.config().clone();
        let (nh, nkv, hd) = (c.num_heads as i32, c.num_kv_heads as i32, c.head_dim as i32);
        let scale = (c.head_dim as f32).powf(-0.5);
        let (bsz, len) = (tokens.dim(0), tokens.dim(1));
        let offset = cache.as_ref().map_or(0, |c| c.offset) as i32;
        let cfg = self.config.clone();
        let mut terms: Vec<AuxTerms> = Vec::new();
        let mut h = self.model.model.embed_tokens.forward(tokens)?;
        for (i, layer) in self.model.model.layers.iter_mut().enumerate() {
            let lin = &self.linears[i];
            let mut run = |slot: usize, x: &Array| -> Result<Array> {
                let (y, t) = lin[slot].forward(x, &cfg, aux)?;
                if let Some(t) = t {
                    terms.push(t);
                }
                Ok(y)
            };
            let normed = layer.input_layernorm.forward(&h)?;
            let split = |a: Array, heads: i32| -> Result<Array> {
                Ok(a.reshape(&[bsz, len, heads, hd])?
                    .transpose_axes(&[0, 2, 1, 3])?)
            };
            let q = split(run(0, &normed)?, nh)?;
            let k = split(run(1, &normed)?, nkv)?;
            let v = split(run(2, &normed)?, nkv)?;
            let q = self.rope.apply(&q, offset)?;
            let k = self.rope.apply(&k, offset)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(cache) => {
                    let slot = &mut cache.layers[i];
                    let (k, v) = match slot.take() {
                        None => (k, v),
                        Some((k0, v0)) => (
                            mlx_rs::ops::concatenate(&[k0, k], 2)?,
                            mlx_rs::ops::concatenate(&[v0, v], 2)?,
                        ),
                    };
                    *slot = Some((k.clone(), v.clone()));
                    (k, v)
                }
                None => (k, v),
            };
            let mask = (len > 1).then_some(ScaledDotProductAttentionMask::Causal);
            let att = mlx_rs::fast::scaled_dot_product_attention(&q, &k, &v, scale, mask, None)?;
            let att = att
                .transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[bsz, len, nh * hd])?;
            let h1 = h.add(run(3, &att)?)?;
            let normed = layer.post_attention_layernorm.forward(&h1)?;
            let gate = run(4, &normed)?;
            let silu = gate.multiply(mlx_rs::ops::sigmoid(&gate)?)?;
            let up = run(5, &normed)?;
            let act = silu.multiply(&up)?;
            h = h1.add(run(6, &act)?)?;
        }
        if let Some(cache) = cache {
            cache.offset += len as usize;
        }
        let aux = if aux && !terms.is_empty() {
            let m = Array::from_f32(1.0 / terms.len() as f32);
            let mut lc = Array::from_f32(0.0);
            let mut lb = Array::from_f32(0.0);
            for (c, b) in &terms {
                lc = lc.add(c)?;
                lb = lb.add(b)?;
            }
            let (lc, lb) = (lc.multiply(&m)?, lb.multiply(&m)?);
            let total = lc
                .multiply(Array::from_f32(cfg.contrastive_weight))?
                .add(lb.multiply(Array::from_f32(cfg.balance_weight))?)?;
            Some((total, lc, lb))
        } else {
            None
        };
        Ok((h, aux))
    }

    /// Routed experts cannot be merged into one weight: always an error
    /// that says so (use [`export_experts`](Self::export_experts)).
    pub fn merged_model(&self) -> Result<Model> {
        Err(Error::Unsupported(
            "MoELoRA experts are mixed per token by the router, so they cannot be fused into \
             the base weights (nor exported as one GGUF LoRA); export them with \
             `MoeLoraModel::export_experts` (one PEFT adapter per expert plus the router)"
                .into(),
        ))
    }

    /// Writes `moe_lora.safetensors` (every trainable array, f32) and
    /// `moe_lora_config.json` (format, configuration, base model name,
    /// per-module rank/alpha/scale) to `dir`, atomically.
    pub fn save(&self, dir: impl AsRef<Path>, base_model: &str) -> Result<PathBuf> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let meta = std::collections::HashMap::from([
            ("format".to_string(), "pt".to_string()),
            ("forge".to_string(), FORMAT.to_string()),
        ]);
        write_tensors(
            &dir.join(MOE_WEIGHTS),
            &self.trainable_parameters(),
            Some(meta),
        )?;
        let modules: BTreeMap<String, serde_json::Value> = self
            .experts()
            .map(|(n, e)| {
                (
                    n,
                    json!({"rank": e.rank, "alpha": e.alpha, "scale": e.scale,
                           "experts": e.a.dim(0)}),
                )
            })
            .collect();
        let cfg = json!({
            "format": FORMAT,
            "version": 1,
            "base_model_name_or_path": base_model,
            "config": self.config,
            "modules": modules,
        });
        let p = dir.join(MOE_CONFIG);
        crate::save::write_json(&p, &cfg)?;
        Ok(dir.to_path_buf())
    }

    /// Reads a MoELoRA adapter written by [`save`](Self::save) onto `model`.
    /// A missing, foreign or mis-shaped tensor is an error naming the file
    /// and tensor.
    pub fn load(model: Model, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let p = dir.join(MOE_CONFIG);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: p.clone(),
            message: e.to_string(),
        })?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(Error::Json {
                path: p,
                message: format!("`format` is not \"{FORMAT}\" (not a MoELoRA adapter)"),
            });
        }
        let config: MoeLoraConfig =
            serde_json::from_value(v["config"].clone()).map_err(|e| Error::Json {
                path: p.clone(),
                message: format!("`config`: {e}"),
            })?;
        let mut this = Self::new(model, config)?;
        let wp = dir.join(MOE_WEIGHTS);
        let tensors = read_tensors(&wp)?;
        let expected = this.trainable_parameters();
        for (k, v) in &expected {
            let t = tensors.get(k).ok_or_else(|| Error::Safetensors {
                path: wp.clone(),
                message: format!("missing tensor `{k}`"),
            })?;
            if t.shape() != v.shape() {
                return Err(Error::Shape {
                    path: wp.clone(),
                    name: k.clone(),
                    found: t.shape().to_vec(),
                    expected: v.shape().to_vec(),
                });
            }
        }
        if let Some(k) = tensors.keys().find(|k| !expected.contains_key(*k)) {
            return Err(Error::Safetensors {
                path: wp,
                message: format!("unexpected tensor `{k}` (not a module of this configuration)"),
            });
        }
        this.set_trainable(tensors.iter().map(|(k, v)| (k.as_str(), v)))?;
        Ok(this)
    }

    /// The export story: every expert `e` as a separate PEFT LoRA adapter in
    /// `dir/expert-<e>/` (loadable by [`PeftModel::load_peft`] and PEFT;
    /// applied alone it is that expert with gate 1), the routers in
    /// `dir/router.safetensors` (`<module>.router.weight` `[E, in]`) and the
    /// configuration in `dir/moe_lora_config.json`. Serving the mixture needs
    /// the router: [`MoeLoraModel::load`] on the saved adapter, not a merge.
    pub fn export_experts(&self, dir: impl AsRef<Path>, base_model: &str) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut out = Vec::new();
        let mut lora = PeftModel::new(self.model.clone(), self.config.lora_config())?;
        for e in 0..self.config.experts as i32 {
            let mut params = Vec::new();
            for (name, ex) in self.experts() {
                let idx = Array::from_slice(&[e], &[1]);
                let a = ex.a.take_axis(&idx, 0)?.squeeze_axes(&[0])?;
                let b = ex.b.take_axis(&idx, 0)?.squeeze_axes(&[0])?;
                params.push((format!("{name}.lora_A"), a));
                params.push((format!("{name}.lora_B"), b));
            }
            lora.set_trainable(params.iter().map(|(k, v)| (k.as_str(), v)))?;
            out.push(lora.save_peft(dir.join(format!("expert-{e}")), base_model)?);
        }
        let routers: BTreeMap<String, Array> = self
            .experts()
            .map(|(n, e)| (format!("{n}.router.weight"), e.router.clone()))
            .collect();
        write_tensors(&dir.join(MOE_ROUTER), &routers, None)?;
        let cfg = json!({
            "format": FORMAT,
            "version": 1,
            "base_model_name_or_path": base_model,
            "config": self.config,
            "experts": (0..self.config.experts).map(|e| format!("expert-{e}")).collect::<Vec<_>>(),
            "router": MOE_ROUTER,
            "note": "routed experts: h = W0 x + s * sum_e G(x)_e B_e A_e x; the experts cannot be merged into the base",
        });
        let p = dir.join(MOE_CONFIG);
        crate::save::write_json(&p, &cfg)?;
        Ok(out)
    }
}

fn init_experts(
    name: &str,
    weight: &Array,
    rank: usize,
    alpha: f32,
    config: &MoeLoraConfig,
) -> Result<Experts> {
    let (out, inp) = (weight.dim(0) as usize, weight.dim(1) as usize);
    if rank > out.min(inp) {
        return Err(Error::invalid(
            "rank",
            format!("{rank} for `{name}`"),
            format!("at most {} (min of its shape [{out}, {inp}])", out.min(inp)),
        ));
    }
    let mut a_parts = Vec::with_capacity(config.experts);
    for e in 0..config.experts {
        let expert_name = if e == 0 {
            name.to_string()
        } else {
            format!("{name}.experts.{e}")
        };
        let (a, _) = lora::init(&expert_name, rank, inp, out, config.seed)?;
        a_parts.push(a.expand_dims(0)?);
    }
    let a = mlx_rs::ops::concatenate(&a_parts, 0)?;
    let b = mlx_rs::ops::zeros::<f32>(&[config.experts as i32, out as i32, rank as i32])?;
    let router = uniform(&format!("{name}.router"), config.experts, inp, config.seed);
    mlx_rs::transforms::eval([&a, &b, &router])?;
    Ok(Experts {
        a,
        b,
        router,
        rank,
        alpha,
        scale: Method::Lora.scale(rank, alpha),
    })
}

impl Trainable for MoeLoraModel {
    fn trainable_arrays(&self) -> BTreeMap<String, Array> {
        self.trainable_parameters()
    }

    fn set_trainable_array(&mut self, name: &str, value: &Array) -> Result<()> {
        self.set_trainable([(name, value)])
    }

    fn hidden_with_aux(
        &mut self,
        tokens: &Array,
        checkpoint: bool,
    ) -> Result<(Array, Option<Array>)> {
        if checkpoint {
            return Err(Error::Unsupported(
                "gradient checkpointing is not implemented for MoELoRA (set grad_checkpoint = false)"
                    .into(),
            ));
        }
        let (h, aux) = self.hidden_impl(tokens, true, None)?;
        Ok((h, aux.map(|(total, ..)| total)))
    }

    fn selected_nll_sum(&mut self, hidden: &Array, rows: &Array, targets: &Array) -> Result<Array> {
        self.head
            .selected_nll_sum(hidden, rows, targets, crate::loss::HEAD_CHUNK)
    }

    fn logits(&mut self, tokens: &Array) -> Result<Array> {
        self.forward(tokens)
    }
}

#[derive(Debug)]
struct MoeSession<'a> {
    model: &'a mut MoeLoraModel,
    cache: Cache,
}

fn model_err(e: Error) -> forge_model::Error {
    match e {
        Error::Mlx(e) => forge_model::Error::Mlx(e),
        Error::Model(e) => e,
        other => forge_model::Error::Unsupported(other.to_string()),
    }
}

impl DecodeSession for MoeSession<'_> {
    fn feed(&mut self, input: &[u32]) -> forge_model::Result<Vec<f32>> {
        let ids: Vec<i32> = input.iter().map(|&t| t as i32).collect();
        let tokens = Array::from_slice(&ids, &[1, ids.len() as i32]);
        let mut run = || -> Result<Vec<f32>> {
            let (h, _) = self
                .model
                .hidden_impl(&tokens, false, Some(&mut self.cache))?;
            let last = h.take_axis(Array::from_slice(&[h.dim(1) - 1], &[1]), 1)?;
            let logits = self.model.head_logits(&last)?.as_type::<f32>()?;
            logits.eval()?;
            Ok(logits.as_slice::<f32>().to_vec())
        };
        run().map_err(model_err)
    }
}

/// Generation through forge-model's [`forge_model::Generator`]: each
/// session decodes with a key/value cache, the experts routed per token.
impl CausalLm for MoeLoraModel {
    fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    fn session(&mut self) -> Box<dyn DecodeSession + '_> {
        let cache = Cache {
            layers: vec![None; self.linears.len()],
            offset: 0,
        };
        Box::new(MoeSession { model: self, cache })
    }
}
