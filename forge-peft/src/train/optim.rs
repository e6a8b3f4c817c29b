//! AdamW with decoupled weight decay, learning-rate schedules, clipping.
//!
//! Loshchilov & Hutter 2019, *Decoupled Weight Decay Regularization*
//! (arXiv:1711.05101), Algorithm 2, with Adam's bias correction (Kingma & Ba
//! 2015, arXiv:1412.6980):
//!
//! ```text
//! m ← β₁m + (1−β₁)g     v ← β₂v + (1−β₂)g²
//! θ ← θ − η_t (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε) − η_t λ θ
//! ```
//!
//! Weight decay is not applied to biases, norms and DoRA magnitudes (names
//! ending in `bias`, `norm.weight`, `lora_magnitude`).

use std::collections::BTreeMap;

use mlx_rs::Array;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Constant.
    Constant,
    /// Cosine decay to `min_lr`.
    #[default]
    Cosine,
    /// Linear decay to `min_lr`.
    Linear,
}

/// Learning rate at optimizer step `step` (0-based): linear warmup from
/// `lr/warmup` to `lr`, then the schedule down to `min_lr` at `total`.
pub fn learning_rate(
    step: usize,
    lr: f32,
    min_lr: f32,
    warmup: usize,
    total: usize,
    schedule: Schedule,
) -> f32 {
    if step < warmup {
        return lr * (step + 1) as f32 / warmup as f32;
    }
    let span = total.saturating_sub(warmup).max(1) as f32;
    let t = ((step - warmup) as f32 / span).clamp(0.0, 1.0);
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => min_lr + 0.5 * (lr - min_lr) * (1.0 + (std::f32::consts::PI * t).cos()),
        Schedule::Linear => lr + (min_lr - lr) * t,
    }
}

/// Whether `name` gets weight decay.
pub(crate) fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.ends_with("norm.weight") || name.ends_with("lora_magnitude"))
}

/// AdamW state.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// β₁, β₂.
    pub betas: (f32, f32),
    /// ε.
    pub eps: f32,
    /// λ.
    pub weight_decay: f32,
    /// Steps taken.
    pub t: u64,
    /// First moments by parameter name.
    pub m: BTreeMap<String, Array>,
    /// Second moments by parameter name.
    pub v: BTreeMap<String, Array>,
}

