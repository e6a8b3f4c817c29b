//! CodeBLEU (Ren et al. 2020, "CodeBLEU: a Method for Automatic Evaluation of Code
//! Synthesis", arXiv 2009.10297):
//!
//! ```text
//! CodeBLEU = α·BLEU + β·BLEU_weight + γ·Match_ast + δ·Match_df      (α = β = γ = δ = 0.25)
//! ```
//!
//! - BLEU: BLEU-4 on whitespace tokens, smoothing method 1 of Chen & Cherry (ε = 0.1);
//! - BLEU_weight: n-gram match where, for unigrams, the language's keywords weigh 1 and other
//!   tokens 0.2 (a recall over the reference, as in the reference implementation);
//! - Match_ast = Count_clip(T_cand) / Count(T_ref) over syntax subtrees (tree-sitter);
//! - Match_df = Count_clip(DF_cand) / Count(DF_ref) over normalised dataflow edges.
//!
//! Two modes. **compat** reproduces PyPI `codebleu==0.7.0` (with tree-sitter-python 0.21.0,
//! tree-sitter-rust 0.21.2, `PYTHONHASHSEED=0`) to 1e-6, quirks included: the whitespace
//! tokenizer, its keyword lists, dataflow counted as 1 in the sum when the reference has no
//! dataflow, trees of the grammars codebleu is installed with (compiled by `build.rs`). The **default** mode keeps the metric but
//! fixes the dataflow quirk: when the reference has no dataflow edge the dataflow weight is
//! redistributed over the other three components and [`CodeBleuScore::warning`] says so.

mod bleu;
mod dataflow;
mod grammar;
mod pyset;
mod strip;
mod syntax;
mod tree;

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A language CodeBLEU can score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Python (tree-sitter-python).
    Python,
    /// Rust (tree-sitter-rust).
    Rust,
}

impl FromStr for Lang {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "python" | "py" => Ok(Lang::Python),
            "rust" | "rs" => Ok(Lang::Rust),
            other => Err(Error::UnsupportedLanguage(other.to_string())),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Python => "python",
            Lang::Rust => "rust",
        })
    }
}

/// The four components and their weighted sum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeBleuScore {
    /// The weighted sum.
    pub codebleu: f64,
    /// BLEU-4 on whitespace tokens.
    pub ngram_match: f64,
    /// Keyword-weighted n-gram match.
    pub weighted_ngram_match: f64,
    /// Syntax subtree match.
    pub syntax_match: f64,
    /// Dataflow match; 0 when the reference has no dataflow edge (see `warning`).
    pub dataflow_match: f64,
    /// Set when a component degenerated, saying how the sum handled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Component weights (α, β, γ, δ), 0.25 each by default.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// BLEU.
    pub ngram: f64,
    /// Keyword-weighted BLEU.
    pub weighted_ngram: f64,
    /// Syntax match.
    pub syntax: f64,
    /// Dataflow match.
    pub dataflow: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            ngram: 0.25,
            weighted_ngram: 0.25,
            syntax: 0.25,
            dataflow: 0.25,
        }
    }
}

/// CodeBLEU scorer for one language.
///
/// ```
/// use forge_judge::{CodeBleu, Lang};
/// let s = CodeBleu::new(Lang::Python).score("x = a + b\n", "x = a + b\n");
/// assert!((s.codebleu - 1.0).abs() < 1e-12);
/// ```
#[derive(Clone, Debug)]
pub struct CodeBleu {
    lang: Lang,
    weights: Weights,
    compat: bool,
    keyword_weight: f64,
}

impl CodeBleu {
    /// A scorer with weights 0.25 each, in the default (quirk-fixing) mode.
    #[must_use]
    pub fn new(lang: Lang) -> Self {
        Self {
            lang,
            weights: Weights::default(),
            compat: false,
            keyword_weight: 0.2,
        }
    }

