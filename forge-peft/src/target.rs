//! Which linear layers get adapters: name patterns, layer ranges, and
//! per-pattern rank/alpha.
//!
//! Module names are forge-model's checkpoint names without `.weight`:
//! `model.layers.{i}.self_attn.{q,k,v,o}_proj` and
//! `model.layers.{i}.mlp.{gate,up,down}_proj`. A pattern is
//!
//! - `all-linear`: the seven projections of every layer (not `lm_head`);
//! - `re:<regex>`: a regular expression that must match the whole name;
//! - anything else: a name suffix on a `.` boundary (`q_proj`,
//!   `self_attn.q_proj`, `layers.3.mlp.up_proj`), as PEFT's list form.
//!
//! The first rule that matches decides the rank and alpha.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One target pattern with an optional rank/alpha override.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRule {
    /// The pattern (`q_proj`, `all-linear`, `re:.*\.(q|v)_proj`).
    pub pattern: String,
    /// Rank for the modules it matches (default: the config's rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Alpha for the modules it matches (default: the config's alpha).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
}

impl TargetRule {
    /// A rule with the default rank and alpha.
    pub fn new(pattern: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            rank: None,
            alpha: None,
        }
    }

    /// Overrides the rank.
    #[must_use]
    pub fn with_rank(mut self, rank: usize) -> Self {
        self.rank = Some(rank);
        self
    }

    /// Overrides alpha.
    #[must_use]
    pub fn with_alpha(mut self, alpha: f32) -> Self {
        self.alpha = Some(alpha);
        self
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    AllLinear,
    Suffix(String),
    Regex(Regex),
}

impl Matcher {
    fn parse(p: &str) -> Result<Self> {
        if p == "all-linear" {
            Ok(Matcher::AllLinear)
        } else if let Some(re) = p.strip_prefix("re:") {
            Regex::new(&format!("^(?:{re})$"))
                .map(Matcher::Regex)
                .map_err(|e| Error::Pattern {
                    pattern: p.to_string(),
                    message: e.to_string(),
                })
        } else if p.is_empty() {
            Err(Error::Pattern {
                pattern: p.to_string(),
                message: "empty pattern".into(),
            })
        } else {
            Ok(Matcher::Suffix(p.to_string()))
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::AllLinear => true,
            Matcher::Suffix(s) => name == s || name.ends_with(&format!(".{s}")),
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

/// Compiled targeting: rules plus an optional layer range.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    rules: Vec<(Matcher, Option<usize>, Option<f32>)>,
    layers: Option<(usize, usize)>,
}

impl Targets {
    pub(crate) fn compile(rules: &[TargetRule], layers: Option<(usize, usize)>) -> Result<Self> {
        Ok(Self {
            rules: rules
                .iter()
                .map(|r| Ok((Matcher::parse(&r.pattern)?, r.rank, r.alpha)))
                .collect::<Result<_>>()?,
            layers,
        })
    }

    /// `Some((rank override, alpha override))` when `name` in `layer` is targeted.
    pub(crate) fn lookup(&self, name: &str, layer: usize) -> Option<(Option<usize>, Option<f32>)> {
        if let Some((lo, hi)) = self.layers
            && !(lo..hi).contains(&layer)
        {
            return None;
        }
        self.rules
            .iter()
            .find(|(m, _, _)| m.matches(name))
            .map(|(_, r, a)| (*r, *a))
    }
}
