//! BLEU-4 with Chen & Cherry smoothing method 1 (epsilon 0.1), and the keyword-weighted
//! n-gram match of CodeBLEU, as in `codebleu==0.7.0` (`bleu.py`, `weighted_ngram_match.py`,
//! both derived from NLTK): corpus-level sums over one pair, the brevity penalty on the closest
//! reference length, and 0 when no unigram matches.

use rustc_hash::FxHashMap;

const EPSILON: f64 = 0.1;

/// An n-gram of order 1 to 4, unused slots empty.
type Gram<'a> = [&'a str; 4];

/// One side's token counts for orders 1 to 4, built once and reused for every pair the side
/// takes part in.
#[derive(Clone, Debug, Default)]
pub(crate) struct NGrams<'a> {
    len: usize,
    counts: [FxHashMap<Gram<'a>, u32>; 4],
    /// Distinct unigrams in order of first occurrence (Python's `Counter` order, which fixes
    /// the order of the weighted sums).
    unigrams: Vec<&'a str>,
}

impl<'a> NGrams<'a> {
    pub(crate) fn new(tokens: &[&'a str]) -> Self {
        let mut out = NGrams {
            len: tokens.len(),
            ..Default::default()
        };
        for (i, map) in out.counts.iter_mut().enumerate() {
            let n = i + 1;
            if tokens.len() < n {
                continue;
            }
            map.reserve(tokens.len() + 1 - n);
            for w in tokens.windows(n) {
                let mut g: Gram<'a> = [""; 4];
                g[..n].copy_from_slice(w);
                let c = map.entry(g).or_insert(0);
                if *c == 0 && n == 1 {
                    out.unigrams.push(w[0]);
                }
                *c += 1;
            }
        }
        out
    }

    fn get(&self, n: usize, g: &Gram<'a>) -> u32 {
        self.counts[n - 1].get(g).copied().unwrap_or(0)
    }
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
pub(crate) fn bleu(reference: &NGrams<'_>, hyp: &NGrams<'_>) -> f64 {
    let mut p = [(0.0, 0.0); 4];
    for (i, slot) in p.iter_mut().enumerate() {
        let n = i + 1;
        let mut numerator = 0u64;
        let mut total = 0u64;
        for (g, &c) in &hyp.counts[i] {
            numerator += u64::from(c.min(reference.get(n, g)));
            total += u64::from(c);
        }
        *slot = (numerator as f64, total.max(1) as f64);
    }
    combine(&p, reference.len, hyp.len)
}

/// Keyword-weighted n-gram match: a recall over the reference's n-grams where, for unigrams,
/// a keyword weighs 1 and any other token `other_weight` (0.2 in the paper). The unigram sums
/// run in the reference's first-occurrence order, as codebleu's do.
pub(crate) fn weighted_ngram_match(
    reference: &NGrams<'_>,
    hyp: &NGrams<'_>,
    is_keyword: &dyn Fn(&str) -> bool,
    other_weight: f64,
    compat: bool,
) -> f64 {
    let mut p = [(0.0, 0.0); 4];
    for (i, slot) in p.iter_mut().enumerate() {
        let n = i + 1;
        if n == 1 {
            let mut num = 0.0;
            let mut den = 0.0;
            for &t in &reference.unigrams {
                let g = [t, "", "", ""];
                let c = reference.get(1, &g);
                let w = if is_keyword(t) { 1.0 } else { other_weight };
                num += f64::from(c.min(hyp.get(1, &g))) * w;
                den += f64::from(c) * w;
            }
            *slot = (num, f64::max(den, 1.0));
        } else {
            let mut num = 0u64;
            let mut den = 0u64;
            for (g, &c) in &reference.counts[i] {
                num += u64::from(c.min(hyp.get(n, g)));
                den += u64::from(c);
            }
            *slot = (num as f64, den.max(1) as f64);
        }
    }
    // codebleu's `closest_ref_length` sees the (tokens, weights) pair, whose length is 2.
    let ref_len = if compat { 2 } else { reference.len };
    combine(&p, ref_len, hyp.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_docstring_value() {
        let h: Vec<&str> = "It is a guide to action which ensures that the military always obeys the commands of the party".split(' ').collect();
        let r: Vec<&str> = "It is a guide to action that ensures that the military will forever heed Party commands".split(' ').collect();
        // NLTK: sentence_bleu([reference1], hypothesis1) == 0.4118...
        assert!((bleu(&NGrams::new(&r), &NGrams::new(&h)) - 0.4118).abs() < 1e-4);
    }
}
