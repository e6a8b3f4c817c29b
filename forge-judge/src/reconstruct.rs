//! Repository reconstruction: for held-out units of the user's own repository, the model
//! writes the body from the signature and docstring, and the body is scored against the
//! original by exact match, edit similarity and CodeBLEU.
//!
//! - **Exact match**: the bodies are equal after normalisation N (trailing whitespace removed
//!   from every line, leading and trailing blank lines dropped).
//! - **Edit similarity**: `1 − lev(N(a), N(b)) / max(|N(a)|, |N(b)|)` with `lev` the
//!   Levenshtein distance over Unicode scalar values (unit costs for insert, delete,
//!   substitute) and `|·|` the length in scalar values; 1 for two empty bodies. So exact
//!   match ⇒ similarity 1.
//! - **CodeBLEU** ([`crate::CodeBleu`], default mode) on the dedented bodies. For
//!   very short bodies (fewer than 4 tokens) BLEU-4 stays below 1 even for identical text.
//!
//! Aggregates are means over units (macro averages; CodeBLEU's is the mean of per-unit
//! scores, not a corpus-level CodeBLEU).
//!
//! By default the held-out units are those of the files changed since `HEAD~1` (forge-miner's
//! incremental mining): the most recent changes, which a model trained before them has not
//! seen. Only functions and methods with a body, whole (not split by sizing), in a language
//! CodeBLEU supports (Python, Rust) are kept.

use serde::{Deserialize, Serialize};

use crate::codebleu::{CodeBleu, CodeBleuScore, Lang};
use crate::report::{EvalResults, TaskScore};

/// One held-out unit: what the model is shown and what it should write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOutUnit {
    /// forge-miner's stable unit id.
    pub id: String,
    /// Repo-relative path.
    pub path: String,
    /// Qualified symbol.
    pub symbol: String,
    /// The language.
    pub lang: Lang,
    /// The unit's text up to its body: doc comments, attributes, signature and (Python)
    /// docstring, without trailing whitespace.
    pub prompt: String,
    /// The original continuation of the prompt: the whitespace before the body, then the body
    /// (Rust: the `{ … }` block; Python: the statements after the docstring).
    pub body: String,
}

/// Normalisation N: trailing whitespace removed from every line, leading and trailing blank
/// lines dropped, lines joined with `\n`.
#[must_use]
pub fn normalize_body(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    match (first, last) {
        (Some(a), Some(b)) => lines[a..=b].join("\n"),
        _ => String::new(),
    }
}

/// Levenshtein distance over Unicode scalar values (two rows, O(|a|·|b|) time).
#[must_use]
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (a, b) = if a.len() < b.len() { (b, a) } else { (a, b) };
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// `1 − lev(a, b) / max(|a|, |b|)`, 1 when both are empty (no normalisation applied).
#[must_use]
pub fn edit_similarity(a: &str, b: &str) -> f64 {
    let n = a.chars().count().max(b.chars().count());
    if n == 0 {
        return 1.0;
    }
    1.0 - levenshtein(a, b) as f64 / n as f64
}

