//! MLX affine quantization of a frozen base weight (QLoRA-style bases).
//!
//! MLX's affine scheme: each group of `group_size` consecutive weights of a
//! row is stored as `bits`-bit integers `q` with a per-group scale `s` and
//! bias `b`, `ŵ = s·q + b`; `quantized_matmul` computes `x Ŵᵀ` without
//! materialising `Ŵ`.

use mlx_rs::Array;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bits and group size of an affine-quantized base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantSpec {
    /// Bits per weight: 2, 3, 4, 5, 6 or 8.
    pub bits: i32,
    /// Weights per scale/bias group: 32, 64 or 128.
    pub group_size: i32,
}

impl Default for QuantSpec {
    fn default() -> Self {
        Self {
            bits: 4,
            group_size: 64,
        }
    }
}

impl QuantSpec {
    /// `bits` with group size 64.
    pub fn new(bits: i32) -> Self {
        Self {
            bits,
            group_size: 64,
        }
    }

    /// Sets the group size.
    #[must_use]
    pub fn with_group_size(mut self, group_size: i32) -> Self {
        self.group_size = group_size;
        self
    }

    /// Checks bits and group size against what MLX supports.
    pub fn validate(&self) -> Result<()> {
        if ![2, 3, 4, 5, 6, 8].contains(&self.bits) {
            return Err(Error::invalid("bits", self.bits, "one of 2, 3, 4, 5, 6, 8"));
        }
        if ![32, 64, 128].contains(&self.group_size) {
            return Err(Error::invalid(
                "group_size",
                self.group_size,
                "one of 32, 64, 128",
            ));
        }
        Ok(())
    }
}

/// A quantized `[out, in]` weight.
#[derive(Debug, Clone)]
pub struct QuantizedWeight {
    /// Packed integers.
    pub(crate) w: Array,
    /// Per-group scales.
    pub(crate) scales: Array,
    /// Per-group biases.
    pub(crate) biases: Array,
    /// The format.
    pub(crate) spec: QuantSpec,
    /// `[out, in]`.
    pub(crate) shape: [i32; 2],
}

impl QuantizedWeight {
    /// Quantizes `w` (`[out, in]`, `in` divisible by the group size).
    pub fn quantize(w: &Array, spec: QuantSpec, name: &str) -> Result<Self> {
        spec.validate()?;
        let shape = [w.dim(0), w.dim(1)];
        if shape[1] % spec.group_size != 0 {
            return Err(Error::Unsupported(format!(
                "`{name}`: input width {} is not a multiple of the quantization group size {}",
                shape[1], spec.group_size
            )));
        }
        let w32 = w.as_type::<f32>()?;
        let (q, scales, biases) = mlx_rs::ops::quantize(&w32, spec.group_size, spec.bits)?;
        Ok(Self {
            w: q,
            scales,
            biases,
            spec,
            shape,
        })
    }

    /// The dequantized weight `Ŵ` (f32 `[out, in]`).
    pub fn dequantize(&self) -> Result<Array> {
        Ok(mlx_rs::ops::dequantize(
            &self.w,
            &self.scales,
            &self.biases,
            self.spec.group_size,
            self.spec.bits,
        )?)
    }

    /// `x Ŵᵀ`.
    pub fn matmul_t(&self, x: &Array) -> Result<Array> {
        Ok(mlx_rs::ops::quantized_matmul(
            x,
            &self.w,
            &self.scales,
            &self.biases,
            true,
            self.spec.group_size,
            self.spec.bits,
        )?)
    }

    /// The format.
    pub fn spec(&self) -> QuantSpec {
        self.spec
    }
}
