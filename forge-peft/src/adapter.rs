//! A linear layer with an optional adapter over a dense or quantized base.

use mlx_rs::Array;

use crate::error::Result;
use crate::methods::{Method, dora};
use crate::quant::QuantizedWeight;

/// The frozen base weight of a linear layer.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    /// Full precision `[out, in]`.
    Dense(Array),
    /// MLX affine-quantized.
    Quantized(QuantizedWeight),
}

impl BaseWeight {
    /// `[out, in]`.
    pub fn shape(&self) -> [i32; 2] {
        match self {
            BaseWeight::Dense(w) => [w.dim(0), w.dim(1)],
            BaseWeight::Quantized(q) => q.shape,
        }
    }

    /// The weight in full precision (dequantized if needed).
    pub fn dense(&self) -> Result<Array> {
        match self {
            BaseWeight::Dense(w) => Ok(w.clone()),
            BaseWeight::Quantized(q) => q.dequantize(),
        }
    }

    fn matmul_t(&self, x: &Array) -> Result<Array> {
        match self {
            BaseWeight::Dense(w) => Ok(x.matmul(w.t())?),
            BaseWeight::Quantized(q) => q.matmul_t(x),
        }
    }

    /// `g W` (`g` `[…, out]` → `[…, in]`): the input gradient of `x Wᵀ`.
    fn matmul(&self, g: &Array) -> Result<Array> {
        match self {
            BaseWeight::Dense(w) => Ok(g.matmul(w)?),
            BaseWeight::Quantized(q) => q.matmul(g),
        }
    }
}

/// The trainable part of an adapted layer.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub(crate) method: Method,
    pub(crate) rank: usize,
    pub(crate) alpha: f32,
    pub(crate) scale: f32,
    /// `lora_A`, `[r, in]`.
    pub(crate) a: Array,
    /// `lora_B`, `[out, r]`.
    pub(crate) b: Array,
    /// DoRA magnitude `[out]`.
    pub(crate) magnitude: Option<Array>,
    /// PiSSA/CLoQ: `(A₀, B₀)` at initialisation, for conversion to plain LoRA.
    #[allow(dead_code)] // read by the PiSSA → LoRA conversion in `save`
    pub(crate) init: Option<(Array, Array)>,
    pub(crate) detach_norm: bool,
}

impl Adapter {
    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }
    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.rank
    }
    /// `α`.
    pub fn alpha(&self) -> f32 {
        self.alpha
    }
    /// The scale `s` of `s·BA`.
    pub fn scale(&self) -> f32 {
        self.scale
    }
    /// `lora_A` `[r, in]`.
    pub fn a(&self) -> &Array {
        &self.a
    }
    /// `lora_B` `[out, r]`.
    pub fn b(&self) -> &Array {
        &self.b
    }
    /// DoRA magnitude `[out]`.
    pub fn magnitude(&self) -> Option<&Array> {
        self.magnitude.as_ref()
    }
    /// `s·BA` `[out, in]`.
    pub fn delta(&self) -> Result<Array> {
        Ok(self
            .b
            .matmul(&self.a)?
            .multiply(Array::from_f32(self.scale))?)
    }
}

/// `x` cast to `dtype` when it has another one.
pub(crate) fn same_dtype(x: Array, dtype: mlx_rs::Dtype) -> Result<Array> {
    Ok(if x.dtype() == dtype {
        x
    } else {
        x.as_dtype(dtype)?
    })
}

/// A linear layer `y = x Wᵀ + b` with an optional adapter.
#[derive(Debug, Clone)]
pub struct AdaptedLinear {
    pub(crate) base: BaseWeight,
    pub(crate) bias: Option<Array>,
    pub(crate) adapter: Option<Adapter>,
    /// When fused: the base before fusing (the full-precision master).
    pub(crate) unfused: Option<BaseWeight>,
}

impl AdaptedLinear {
    /// A plain layer.
    pub fn new(weight: Array, bias: Option<Array>) -> Self {
        Self {
            base: BaseWeight::Dense(weight),
            bias,
            adapter: None,
            unfused: None,
        }
    }

    /// The base weight.
    pub fn base(&self) -> &BaseWeight {
        &self.base
    }
    /// The bias.
    pub fn bias(&self) -> Option<&Array> {
        self.bias.as_ref()
    }
    /// The adapter, if any.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }
    /// Whether the adapter is fused into the base.
    pub fn is_fused(&self) -> bool {
        self.unfused.is_some()
    }

    fn add_bias(&self, y: Array) -> Result<Array> {
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }

