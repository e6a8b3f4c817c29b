//! The deployment gate: rules over a candidate's metrics and a baseline's, giving a pass/fail
//! verdict with one reason per failed rule.
//!
//! A rule names a metric and any of:
//!
//! ```text
//! min:                     c ≥ min                      (c: candidate value)
//! max:                     c ≤ max
//! max_regression:          s·(c − b) ≥ −ε               (b: baseline value, s = +1 when higher
//! max_relative_regression: s·(c − b) ≥ −ε·|b|            is better, −1 when lower is better)
//! ```
//!
//! Lower is better for metrics whose name contains `perplexity` or `loss`; higher for every
//! other metric. A metric missing from the candidate (or, for regression rules, from the
//! baseline) fails its rule: a gate never passes on data it did not see.
//!
//! ```toml
//! [[rule]]
//! metric = "codebleu"
//! min = 0.30
//! max_regression = 0.01
//!
//! [[rule]]
//! metric = "perplexity"
//! max_regression = 0.0      # not worse
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Whether a larger value of `metric` is better (`false` for perplexity and losses).
#[must_use]
pub fn higher_is_better(metric: &str) -> bool {
    let m = metric.to_ascii_lowercase();
    !(m.contains("perplexity") || m.contains("loss"))
}

/// One rule of the gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The metric's name (`codebleu`, `exact_match`, `edit_similarity`, `perplexity`,
    /// `mean_loss`, `pass@1`, …).
    pub metric: String,
    /// Lowest acceptable candidate value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest acceptable candidate value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Largest acceptable regression against the baseline, in the metric's units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_regression: Option<f64>,
    /// Largest acceptable regression as a fraction of the baseline's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_relative_regression: Option<f64>,
}

impl Rule {
    /// A rule on `metric` with no condition yet.
    #[must_use]
    pub fn new(metric: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            min: None,
            max: None,
            max_regression: None,
            max_relative_regression: None,
        }
    }

    /// Require `candidate ≥ v`.
    #[must_use]
    pub fn with_min(mut self, v: f64) -> Self {
        self.min = Some(v);
        self
    }

    /// Require `candidate ≤ v`.
    #[must_use]
    pub fn with_max(mut self, v: f64) -> Self {
        self.max = Some(v);
        self
    }

    /// Allow at most `eps` of regression against the baseline (0: not worse).
    #[must_use]
    pub fn with_max_regression(mut self, eps: f64) -> Self {
        self.max_regression = Some(eps);
        self
    }

    /// Allow at most `frac · |baseline|` of regression against the baseline.
    #[must_use]
    pub fn with_max_relative_regression(mut self, frac: f64) -> Self {
        self.max_relative_regression = Some(frac);
        self
    }

    fn check(&self, name: &str) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidArgument(format!("gate {name}: {why}")));
        if self.metric.trim().is_empty() {
            return bad("empty metric name");
        }
        let conds = [
            self.min,
            self.max,
            self.max_regression,
            self.max_relative_regression,
        ];
        if conds.iter().all(Option::is_none) {
            return bad(&format!(
                "rule on {:?} has no condition (min, max, max_regression, max_relative_regression)",
                self.metric
            ));
        }
        if conds.iter().flatten().any(|v| !v.is_finite()) {
            return bad(&format!("rule on {:?} has a non-finite bound", self.metric));
        }
        if self.max_regression.is_some_and(|v| v < 0.0)
            || self.max_relative_regression.is_some_and(|v| v < 0.0)
        {
            return bad(&format!(
                "rule on {:?}: a regression tolerance must be >= 0",
                self.metric
            ));
        }
        Ok(())
    }
}

/// The gate: a list of rules, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The rules, `[[rule]]` in TOML.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// The outcome of one condition of one rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The metric.
    pub metric: String,
    /// The condition, e.g. `codebleu >= 0.3` or `perplexity not worse than baseline by > 0`.
    pub condition: String,
    /// Whether it held.
    pub passed: bool,
    /// The candidate's value, if it has the metric.
    pub candidate: Option<f64>,
    /// The baseline's value, if it has the metric.
    pub baseline: Option<f64>,
    /// Why it failed (`None` when it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Pass/fail with every check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// True when every check passed (and there was at least one).
    pub passed: bool,
    /// Every condition of every rule, in rule order.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// The reasons of the failed checks, one per failed condition.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().filter_map(|c| c.reason.as_deref())
    }
}

impl Gate {
    /// A gate with `rules`; each must name a metric and have at least one valid condition.
    pub fn new(rules: Vec<Rule>) -> Result<Self> {
        let g = Self { rules };
        g.validate("rules")?;
        Ok(g)
    }

    /// A sensible default: CodeBLEU no more than 0.01 below the baseline and perplexity not
    /// worse than the baseline by more than 1 %.
    #[must_use]
    pub fn default_rules() -> Self {
        Self {
            rules: vec![
                Rule::new("codebleu").with_max_regression(0.01),
                Rule::new("perplexity").with_max_relative_regression(0.01),
            ],
        }
    }

