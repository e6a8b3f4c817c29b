//! The adapter methods and their initialisations.
//!
//! Convention everywhere (PyTorch/PEFT layout): a linear layer computes
//! `y = x Wᵀ + b` with `W ∈ ℝ^{out×in}`; an adapter adds `s · B A` with
//! `A ∈ ℝ^{r×in}` (`lora_A`), `B ∈ ℝ^{out×r}` (`lora_B`) and scale `s`.

pub(crate) mod cloq;
pub(crate) mod dlp_lora;
pub(crate) mod dora;
pub(crate) mod lora;
pub(crate) mod moe_lora;
pub(crate) mod pissa;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An adapter method. A quantized base (QLoRA, QPiSSA, CLoQ) is chosen
/// separately with [`crate::PeftConfig::with_quantized_base`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// LoRA (Hu et al. 2021): A Kaiming-uniform, B = 0, `s = α/r`.
    Lora,
    /// rsLoRA / RoRA (Kalajdzievski 2023; arXiv 2501.04315): LoRA with `s = α/√r`.
    RsLora,
    /// PiSSA (Meng et al. 2024): A, B from the top-r SVD of W, base = residual.
    /// With a quantized base this is QPiSSA.
    Pissa,
    /// DoRA (Liu et al. 2024): magnitude vector times the normalised direction.
    Dora,
    /// CLoQ (Deng et al. 2025): calibrated closed-form init over a quantized base.
    Cloq,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 5] = [
        Method::Lora,
        Method::RsLora,
        Method::Pissa,
        Method::Dora,
        Method::Cloq,
    ];

    /// The config name (`lora`, `rs-lora`, `pissa`, `dora`, `cloq`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Lora => "lora",
            Method::RsLora => "rs-lora",
            Method::Pissa => "pissa",
            Method::Dora => "dora",
            Method::Cloq => "cloq",
        }
    }

    /// Parses a method name; `rora`/`rslora` alias `rs-lora`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "lora" => Method::Lora,
            "rs-lora" | "rslora" | "rora" => Method::RsLora,
            "pissa" => Method::Pissa,
            "dora" => Method::Dora,
            "cloq" => Method::Cloq,
            other => {
                return Err(Error::invalid(
                    "method",
                    format!("{other:?}"),
                    "one of lora, rs-lora (rora), pissa, dora, cloq",
                ));
            }
        })
    }

    /// The adapter scale `s` for rank `r` and `α`.
    pub fn scale(self, rank: usize, alpha: f32) -> f32 {
        match self {
            Method::RsLora => alpha / (rank as f32).sqrt(),
            _ => alpha / rank as f32,
        }
    }
}
