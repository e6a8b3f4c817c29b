//! The adapter configuration.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linalg::SvdMode;
use crate::methods::Method;
use crate::quant::QuantSpec;
use crate::target::TargetRule;

/// What adapters to attach and how to initialise them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// The method.
    pub method: Method,
    /// Default rank `r`.
    pub rank: usize,
    /// Default `α` (scale `α/r`, or `α/√r` for rsLoRA).
    pub alpha: f32,
    /// Target rules, first match wins.
    pub targets: Vec<TargetRule>,
    /// Only layers `start..end` (all when `None`).
    pub layers: Option<(usize, usize)>,
    /// Seed of every random initialisation.
    pub seed: u64,
    /// PiSSA's SVD.
    pub svd: SvdMode,
    /// Quantize the targeted base weights (QLoRA, QPiSSA, CLoQ).
    pub quantized_base: Option<QuantSpec>,
    /// DoRA: treat the column norm as a constant in the backward pass (paper §4.3).
    pub dora_detach_norm: bool,
    /// CLoQ: Gram regularisation `λ` relative to the mean diagonal.
    pub cloq_lambda: f32,
}

impl PeftConfig {
    /// `method` at rank `rank` with `α = alpha`, targeting `q_proj` and
    /// `v_proj` of every layer, seed 0, randomized SVD (4 power iterations).
    pub fn new(method: Method, rank: usize, alpha: f32) -> Self {
        Self {
            method,
            rank,
            alpha,
            targets: vec![TargetRule::new("q_proj"), TargetRule::new("v_proj")],
            layers: None,
            seed: 0,
            svd: SvdMode::default(),
            quantized_base: None,
            dora_detach_norm: true,
            cloq_lambda: 1e-2,
        }
    }

    /// Replaces the targets by these patterns.
    #[must_use]
    pub fn with_targets<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Self {
        self.targets = patterns.into_iter().map(TargetRule::new).collect();
        self
    }

    /// Replaces the targets by these rules (per-pattern rank/alpha).
    #[must_use]
    pub fn with_target_rules(mut self, rules: Vec<TargetRule>) -> Self {
        self.targets = rules;
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

    /// PiSSA's SVD mode.
    #[must_use]
    pub fn with_svd(mut self, svd: SvdMode) -> Self {
        self.svd = svd;
        self
    }

    /// Quantize the targeted base weights.
    #[must_use]
    pub fn with_quantized_base(mut self, spec: QuantSpec) -> Self {
        self.quantized_base = Some(spec);
        self
    }

    /// DoRA's norm detaching.
    #[must_use]
    pub fn with_dora_detach_norm(mut self, detach: bool) -> Self {
        self.dora_detach_norm = detach;
        self
    }

    /// CLoQ's Gram regularisation.
    #[must_use]
    pub fn with_cloq_lambda(mut self, lambda: f32) -> Self {
        self.cloq_lambda = lambda;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::invalid("rank", 0, "at least 1"));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(Error::invalid("alpha", self.alpha, "a positive number"));
        }
        for t in &self.targets {
            if t.rank == Some(0) {
                return Err(Error::invalid(
                    "rank",
                    format!("0 for `{}`", t.pattern),
                    "at least 1",
                ));
            }
        }
        if self.targets.is_empty() {
            return Err(Error::NoTargets { patterns: vec![] });
        }
        if let Some(q) = &self.quantized_base {
            q.validate()?;
        } else if self.method == Method::Cloq {
            return Err(Error::invalid(
                "quantized_base",
                "none",
                "a quantization for CLoQ (it initialises against Q(W))",
            ));
        }
        if self.cloq_lambda.is_nan() || self.cloq_lambda < 0.0 {
            return Err(Error::invalid(
                "cloq_lambda",
                self.cloq_lambda,
                "a non-negative number",
            ));
        }
        Ok(())
    }
}