    /// `x` `[…, in]` → `[…, out]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let adapter = match (&self.adapter, self.is_fused()) {
            (Some(a), false) => a,
            _ => {
                return match (&self.base, &self.bias) {
                    // Same op as mlx_rs::nn::Linear, so an unadapted layer is bit-identical.
                    (BaseWeight::Dense(w), Some(b)) => {
                        Ok(mlx_rs::ops::addmm(b, x, w.t(), None, None)?)
                    }
                    (base, _) => self.add_bias(base.matmul_t(x)?),
                };
            }
        };
        let y = match &adapter.magnitude {
            None => return self.add_bias(low_rank(&self.base, x, adapter)?),
            Some(m) => {
                let y = low_rank_forward(&self.base, x, &adapter.a, &adapter.b, adapter.scale)?.0;
                let norm = dora::row_norms(&self.base.dense()?.add(adapter.delta()?)?)?;
                let norm = if adapter.detach_norm {
                    mlx_rs::stop_gradient(&norm)?
                } else {
                    norm
                };
                let dt = y.dtype();
                y.multiply(same_dtype(m.divide(&norm)?, dt)?)?
            }
        };
        self.add_bias(y)
    }

    /// The merged weight `W'` (f32, `[out, in]`): `W + s·BA`, or DoRA's
    /// `m ⊙ (W + s·BA)/‖W + s·BA‖_c`; the base alone without an adapter.
    pub fn merged_weight(&self) -> Result<Array> {
        let w = self.base.dense()?;
        let Some(ad) = self.adapter.as_ref().filter(|_| !self.is_fused()) else {
            return Ok(w);
        };
        let v = w.add(ad.delta()?)?;
        Ok(match &ad.magnitude {
            None => v,
            Some(m) => {
                let norm = dora::row_norms(&v)?;
                v.multiply(m.divide(&norm)?.expand_dims(1)?)?
            }
        })
    }

    /// Replaces the base by the merged weight (keeping the old base as the
    /// master) and bypasses the adapter. No-op when already fused.
    pub fn fuse(&mut self) -> Result<()> {
        if self.is_fused() || self.adapter.is_none() {
            return Ok(());
        }
        let merged = self.merged_weight()?;
        let old = std::mem::replace(&mut self.base, BaseWeight::Dense(merged));
        self.unfused = Some(old);
        Ok(())
    }

    /// Restores the base saved by [`fuse`](Self::fuse).
    pub fn unfuse(&mut self) {
        if let Some(old) = self.unfused.take() {
            self.base = old;
        }
    }
}

/// `y = x Wᵀ + s·(x Aᵀ) Bᵀ` and the rank-`r` activation `u = x Aᵀ`.
///
/// f32 adapters over a bf16/f16 model: the low-rank path runs in f32 and
/// is cast back, so the residual stream keeps the model's dtype (otherwise
/// every later layer would be promoted to f32).
fn low_rank_forward(
    base: &BaseWeight,
    x: &Array,
    a: &Array,
    b: &Array,
    scale: f32,
) -> Result<(Array, Array)> {
    let y0 = base.matmul_t(x)?;
    let u = x.matmul(a.t())?;
    let lora = u.matmul(b.t())?.multiply(Array::from_f32(scale))?;
    let y = y0.add(same_dtype(lora, y0.dtype())?)?;
    Ok((y, u))
}

/// The LoRA-form forward (LoRA, rsLoRA, PiSSA, CLoQ: no magnitude) with a
/// hand-written gradient (Hu et al. 2021, arXiv:2106.09685, `h = W₀x + s·BAx`).
/// With `u = x Aᵀ` kept from the forward and `ḡ = s·∂L/∂y`:
///
/// ```text
/// ∂L/∂B = ḡᵀ u        [out, r]
/// ∂L/∂u = ḡ B         [T, r]
/// ∂L/∂A = (∂L/∂u)ᵀ x  [r, in]
/// ∂L/∂x = ∂L/∂y · W + ∂L/∂u · A
/// ```
///
/// The same products autodiff forms, but each gradient comes out as a
/// row-major `[r, in]` / `[out, r]` array in the parameter's own layout:
/// through `x·Aᵀ`, autodiff returns the transpose of a `[in, r]` product,
/// and the optimizer's fused update then runs MLX's strided kernel over
/// every parameter (measured on an H200: 21 ms of a 132 ms Llama-1B-like
/// step; 5.9 ms once the gradients are row-major).
fn low_rank(base: &BaseWeight, x: &Array, ad: &Adapter) -> Result<Array> {
    let scale = ad.scale;
    let fwd_base = base.clone();
    let f = move |xs: &[Array]| -> Result<Vec<Array>> {
        let (y, u) = low_rank_forward(&fwd_base, &xs[0], &xs[1], &xs[2], scale)?;
        Ok(vec![y, u])
    };
    let base = base.clone();
    let vjp = move |p: &[Array], cot: &[Array], out: &[Array]| -> Result<Vec<Array>> {
        let (x, a, b) = (&p[0], &p[1], &p[2]);
        let (dy, u) = (&cot[0], &out[1]);
        let (d_in, d_out, r) = (x.dim(-1), dy.dim(-1), u.dim(-1));
        let g = same_dtype(dy.clone(), u.dtype())?.multiply(Array::from_f32(scale))?;
        let g2 = g.reshape(&[-1, d_out])?;
        let du = g2.matmul(b)?;
        let db = g2.t().matmul(u.reshape(&[-1, r])?)?;
        // Cast before reshaping: the same `AsType(x)` node as the forward's
        // promotion in `x·Aᵀ`, which compilation then computes once.
        let xc = same_dtype(x.clone(), du.dtype())?.reshape(&[-1, d_in])?;
        let da = du.t().matmul(&xc)?;
        let dx = base.matmul(dy)?.add(du.matmul(a)?.reshape(x.shape())?)?;
        Ok(vec![
            same_dtype(dx, x.dtype())?,
            same_dtype(da, a.dtype())?,
            same_dtype(db, b.dtype())?,
        ])
    };
    crate::checkpoint::custom_vjp(
        Box::new(f),
        Box::new(vjp),
        &[x.clone(), ad.a.clone(), ad.b.clone()],
    )?
    .into_iter()
    .next()
    .ok_or_else(|| crate::error::Error::Unsupported("the low-rank path returned nothing".into()))
}
