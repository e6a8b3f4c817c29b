//! BLEU-4 with Chen & Cherry smoothing method 1 (epsilon 0.1), and the keyword-weighted
//! n-gram match of CodeBLEU, as in `codebleu==0.7.0` (`bleu.py`, `weighted_ngram_match.py`,
//! both derived from NLTK): corpus-level sums over one pair, the brevity penalty on the closest
//! reference length, and 0 when no unigram matches.

use rustc_hash::FxHashMap;

const EPSILON: f64 = 0.1;

/// The reference side, built once per reference: its vocabulary (ids in order of first
/// occurrence, which is Python's `Counter` order and fixes the order of the weighted sums),
/// unigram counts by id, and bigram to 4-gram counts keyed by packed ids.
#[derive(Clone, Debug, Default)]
pub(crate) struct RefGrams<'a> {
    len: usize,
    vocab: FxHashMap<&'a str, u32>,
    words: Vec<&'a str>,
    unigrams: Vec<u32>,
    /// Bigrams to 4-grams: packed ids → (number of the n-gram among its order, count).
    grams: [FxHashMap<u128, (u32, u32)>; 3],
}

fn pack(ids: &[u32]) -> u128 {
    ids.iter()
        .enumerate()
        .fold(0u128, |k, (i, &id)| k | (u128::from(id) << (32 * i)))
}

impl<'a> RefGrams<'a> {
    pub(crate) fn new(tokens: &[&'a str]) -> Self {
        let mut out = RefGrams {
            len: tokens.len(),
            ..Default::default()
        };
        let ids: Vec<u32> = tokens
            .iter()
            .map(|&t| {
                let next = out.words.len() as u32;
                let id = *out.vocab.entry(t).or_insert(next);
                if id == next {
                    out.words.push(t);
                    out.unigrams.push(0);
                }
                out.unigrams[id as usize] += 1;
                id
            })
            .collect();
        for (i, map) in out.grams.iter_mut().enumerate() {
            let n = i + 2;
            for w in ids.windows(n) {
                let next = map.len() as u32;
                map.entry(pack(w)).or_insert((next, 0)).1 += 1;
            }
        }
        out
    }
}

/// What a hypothesis shares with a reference: for each order, `Σ min(count_ref, count_hyp)`
/// over the n-grams both contain (the clipped count of either direction), and the
/// hypothesis's unigram counts by reference id.
pub(crate) struct Overlap {
    hyp_len: usize,
    matched: [u64; 4],
    unigrams: Vec<u32>,
}

/// Counts `hyp`'s n-grams against `reference`. A token the reference lacks breaks every
/// n-gram through it (none can match).
pub(crate) fn overlap(reference: &RefGrams<'_>, hyp: &[&str]) -> Overlap {
    const UNKNOWN: u32 = u32::MAX;
    let ids: Vec<u32> = hyp
        .iter()
        .map(|t| reference.vocab.get(t).copied().unwrap_or(UNKNOWN))
        .collect();
    let mut unigrams = vec![0u32; reference.words.len()];
    for &id in &ids {
        if id != UNKNOWN {
            unigrams[id as usize] += 1;
        }
    }
    let mut matched = [0u64; 4];
    matched[0] = unigrams
        .iter()
        .zip(&reference.unigrams)
        .map(|(&h, &r)| u64::from(h.min(r)))
        .sum();
    // Each hypothesis n-gram the reference has is counted under the reference's number for
    // it; the others cannot match.
    let mut counts: Vec<u32> = Vec::new();
    for (i, slot) in matched.iter_mut().enumerate().skip(1) {
        let n = i + 1;
        let rmap = &reference.grams[i - 1];
        counts.clear();
        counts.resize(rmap.len(), 0);
        for w in ids.windows(n) {
            if !w.contains(&UNKNOWN)
                && let Some(&(id, _)) = rmap.get(&pack(w))
            {
                counts[id as usize] += 1;
            }
        }
        *slot = rmap
            .values()
            .map(|&(id, r)| u64::from(r.min(counts[id as usize])))
            .sum();
    }
    Overlap {
        hyp_len: hyp.len(),
        matched,
        unigrams,
    }
}

/// Number of n-grams of order `n` in `len` tokens.
fn grams_in(len: usize, n: usize) -> u64 {
    (len + 1).saturating_sub(n) as u64
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

/// Sentence BLEU-4 of the hypothesis against one reference (modified precision: clipped
/// matches over the hypothesis's n-grams, smoothing method 1).
pub(crate) fn bleu(reference: &RefGrams<'_>, o: &Overlap) -> f64 {
    let mut p = [(0.0, 0.0); 4];
    for (i, slot) in p.iter_mut().enumerate() {
        let total = grams_in(o.hyp_len, i + 1);
        *slot = (o.matched[i] as f64, total.max(1) as f64);
    }
    combine(&p, reference.len, o.hyp_len)
}

/// Keyword-weighted n-gram match: a recall over the reference's n-grams where, for unigrams,
/// a keyword weighs 1 and any other token `other_weight` (0.2 in the paper). The unigram sums
/// run in the reference's first-occurrence order, as codebleu's do.
pub(crate) fn weighted_ngram_match(
    reference: &RefGrams<'_>,
    o: &Overlap,
    is_keyword: &dyn Fn(&str) -> bool,
    other_weight: f64,
    compat: bool,
) -> f64 {
    let mut p = [(0.0, 0.0); 4];
    let (mut num, mut den) = (0.0, 0.0);
    for ((&t, &c), &h) in reference
        .words
        .iter()
        .zip(&reference.unigrams)
        .zip(&o.unigrams)
    {
        let w = if is_keyword(t) { 1.0 } else { other_weight };
        num += f64::from(c.min(h)) * w;
        den += f64::from(c) * w;
    }
    p[0] = (num, f64::max(den, 1.0));
    for (i, slot) in p.iter_mut().enumerate().skip(1) {
        let total = grams_in(reference.len, i + 1);
        *slot = (o.matched[i] as f64, total.max(1) as f64);
    }
    // codebleu's `closest_ref_length` sees the (tokens, weights) pair, whose length is 2.
    let ref_len = if compat { 2 } else { reference.len };
    combine(&p, ref_len, o.hyp_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_docstring_value() {
        let h: Vec<&str> = "It is a guide to action which ensures that the military always obeys the commands of the party".split(' ').collect();
        let r: Vec<&str> = "It is a guide to action that ensures that the military will forever heed Party commands".split(' ').collect();
        // NLTK: sentence_bleu([reference1], hypothesis1) == 0.4118...
        let r = RefGrams::new(&r);
        assert!((bleu(&r, &overlap(&r, &h)) - 0.4118).abs() < 1e-4);
    }
}
