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
        let base = self.base.matmul_t(x)?;
        let lora = x
            .matmul(adapter.a.t())?
            .matmul(adapter.b.t())?
            .multiply(Array::from_f32(adapter.scale))?;
        // f32 adapters over a bf16/f16 model: the low-rank path runs in
        // f32 and is cast back, so the residual stream keeps the model's
        // dtype (otherwise every later layer would be promoted to f32).
        let lora = same_dtype(lora, base.dtype())?;
        let y = base.add(&lora)?;
        let y = match &adapter.magnitude {
            None => y,
            Some(m) => {
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