    /// Set the component weights; they must be finite and non-negative.
    pub fn with_weights(mut self, weights: Weights) -> Result<Self> {
        let w = [
            weights.ngram,
            weights.weighted_ngram,
            weights.syntax,
            weights.dataflow,
        ];
        if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(Error::InvalidArgument(format!(
                "codebleu weights must be finite and >= 0, got {w:?}"
            )));
        }
        self.weights = weights;
        Ok(self)
    }

    /// Compatibility mode: reproduce `codebleu==0.7.0` exactly, quirks included.
    #[must_use]
    pub fn with_compat(mut self, compat: bool) -> Self {
        self.compat = compat;
        self
    }

    /// The language.
    #[must_use]
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// One snippet's tokens, flattened tree and dataflow edges.
    fn analyse<'a>(
        &self,
        text: &'a str,
    ) -> (Vec<&'a str>, Option<(tree::Flat, Vec<dataflow::NormEdge>)>) {
        let text = py_strip(text);
        let tokens = py_split(text);
        let code = match self.lang {
            Lang::Python => strip::strip_python(text),
            Lang::Rust => strip::strip_c_like(text),
        };
        let g = grammar::Grammar::new(self.lang, self.compat);
        let Some(parsed) = g.parse(&code) else {
            return (tokens, None);
        };
        let flat = tree::flatten(&g, &parsed);
        drop(parsed);
        let dataflow = dataflow::normalized_dataflow(&g, self.lang, &code, &flat);
        (tokens, Some((flat, dataflow)))
    }

    /// A reference: its n-gram counts and numbered subtrees besides.
    fn prepare_reference<'a>(&self, text: &'a str) -> Prepared<'a, syntax::RefSubtrees> {
        let (tokens, tree) = self.analyse(text);
        let g = grammar::Grammar::new(self.lang, self.compat);
        Prepared {
            ngrams: bleu::RefGrams::new(&tokens),
            tokens,
            tree: tree.map(|(flat, df)| (syntax::RefSubtrees::new(&g, &flat), df)),
        }
    }

    fn prepare_candidate<'a>(&self, text: &'a str) -> Prepared<'a, tree::Flat> {
        let (tokens, tree) = self.analyse(text);
        Prepared {
            ngrams: bleu::RefGrams::default(),
            tokens,
            tree,
        }
    }

    /// Score one candidate against one reference.
    #[must_use]
    pub fn score(&self, reference: &str, candidate: &str) -> CodeBleuScore {
        self.combine(
            &self.prepare_reference(reference),
            &self.prepare_candidate(candidate),
        )
    }

    fn combine(
        &self,
        reference: &Prepared<'_, syntax::RefSubtrees>,
        candidate: &Prepared<'_, tree::Flat>,
    ) -> CodeBleuScore {
        let overlap = bleu::overlap(&reference.ngrams, &candidate.tokens);
        let ngram = bleu::bleu(&reference.ngrams, &overlap);
        let weighted = bleu::weighted_ngram_match(
            &reference.ngrams,
            &overlap,
            &|t| grammar::is_keyword(self.lang, t),
            self.keyword_weight,
            self.compat,
        );
        let (syntax, dataflow, df_total) = match (&reference.tree, &candidate.tree) {
            (Some((rs, rd)), Some((cs, cd))) => {
                let g = grammar::Grammar::new(self.lang, self.compat);
                let (m, t) = rs.match_counts(&g, cs);
                let (dm, dt) = dataflow::match_counts(rd, cd);
                let df = if dt == 0 { 0.0 } else { dm as f64 / dt as f64 };
                (if t == 0 { 0.0 } else { m as f64 / t as f64 }, df, dt)
            }
            _ => (0.0, 0.0, 0),
        };
        let w = self.weights;
        let (codebleu, warning) = if self.compat && dataflow == 0.0 {
            // codebleu sums `theta * (dataflow_match_score or 1)`: a score of 0 counts as 1.
            let why = if df_total == 0 {
                "reference has no dataflow edge"
            } else {
                "no dataflow edge matched"
            };
            (
                w.ngram * ngram + w.weighted_ngram * weighted + w.syntax * syntax + w.dataflow,
                Some(format!(
                    "{why}: dataflow counted as 1 in the sum (codebleu 0.7.0 behaviour)"
                )),
            )
        } else if df_total > 0 {
            (
                w.ngram * ngram
                    + w.weighted_ngram * weighted
                    + w.syntax * syntax
                    + w.dataflow * dataflow,
                None,
            )
        } else {
            let rest = w.ngram + w.weighted_ngram + w.syntax;
            let total = rest + w.dataflow;
            let sum = w.ngram * ngram + w.weighted_ngram * weighted + w.syntax * syntax;
            let score = if rest > 0.0 { sum * total / rest } else { 0.0 };
            (score, Some("reference has no dataflow edge: dataflow left out, its weight spread over the other components".to_string()))
        };
        CodeBleuScore {
            codebleu,
            ngram_match: ngram,
            weighted_ngram_match: weighted,
            syntax_match: syntax,
            dataflow_match: dataflow,
            warning,
        }
    }

    /// Score many (reference, candidate) pairs in parallel (rayon); the order of the result is
    /// the order of the input. Each distinct reference is tokenised, parsed and analysed once,
    /// however many candidates it is paired with.
    #[must_use]
    pub fn score_batch<R: AsRef<str> + Sync, C: AsRef<str> + Sync>(
        &self,
        pairs: &[(R, C)],
    ) -> Vec<CodeBleuScore> {
        let mut seen: FxHashMap<&str, usize> = FxHashMap::default();
        let mut distinct: Vec<&str> = Vec::new();
        let ref_of: Vec<usize> = pairs
            .iter()
            .map(|(r, _)| {
                *seen.entry(r.as_ref()).or_insert_with(|| {
                    distinct.push(r.as_ref());
                    distinct.len() - 1
                })
            })
            .collect();
        let refs: Vec<Prepared<'_, syntax::RefSubtrees>> = distinct
            .par_iter()
            .map(|r| self.prepare_reference(r))
            .collect();
        pairs
            .par_iter()
            .zip(ref_of)
            .map(|((_, c), r)| self.combine(&refs[r], &self.prepare_candidate(c.as_ref())))
            .collect()
    }

    /// Score many candidates against one reference (e.g. the n samples of one task), in
    /// parallel, in input order; the reference is analysed once.
    #[must_use]
    pub fn score_candidates<C: AsRef<str> + Sync>(
        &self,
        reference: &str,
        candidates: &[C],
    ) -> Vec<CodeBleuScore> {
        let r = self.prepare_reference(reference);
        candidates
            .par_iter()
            .map(|c| self.combine(&r, &self.prepare_candidate(c.as_ref())))
            .collect()
    }
}

/// One snippet analysed for every component: `S` is the reference's numbered subtrees or a
/// candidate's flattened tree.
struct Prepared<'a, S> {
    tokens: Vec<&'a str>,
    /// Used when the snippet is the reference.
    ngrams: bleu::RefGrams<'a>,
    /// Syntax and normalised dataflow; `None` when tree-sitter returned no tree.
    tree: Option<(S, Vec<dataflow::NormEdge>)>,
}

/// Python's `str.isspace` for one character (Unicode whitespace plus `\x1c`..`\x1f`).
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `str.split()`.
fn py_split(s: &str) -> Vec<&str> {
    s.split(is_py_space).filter(|t| !t.is_empty()).collect()
}