/// Removes the common leading whitespace of the non-blank lines.
fn dedent(s: &str) -> String {
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    s.lines()
        .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The part of a generated continuation that is the body: Python up to the first non-blank
/// line indented no deeper than the definition; Rust up to the brace closing the first `{`
/// (strings, character literals and comments skipped). The whole text when the body has not
/// ended.
#[must_use]
pub fn cut_body(lang: Lang, prompt: &str, generated: &str) -> String {
    let end = body_end(lang, prompt, generated).unwrap_or(generated.len());
    generated[..end].to_string()
}

/// Where the body ends in `generated`, once it has.
fn body_end(lang: Lang, prompt: &str, generated: &str) -> Option<usize> {
    match lang {
        Lang::Python => {
            let def_line = prompt
                .lines()
                .find(|l| {
                    let t = l.trim_start();
                    t.starts_with("def ") || t.starts_with("async def ")
                })
                .unwrap_or("");
            let def_indent = def_line.len() - def_line.trim_start().len();
            let mut offset = 0;
            for (i, line) in generated.split_inclusive('\n').enumerate() {
                let body = line.trim_end_matches(['\n', '\r']);
                let indent = body.len() - body.trim_start().len();
                if i > 0 && !body.trim().is_empty() && indent <= def_indent {
                    return Some(offset);
                }
                offset += line.len();
            }
            None
        }
        Lang::Rust => {
            let b = generated.as_bytes();
            let mut depth = 0usize;
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'/' if b.get(i + 1) == Some(&b'/') => {
                        i = generated[i..].find('\n').map_or(b.len(), |n| i + n);
                        continue;
                    }
                    b'/' if b.get(i + 1) == Some(&b'*') => {
                        i = generated[i + 2..]
                            .find("*/")
                            .map_or(b.len(), |n| i + 2 + n + 2);
                        continue;
                    }
                    b'"' => {
                        i += 1;
                        while i < b.len() && b[i] != b'"' {
                            i += if b[i] == b'\\' { 2 } else { 1 };
                        }
                    }
                    b'\'' => {
                        // A char literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
                        let close = if b.get(i + 1) == Some(&b'\\') {
                            generated.get(i + 2..)?.find('\'').map(|n| i + 2 + n)
                        } else {
                            generated
                                .get(i + 1..)?
                                .chars()
                                .next()
                                .map(|c| i + 1 + c.len_utf8())
                                .filter(|&j| b.get(j) == Some(&b'\''))
                        };
                        if let Some(j) = close {
                            i = j;
                        }
                    }
                    b'{' => depth += 1,
                    b'}' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
    }
}

/// One unit's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitScore {
    /// Unit id.
    pub id: String,
    /// Repo-relative path.
    pub path: String,
    /// Qualified symbol.
    pub symbol: String,
    /// N(generated) == N(reference).
    pub exact_match: bool,
    /// Edit similarity of the normalised bodies.
    pub edit_similarity: f64,
    /// CodeBLEU of the dedented bodies, with its components.
    pub codebleu: CodeBleuScore,
    /// The generated body (after [`cut_body`]).
    pub generated: String,
}

/// Per-unit and aggregate scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reconstruction {
    /// Per unit, in input order.
    pub units: Vec<UnitScore>,
    /// Fraction of exact matches.
    pub exact_match: f64,
    /// Mean edit similarity.
    pub edit_similarity: f64,
    /// Mean CodeBLEU.
    pub codebleu: f64,
}

impl Reconstruction {
    /// As report results labelled `label`: metrics `exact_match`, `edit_similarity`,
    /// `codebleu` and one task per unit.
    #[must_use]
    pub fn to_results(&self, label: impl Into<String>) -> EvalResults {
        let mut r = EvalResults::new(label)
            .with_metric("exact_match", self.exact_match)
            .with_metric("edit_similarity", self.edit_similarity)
            .with_metric("codebleu", self.codebleu);
        for u in &self.units {
            r = r.with_task(TaskScore {
                id: format!("{} {}", u.path, u.symbol),
                scores: [
                    (
                        "exact_match".to_string(),
                        f64::from(u8::from(u.exact_match)),
                    ),
                    ("edit_similarity".to_string(), u.edit_similarity),
                    ("codebleu".to_string(), u.codebleu.codebleu),
                ]
                .into_iter()
                .collect(),
            });
        }
        r
    }
}

/// Scores `generated[i]` (already cut with [`cut_body`]) against `units[i].body`, in
/// parallel (rayon). Extra or missing generations are an error.
pub fn score_units(units: &[HeldOutUnit], generated: &[String]) -> crate::Result<Reconstruction> {
    use rayon::prelude::*;
    if units.len() != generated.len() {
        return Err(crate::Error::InvalidArgument(format!(
            "{} held-out units but {} generations",
            units.len(),
            generated.len()
        )));
    }
    let py = CodeBleu::new(Lang::Python);
    let rs = CodeBleu::new(Lang::Rust);
    let scores: Vec<UnitScore> = units
        .par_iter()
        .zip(generated)
        .map(|(u, g)| {
            let (nr, ng) = (normalize_body(&u.body), normalize_body(g));
            let full = |s: &str| dedent(s);
            let cb = match u.lang {
                Lang::Python => &py,
                Lang::Rust => &rs,
            };
            UnitScore {
                id: u.id.clone(),
                path: u.path.clone(),
                symbol: u.symbol.clone(),
                exact_match: nr == ng,
                edit_similarity: edit_similarity(&nr, &ng),
                codebleu: cb.score(&full(&u.body), &full(g)),
                generated: g.clone(),
            }
        })
        .collect();
    let n = scores.len().max(1) as f64;
    let mean = |f: &dyn Fn(&UnitScore) -> f64| scores.iter().map(f).sum::<f64>() / n;
    Ok(Reconstruction {
        exact_match: mean(&|s| f64::from(u8::from(s.exact_match))),
        edit_similarity: mean(&|s| s.edit_similarity),
        codebleu: mean(&|s| s.codebleu.codebleu),
        units: scores,
    })
}