    /// Parses a TOML gate.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let g: Gate = toml::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("gate {origin}: {e}")))?;
        g.validate(origin)?;
        Ok(g)
    }

    /// Reads a TOML gate file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    fn validate(&self, origin: &str) -> Result<()> {
        if self.rules.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "gate {origin}: no [[rule]]"
            )));
        }
        for (i, r) in self.rules.iter().enumerate() {
            r.check(&format!("{origin} rule {}", i + 1))?;
        }
        Ok(())
    }

    /// Applies every rule to the candidate's and the baseline's metrics.
    #[must_use]
    pub fn evaluate(
        &self,
        candidate: &BTreeMap<String, f64>,
        baseline: &BTreeMap<String, f64>,
    ) -> Verdict {
        let mut checks = Vec::new();
        for r in &self.rules {
            let m = r.metric.as_str();
            let c = candidate.get(m).copied().filter(|v| v.is_finite());
            let b = baseline.get(m).copied().filter(|v| v.is_finite());
            let mut push = |condition: String, ok: Option<bool>, why: String| {
                let passed = ok == Some(true);
                checks.push(Check {
                    metric: m.to_string(),
                    condition,
                    passed,
                    candidate: c,
                    baseline: b,
                    reason: (!passed).then_some(why),
                });
            };
            let missing_c = || format!("{m}: the candidate has no (finite) value");
            if let Some(min) = r.min {
                push(
                    format!("{m} >= {min}"),
                    c.map(|c| c >= min),
                    c.map_or_else(missing_c, |c| {
                        format!("{m} = {c:.6} is below the minimum {min}")
                    }),
                );
            }
            if let Some(max) = r.max {
                push(
                    format!("{m} <= {max}"),
                    c.map(|c| c <= max),
                    c.map_or_else(missing_c, |c| {
                        format!("{m} = {c:.6} is above the maximum {max}")
                    }),
                );
            }
            let sign = if higher_is_better(m) { 1.0 } else { -1.0 };
            let worse = if sign > 0.0 { "lower" } else { "higher" };
            for (tol, relative) in [(r.max_regression, false), (r.max_relative_regression, true)] {
                let Some(tol) = tol else { continue };
                let condition = if relative {
                    format!("{m} regresses by at most {}% of the baseline", tol * 100.0)
                } else {
                    format!("{m} regresses by at most {tol} against the baseline")
                };
                let (ok, why) = match (c, b) {
                    (None, _) => (None, missing_c()),
                    (Some(_), None) => (
                        None,
                        format!("{m}: the baseline has no (finite) value to compare with"),
                    ),
                    (Some(c), Some(b)) => {
                        let allowed = if relative { tol * b.abs() } else { tol };
                        let regression = -sign * (c - b);
                        (
                            Some(regression <= allowed),
                            format!(
                                "{m} = {c:.6} is {worse} than the baseline {b:.6} by {regression:.6} (allowed {allowed:.6})"
                            ),
                        )
                    }
                };
                push(condition, ok, why);
            }
        }
        let passed = !checks.is_empty() && checks.iter().all(|c| c.passed);
        Verdict { passed, checks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }

    #[test]
    fn direction_and_reasons() {
        let g = Gate::from_toml_str(
            r#"
[[rule]]
metric = "codebleu"
min = 0.3
max_regression = 0.01

[[rule]]
metric = "perplexity"
max_regression = 0.0

[[rule]]
metric = "pass@1"
min = 0.5
"#,
            "test",
        )
        .expect("gate");
        let base = m(&[("codebleu", 0.40), ("perplexity", 5.0)]);
        let good = m(&[("codebleu", 0.395), ("perplexity", 4.9), ("pass@1", 0.6)]);
        let v = g.evaluate(&good, &base);
        assert!(v.passed, "{v:?}");
        assert_eq!(v.reasons().count(), 0);
        assert_eq!(v.checks.len(), 4);

        let bad = m(&[("codebleu", 0.25), ("perplexity", 5.1)]);
        let v = g.evaluate(&bad, &base);
        assert!(!v.passed);
        let reasons: Vec<&str> = v.reasons().collect();
        // One reason per failed condition: min, regression, perplexity, missing pass@1.
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].contains("below the minimum 0.3"));
        assert!(reasons[1].contains("lower than the baseline"));
        assert!(reasons[2].contains("perplexity = 5.100000 is higher"));
        assert!(reasons[3].contains("pass@1: the candidate has no"));
    }

    #[test]
    fn relative_regression_and_missing_baseline() {
        let g = Gate::new(vec![
            Rule::new("perplexity").with_max_relative_regression(0.02),
        ])
        .expect("gate");
        let v = g.evaluate(&m(&[("perplexity", 10.1)]), &m(&[("perplexity", 10.0)]));
        assert!(v.passed);
        let v = g.evaluate(&m(&[("perplexity", 10.3)]), &m(&[("perplexity", 10.0)]));
        assert!(!v.passed);
        let v = g.evaluate(&m(&[("perplexity", 10.0)]), &m(&[]));
        assert!(!v.passed);
        assert!(
            v.checks[0]
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("baseline has no")
        );
    }

    #[test]
    fn invalid_gates_are_refused() {
        assert!(Gate::from_toml_str("", "empty").is_err());
        assert!(Gate::from_toml_str("[[rule]]\nmetric = \"codebleu\"\n", "nocond").is_err());
        assert!(
            Gate::from_toml_str("[[rule]]\nmetric = \"x\"\nmax_regression = -1\n", "neg").is_err()
        );
        let e = Gate::from_toml_str("[[rule]]\nmetrc = \"x\"\n", "typo.toml").unwrap_err();
        assert!(e.to_string().contains("typo.toml"), "{e}");
    }
}
