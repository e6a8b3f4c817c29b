//! BLEU-4 with Chen & Cherry smoothing method 1 (epsilon 0.1), and the keyword-weighted
//! n-gram match of CodeBLEU, as in `codebleu==0.7.0` (`bleu.py`, `weighted_ngram_match.py`,
//! both derived from NLTK): corpus-level sums over one pair, the brevity penalty on the closest
//! reference length, and 0 when no unigram matches.

use std::collections::HashMap;

const EPSILON: f64 = 0.1;

/// Counts of every n-gram of order `n`.
fn ngram_counts<'a>(tokens: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut map = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *map.entry(w).or_insert(0) += 1;
        }
    }
    map
}

fn brevity_penalty(closest_ref_len: usize, hyp_len: usize) -> f64 {
    if hyp_len > closest_ref_len {
        1.0
    } else if hyp_len == 0 {
        0.0
    } else {
        (1.0 - closest_ref_len as f64 / hyp_len as f64).exp()
    }
}

/// Geometric mean of the smoothed precisions times the brevity penalty.
fn combine(p: &[(f64, f64); 4], ref_len: usize, hyp_len: usize) -> f64 {
    if p[0].0 == 0.0 {
        return 0.0;
    }
    let bp = brevity_penalty(ref_len, hyp_len);
    let s: f64 = p
        .iter()
        .map(|&(num, den)| {
            let num = if num == 0.0 { EPSILON } else { num };
            0.25 * (num / den).ln()
        })
        .sum();
    bp * s.exp()
}

/// Sentence BLEU-4 of `hyp` against one reference (modified precision, smoothing method 1).
pub(crate) fn bleu(reference: &[&str], hyp: &[&str]) -> f64 {
    let mut p = [(0.0, 0.0); 4];
    for (i, slot) in p.iter_mut().enumerate() {
        let n = i + 1;
        let counts = ngram_counts(hyp, n);
        let ref_counts = ngram_counts(reference, n);
        let numerator: usize = counts
            .iter()
            .map(|(g, &c)| c.min(ref_counts.get(g).copied().unwrap_or(0)))
            .sum();
        let total: usize = counts.values().sum();
        *slot = (numerator as f64, total.max(1) as f64);
    }
    combine(&p, reference.len(), hyp.len())
}

/// Keyword-weighted n-gram match: a recall over the reference's n-grams where, for unigrams,
/// a keyword weighs 1 and any other token `other_weight` (0.2 in the paper).
pub(crate) fn weighted_ngram_match(
    reference: &[&str],
    hyp: &[&str],
    is_keyword: &dyn Fn(&str) -> bool,
    other_weight: f64,
    compat: bool,
) -> f64 {
    let mut p = [(0.0, 0.0); 4];
    for (i, slot) in p.iter_mut().enumerate() {
        let n = i + 1;
        let counts = ngram_counts(hyp, n);
        let ref_counts = ngram_counts(reference, n);
        let clipped = |g: &[&str], c: usize| c.min(counts.get(g).copied().unwrap_or(0));
        if n == 1 {
            let w = |g: &[&str]| {
                if is_keyword(g[0]) { 1.0 } else { other_weight }
            };
            let num: f64 = ref_counts
                .iter()
                .map(|(g, &c)| clipped(g, c) as f64 * w(g))
                .sum();
            let den: f64 = ref_counts.iter().map(|(g, &c)| c as f64 * w(g)).sum();
            *slot = (num, den.max(1.0));
        } else {
            let num: usize = ref_counts.iter().map(|(g, &c)| clipped(g, c)).sum();
            let den: usize = ref_counts.values().sum();
            *slot = (num as f64, den.max(1) as f64);
        }
    }
    // codebleu's `closest_ref_length` sees the (tokens, weights) pair, whose length is 2.
    let ref_len = if compat { 2 } else { reference.len() };
    combine(&p, ref_len, hyp.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_docstring_value() {
        let h: Vec<&str> = "It is a guide to action which ensures that the military always obeys the commands of the party".split(' ').collect();
        let r: Vec<&str> = "It is a guide to action that ensures that the military will forever heed Party commands".split(' ').collect();
        // NLTK: sentence_bleu([reference1], hypothesis1) == 0.4118...
        assert!((bleu(&r, &h) - 0.4118).abs() < 1e-4);
    }
}
