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
/// The low-rank products run in the activations' dtype: over a bf16/f16
/// model the f32 adapter matrices are cast down (they are tiny) instead of
/// the activations up — mixed precision as in Micikevicius et al. 2018
/// (arXiv:1710.03740): half-precision products with f32 accumulation, f32
/// master weights and f32 updates (the gradients are cast back to the
/// parameters' dtype in [`low_rank`]). mlx-lm and PEFT promote `x` to f32
/// instead: on an H200 that made every adapter product an f32 (TF32)
/// GEMM over an f32 copy of `x`, ~11 ms of a ~100 ms Llama-1B-like step
/// (docs/benchmarks.md). Over an f32 model nothing changes.
fn low_rank_forward(
    base: &BaseWeight,
    x: &Array,
    a: &Array,
    b: &Array,
    scale: f32,
) -> Result<(Array, Array)> {
    let dt = x.dtype();
    let y0 = base.matmul_t(x)?;
    let u = x.matmul(same_dtype(a.clone(), dt)?.t())?;
    let y = add_product(&y0, &u, &same_dtype(b.clone(), dt)?.t(), scale)?;
    Ok((y, u))
}

/// `c + s·(p q)` for `p` `[…, k]`, `q` `[k, n]`, `c` `[…, n]`: one GEMM whose
/// epilogue adds `c` and applies `s` (`addmm`) when the dtypes agree, so no
/// elementwise pass over the `[T, n]` output is needed (three per adapted
/// layer and step before: the scale and the residual add of the forward,
/// the scaled cotangent of the backward).
fn add_product(c: &Array, p: &Array, q: &Array, s: f32) -> Result<Array> {
    if c.dtype() != p.dtype() || p.dtype() != q.dtype() {
        let pq = p.matmul(q)?.multiply(Array::from_f32(s))?;
        return Ok(c.add(same_dtype(pq, c.dtype())?)?);
    }
    let (k, n) = (p.dim(-1), c.dim(-1));
    let y = mlx_rs::ops::addmm(c.reshape(&[-1, n])?, p.reshape(&[-1, k])?, q, s, 1.0)?;
    Ok(y.reshape(c.shape())?)
}

/// The LoRA-form forward (LoRA, rsLoRA, PiSSA, CLoQ: no magnitude) with a
/// hand-written gradient (Hu et al. 2021, arXiv:2106.09685, `h = W₀x + s·BAx`).
/// With `u = x Aᵀ` kept from the forward, `ȳ = ∂L/∂y` and `ū = ȳ B`:
///
/// ```text
/// ∂L/∂B = s·ȳᵀ u        [out, r]
/// ∂L/∂A = s·ūᵀ x        [r, in]
/// ∂L/∂x = ȳ W + s·ū A   [T, in]
/// ```
///
/// (`s` applied to the small products and in `addmm`, never to a `[T, ·]`
/// array.)
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
        // In the forward's dtype (the activations'; see `low_rank_forward`).
        let dt = u.dtype();
        let g2 = same_dtype(dy.clone(), dt)?.reshape(&[-1, d_out])?;
        let du = g2.matmul(same_dtype(b.clone(), dt)?)?;
        // The scale on the small `[out, r]`, `[r, in]` products, in f32
        // (one elementwise kernel with the cast to the parameters' dtype).
        let s = Array::from_f32(scale);
        let db = g2.t().matmul(u.reshape(&[-1, r])?)?.multiply(&s)?;
        let da = du.t().matmul(x.reshape(&[-1, d_in])?)?.multiply(&s)?;
        let dx = add_product(&base.matmul(dy)?, &du, &same_dtype(a.clone(), dt)?, scale)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::Dtype;

    /// Seeded values in [−1, 1).
    fn data(shape: &[i32], seed: u64) -> Array {
        let mut rng = crate::util::SplitMix64::new(seed);
        let n: i32 = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (2.0 * rng.next_f64() - 1.0) as f32)
            .collect();
        Array::from_slice(&v, shape)
    }

    fn adapter(a: Array, b: Array) -> Adapter {
        Adapter {
            method: Method::Lora,
            rank: 4,
            alpha: 8.0,
            scale: 2.0,
            a,
            b,
            magnitude: None,
            init: None,
            detach_norm: false,
        }
    }

    /// `(y, dx, dA, dB)` of `Σ y ⊙ cot` through [`low_rank`].
    fn run(w: &Array, x: &Array, a: &Array, b: &Array, cot: &Array) -> Result<Vec<Array>> {
        let base = BaseWeight::Dense(w.clone());
        let (y, grads) = mlx_rs::transforms::vjp(
            |p: &[Array]| {
                vec![low_rank(&base, &p[0], &adapter(p[1].clone(), p[2].clone())).unwrap()]
            },
            &[x.clone(), a.clone(), b.clone()],
            std::slice::from_ref(cot),
        )?;
        let mut out = vec![y[0].clone()];
        out.extend(grads);
        Ok(out)
    }

    /// Over a bf16 model the f32 adapter runs its products in bf16: output
    /// in bf16, gradients in the parameters' dtypes (f32 for `A`, `B`),
    /// all within bf16 rounding of the all-f32 computation.
    #[test]
    fn half_precision_activations_keep_f32_adapter_gradients_close_to_f32() -> Result<()> {
        let (t, d_in, d_out, r) = (96, 64, 48, 4);
        let w = data(&[d_out, d_in], 1);
        let x = data(&[2, t / 2, d_in], 2);
        let a = data(&[r, d_in], 3).multiply(Array::from_f32(0.125))?;
        let b = data(&[d_out, r], 4).multiply(Array::from_f32(0.5))?;
        let cot = data(&[2, t / 2, d_out], 5);
        let exact = run(&w, &x, &a, &b, &cot)?;
        let bf = |t: &Array| t.as_dtype(Dtype::Bfloat16);
        let half = run(&bf(&w)?, &bf(&x)?, &a, &b, &bf(&cot)?)?;
        let dtypes: Vec<Dtype> = half.iter().map(|t| t.dtype()).collect();
        assert_eq!(
            dtypes,
            [
                Dtype::Bfloat16,
                Dtype::Bfloat16,
                Dtype::Float32,
                Dtype::Float32
            ]
        );
        for (name, (h, e)) in ["y", "dx", "dA", "dB"].iter().zip(half.iter().zip(&exact)) {
            let (h, e) = (h.as_dtype(Dtype::Float32)?, e);
            let err = h.subtract(e)?.abs()?.max(None)?.item_cast::<f32>()
                / e.abs()?.max(None)?.item_cast::<f32>();
            assert!(err < 2e-2, "{name}: relative error {err:.2e}");
        }
        Ok(())
    }
}