impl AdamW {
    /// Fresh state.
    pub fn new(betas: (f32, f32), eps: f32, weight_decay: f32) -> Self {
        Self {
            betas,
            eps,
            weight_decay,
            t: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// One step: returns the updated parameters.
    pub fn step(
        &mut self,
        params: &BTreeMap<String, Array>,
        grads: &BTreeMap<String, Array>,
        lr: f32,
    ) -> Result<BTreeMap<String, Array>> {
        self.t += 1;
        let (b1, b2) = self.betas;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let f = Array::from_f32;
        let mut out = BTreeMap::new();
        for (k, p) in params {
            let Some(g) = grads.get(k) else {
                out.insert(k.clone(), p.clone());
                continue;
            };
            let m0 = match self.m.get(k) {
                Some(m) => m.clone(),
                None => mlx_rs::ops::zeros_like(p)?,
            };
            let v0 = match self.v.get(k) {
                Some(v) => v.clone(),
                None => mlx_rs::ops::zeros_like(p)?,
            };
            let m = m0.multiply(f(b1))?.add(g.multiply(f(1.0 - b1))?)?;
            let v = v0
                .multiply(f(b2))?
                .add(g.square()?.multiply(f(1.0 - b2))?)?;
            let update = m
                .divide(f(c1))?
                .divide(v.divide(f(c2))?.sqrt()?.add(f(self.eps))?)?;
            let mut np = p.subtract(update.multiply(f(lr))?)?;
            if self.weight_decay > 0.0 && decays(k) {
                np = np.subtract(p.multiply(f(lr * self.weight_decay))?)?;
            }
            self.m.insert(k.clone(), m);
            self.v.insert(k.clone(), v);
            out.insert(k.clone(), np);
        }
        Ok(out)
    }
}

/// Global L2 norm of the gradients.
pub(crate) fn global_norm(grads: &BTreeMap<String, Array>) -> Result<f32> {
    let mut total: Option<Array> = None;
    for g in grads.values() {
        let s = g.square()?.sum(None)?;
        total = Some(match total {
            Some(t) => t.add(s)?,
            None => s,
        });
    }
    let Some(t) = total else { return Ok(0.0) };
    let n = t.sqrt()?;
    n.eval()?;
    Ok(n.as_slice::<f32>()[0])
}

/// The global norm of `grads` as a lazy scalar array.
fn global_norm_lazy(grads: &[Array]) -> std::result::Result<Array, mlx_rs::error::Exception> {
    let mut total: Option<Array> = None;
    for g in grads {
        let s = g.square()?.sum(None)?;
        total = Some(match total {
            Some(t) => t.add(s)?,
            None => s,
        });
    }
    match total {
        Some(t) => t.sqrt(),
        None => Ok(Array::from_f32(0.0)),
    }
}

type CompiledFn = Box<
    dyn for<'a> FnMut(&'a [Array]) -> std::result::Result<Vec<Array>, mlx_rs::error::Exception>,
>;

/// One optimizer step as a single compiled MLX function: the accumulated
/// gradients are divided by the token count, their global norm is taken
/// (when asked for, or when clipping needs it), they are clipped to `clip`
/// (when `clip > 0`), and [`AdamW`]'s update is applied to every parameter,
/// op for op as [`AdamW::step`] writes it.
///
/// Compiling the update matters on GPUs: unfused, AdamW over a LoRA's
/// couple of hundred small arrays is thousands of tiny kernel launches per
/// step; compiled, MLX fuses each parameter's element-wise chain, the
/// division by the token count included, into one kernel. The norm costs
/// two more kernels per parameter (square, sum) and the division its own,
/// so a step that needs no norm uses a second compiled function without it.
pub(crate) struct FusedAdamW {
    names: Vec<String>,
    with_norm: CompiledFn,
    without_norm: CompiledFn,
}

impl FusedAdamW {
    /// The fused step for the parameters `names` of `adam`.
    pub(crate) fn new(names: Vec<String>, adam: &AdamW, clip: f32) -> Self {
        let variant = |norm_wanted: bool| -> CompiledFn {
            let (b1, b2) = adam.betas;
            let (eps, wd) = (adam.eps, adam.weight_decay);
            let decay: Vec<bool> = names.iter().map(|n| wd > 0.0 && decays(n)).collect();
            let n = names.len();
            let traced =
                move |xs: &[Array]| -> std::result::Result<Vec<Array>, mlx_rs::error::Exception> {
                    let f = Array::from_f32;
                    let (p, rest) = xs.split_at(n);
                    let (g, rest) = rest.split_at(n);
                    let (m0, rest) = rest.split_at(n);
                    let (v0, s) = rest.split_at(n);
                    let (inv, lr, c1, c2) = (&s[0], &s[1], &s[2], &s[3]);
                    let g: Vec<Array> = g
                        .iter()
                        .map(|g| g.multiply(inv))
                        .collect::<std::result::Result<_, _>>()?;
                    let norm = if norm_wanted || clip > 0.0 {
                        Some(global_norm_lazy(&g)?)
                    } else {
                        None
                    };
                    let g = match (&norm, clip > 0.0) {
                        (Some(norm), true) => {
                            let scale = mlx_rs::ops::select(
                                &norm.gt(f(clip))?,
                                &f(clip).divide(norm)?,
                                f(1.0),
                            )?;
                            g.iter()
                                .map(|g| g.multiply(&scale))
                                .collect::<std::result::Result<Vec<_>, _>>()?
                        }
                        _ => g,
                    };
                    let mut new_p = Vec::with_capacity(n);
                    let mut new_m = Vec::with_capacity(n);
                    let mut new_v = Vec::with_capacity(n);
                    for i in 0..n {
                        let m = m0[i].multiply(f(b1))?.add(g[i].multiply(f(1.0 - b1))?)?;
                        let v = v0[i]
                            .multiply(f(b2))?
                            .add(g[i].square()?.multiply(f(1.0 - b2))?)?;
                        let update = m.divide(c1)?.divide(v.divide(c2)?.sqrt()?.add(f(eps))?)?;
                        let mut np = p[i].subtract(update.multiply(lr)?)?;
                        if decay[i] {
                            np = np.subtract(p[i].multiply(lr.multiply(f(wd))?)?)?;
                        }
                        new_p.push(np);
                        new_m.push(m);
                        new_v.push(v);
                    }
                    let mut out = new_p;
                    out.extend(new_m);
                    out.extend(new_v);
                    out.extend(norm);
                    Ok(out)
                };
            Box::new(mlx_rs::transforms::compile::compile(traced, false))
        };
        Self {
            with_norm: variant(true),
            without_norm: variant(false),
            names,
        }
    }