/// Held-out units from already-mined files: whole functions and methods with a non-empty
/// body in Python or Rust, in the miner's order.
#[cfg(feature = "miner")]
pub fn held_out_from_mined(mined: &forge_miner::Mined) -> Vec<HeldOutUnit> {
    use forge_miner::UnitKind;
    mined
        .units()
        .filter(|u| matches!(u.kind, UnitKind::Function | UnitKind::Method) && u.part.is_none())
        .filter_map(|u| {
            let lang: Lang = u.language.parse().ok()?;
            let (a, _) = u.body?;
            let body = u.body_text()?.to_string();
            if body.trim().is_empty() {
                return None;
            }
            let head = u.text.get(..a.checked_sub(u.start_byte)?)?;
            // End the prompt on the last visible character (the docstring's quotes, the
            // return type): the whitespace before the body is the model's to write, as the
            // tokenizer would merge it with what follows.
            let prompt = head.trim_end();
            let body = format!("{}{body}", &head[prompt.len()..]);
            Some(HeldOutUnit {
                id: u.id.clone(),
                path: u.path.clone(),
                symbol: u.symbol.clone(),
                lang,
                prompt: prompt.to_string(),
                body,
            })
        })
        .collect()
}

/// Held-out units of the files of `repo` changed since git revision `since` (`HEAD~1`: the
/// most recent commit; uncommitted changes count too), through forge-miner's incremental
/// mining.
#[cfg(feature = "miner")]
pub fn held_out_since(repo: &std::path::Path, since: &str) -> crate::Result<Vec<HeldOutUnit>> {
    let mined = forge_miner::Miner::new(repo)
        .with_since(since)
        .mine(&forge_miner::NoProgress)
        .map_err(|e| crate::Error::InvalidArgument(format!("mining {}: {e}", repo.display())))?;
    Ok(held_out_from_mined(&mined))
}

/// Options of [`generate_bodies`].
#[cfg(feature = "model")]
#[derive(Clone, Debug)]
pub struct ReconstructOptions {
    /// Most tokens per body (default 256).
    pub max_tokens: usize,
    /// Sampler seed (greedy decoding does not use it; kept for the record).
    pub seed: u64,
}

#[cfg(feature = "model")]
impl Default for ReconstructOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            seed: 0,
        }
    }
}

/// Generates every unit's body greedily from its prompt, stopping as soon as the body is
/// complete ([`cut_body`]) or at eos / `max_tokens`; `progress(done, total)` after each unit.
#[cfg(feature = "model")]
pub fn generate_bodies(
    model: &mut forge_model::Model,
    tokenizer: &forge_model::Tokenizer,
    units: &[HeldOutUnit],
    options: &ReconstructOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> crate::Result<Vec<String>> {
    let opts = forge_model::GenerateOptions::new()
        .with_max_tokens(options.max_tokens)
        .with_temperature(0.0)
        .with_seed(options.seed);
    let mut out = Vec::with_capacity(units.len());
    let mut generator = forge_model::Generator::new(model, tokenizer);
    for (k, u) in units.iter().enumerate() {
        let mut stream = generator.stream(&u.prompt, &opts)?;
        let mut text = String::new();
        for piece in stream.by_ref() {
            text.push_str(&piece?);
            if let Some(end) = body_end(u.lang, &u.prompt, &text) {
                text.truncate(end);
                break;
            }
        }
        out.push(text);
        progress(k + 1, units.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_known_values() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
        assert_eq!(levenshtein("é", "e"), 1);
        assert!((edit_similarity("kitten", "sitting") - (1.0 - 3.0 / 7.0)).abs() < 1e-12);
        assert_eq!(edit_similarity("", ""), 1.0);
        assert_eq!(edit_similarity("abc", ""), 0.0);
    }

    #[test]
    fn cut_python_body_at_dedent() {
        let prompt = "def f(x):\n    \"\"\"Doc.\"\"\"\n    ";
        let generated = "y = x + 1\n    return y\n\ndef g():\n    pass\n";
        assert_eq!(
            cut_body(Lang::Python, prompt, generated),
            "y = x + 1\n    return y\n\n"
        );
    }

    #[test]
    fn cut_rust_body_at_closing_brace() {
        let generated =
            "{\n    let s = \"}\"; // }\n    let c = '}';\n    f::<'a>(s, c)\n}\nfn next() {}";
        assert_eq!(
            cut_body(Lang::Rust, "fn f() ", generated),
            "{\n    let s = \"}\"; // }\n    let c = '}';\n    f::<'a>(s, c)\n}"
        );
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize_body("\n\n  a  \n b\t\n\n"), "  a\n b");
        assert_eq!(normalize_body(" \n "), "");
    }
}