    /// One step from `adam`'s state: `gsum` are the summed (not yet
    /// averaged) gradients, `inv` the reciprocal of the token count. Returns
    /// the new parameters and moments and, when `want_norm` or clipping is
    /// on, the pre-clipping global gradient norm, all lazy; `adam` is left
    /// as it was ([`FusedStep::install`] applies the moments).
    pub(crate) fn step(
        &mut self,
        adam: &AdamW,
        params: &BTreeMap<String, Array>,
        gsum: &BTreeMap<String, Array>,
        inv: f32,
        lr: f32,
        want_norm: bool,
    ) -> Result<FusedStep> {
        let t = adam.t + 1;
        let (b1, b2) = adam.betas;
        let c1 = 1.0 - b1.powi(t as i32);
        let c2 = 1.0 - b2.powi(t as i32);
        let n = self.names.len();
        let mut xs = Vec::with_capacity(4 * n + 4);
        for k in &self.names {
            xs.push(
                params
                    .get(k)
                    .ok_or_else(|| crate::error::Error::Unsupported(format!("no parameter `{k}`")))?
                    .clone(),
            );
        }
        for k in &self.names {
            xs.push(
                gsum.get(k)
                    .ok_or_else(|| {
                        crate::error::Error::Unsupported(format!("no gradient for `{k}`"))
                    })?
                    .clone(),
            );
        }
        for moments in [&adam.m, &adam.v] {
            for (i, k) in self.names.iter().enumerate() {
                xs.push(match moments.get(k) {
                    Some(x) => x.clone(),
                    None => mlx_rs::ops::zeros_like(&xs[i])?,
                });
            }
        }
        xs.extend([inv, lr, c1, c2].map(Array::from_f32));
        let mut out = if want_norm {
            (self.with_norm)(&xs)?
        } else {
            (self.without_norm)(&xs)?
        };
        let norm = if out.len() > 3 * n { out.pop() } else { None };
        let v = out.split_off(2 * n);
        let m = out.split_off(n);
        let mut step = FusedStep {
            params: BTreeMap::new(),
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            t,
            norm,
        };
        for (((k, p), m), v) in self.names.iter().zip(out).zip(m).zip(v) {
            step.m.insert(k.clone(), m);
            step.v.insert(k.clone(), v);
            step.params.insert(k.clone(), p);
        }
        Ok(step)
    }
}

/// What one [`FusedAdamW::step`] computed (lazy arrays).
pub(crate) struct FusedStep {
    /// The new parameters.
    pub(crate) params: BTreeMap<String, Array>,
    /// The new first moments.
    pub(crate) m: BTreeMap<String, Array>,
    /// The new second moments.
    pub(crate) v: BTreeMap<String, Array>,
    /// The new step count.
    pub(crate) t: u64,
    /// The pre-clipping global gradient norm, when measured.
    pub(crate) norm: Option<Array>,
}

impl FusedStep {
    /// Every array of the step, for evaluation.
    pub(crate) fn arrays(&self) -> impl Iterator<Item = &Array> {
        self.params
            .values()
            .chain(self.m.values())
            .chain(self.v.values())
            .chain(self.norm.as_ref())
    }

    /// Makes the moments and step count `adam`'s, returning the previous
    /// ones (to undo it).
    pub(crate) fn install(&self, adam: &mut AdamW) -> AdamState {
        let before = (adam.t, adam.m.clone(), adam.v.clone());
        adam.t = self.t;
        adam.m = self.m.clone();
        adam.v = self.v.clone();
        before
    }
}

/// AdamW's step count and moments, to restore.
pub(crate) type AdamState = (u64, BTreeMap<String, Array>, BTreeMap<String, Array>);
