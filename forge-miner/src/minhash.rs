//! Near-duplicate detection with MinHash and LSH banding.
//!
//! Broder, "On the resemblance and containment of documents" (1997); Leskovec,
//! Rajaraman, Ullman, *Mining of Massive Datasets*, ch. 3. For shingle sets `A`,
//! `B` and a random hash `h`:
//!
//! ```text
//! J(A, B) = |A ∩ B| / |A ∪ B|,   Pr[min h(A) = min h(B)] = J(A, B)
//! Ĵ(A, B) = (1/K) · Σ_{i=1..K} 1[m_i(A) = m_i(B)],   m_i(S) = min_{s ∈ S} h_i(s)
//! ```
//!
//! Shingles are `w = 5` consecutive whitespace-separated words (fewer words: one
//! shingle); `h_i(s) = mix64(fnv1a(s) ⊕ seed_i)` for `K = 64` fixed seeds. LSH
//! splits a signature into 16 bands of 4 rows; two texts become candidates when
//! one band is identical (probability `1 − (1 − J⁴)¹⁶`, ≈ 0.99 at J = 0.8), and
//! a candidate is a duplicate when `Ĵ ≥ threshold`. The first occurrence (input
//! order) is kept, so the result is deterministic.

use std::collections::HashMap;

use crate::hash::{fnv1a, mix64};

/// Number of hash functions.
pub(crate) const NUM_HASHES: usize = 64;
const BANDS: usize = 16;
const ROWS: usize = NUM_HASHES / BANDS;
const SHINGLE: usize = 5;

/// A MinHash signature.
pub type Signature = [u64; NUM_HASHES];

fn seeds() -> [u64; NUM_HASHES] {
    let mut s = [0u64; NUM_HASHES];
    for (i, v) in s.iter_mut().enumerate() {
        *v = mix64((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    s
}

/// Shingle hashes of `text`.
fn shingles(text: &str) -> Vec<u64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= SHINGLE {
        return vec![fnv1a(words.join(" ").as_bytes())];
    }
    words
        .windows(SHINGLE)
        .map(|w| fnv1a(w.join(" ").as_bytes()))
        .collect()
}

/// The MinHash signature of `text`.
pub fn signature(text: &str) -> Signature {
    let seeds = seeds();
    let mut sig = [u64::MAX; NUM_HASHES];
    for s in shingles(text) {
        for (m, seed) in sig.iter_mut().zip(seeds.iter()) {
            *m = (*m).min(mix64(s ^ seed));
        }
    }
    sig
}

/// `Ĵ`: the fraction of equal signature rows.
pub fn jaccard_estimate(a: &Signature, b: &Signature) -> f64 {
    a.iter().zip(b.iter()).filter(|(x, y)| x == y).count() as f64 / NUM_HASHES as f64
}

/// The exact Jaccard similarity of the shingle sets (for tests and audits).
pub fn jaccard(a: &str, b: &str) -> f64 {
    use std::collections::HashSet;
    let a: HashSet<u64> = shingles(a).into_iter().collect();
    let b: HashSet<u64> = shingles(b).into_iter().collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// For each text, whether it is a near duplicate (`Ĵ ≥ threshold`) of an
/// earlier text that was kept.
pub fn near_duplicates(texts: &[&str], threshold: f64) -> Vec<bool> {
    let sigs: Vec<Signature> = {
        use rayon::prelude::*;
        texts.par_iter().map(|t| signature(t)).collect()
    };
    let mut buckets: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut dup = vec![false; texts.len()];
    for (i, sig) in sigs.iter().enumerate() {
        let keys: Vec<(usize, u64)> = (0..BANDS)
            .map(|b| {
                let mut h = 0xcbf2_9ce4_8422_2325u64;
                for r in &sig[b * ROWS..(b + 1) * ROWS] {
                    h = mix64(h ^ r);
                }
                (b, h)
            })
            .collect();
        let is_dup = keys.iter().any(|k| {
            buckets.get(k).is_some_and(|cands| {
                cands
                    .iter()
                    .any(|&j| jaccard_estimate(&sigs[j], sig) >= threshold)
            })
        });
        if is_dup {
            dup[i] = true;
        } else {
            for k in keys {
                buckets.entry(k).or_default().push(i);
            }
        }
    }
    dup
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_and_disjoint() {
        let a = "fn add(a: u32, b: u32) -> u32 { a + b } // the sum of two numbers here";
        let b = "completely different words that share nothing at all with it, none whatsoever";
        assert_eq!(jaccard_estimate(&signature(a), &signature(a)), 1.0);
        assert!(jaccard_estimate(&signature(a), &signature(b)) < 0.1);
    }

    #[test]
    fn estimate_tracks_exact_jaccard() {
        let base: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
        let a = base.join(" ");
        let mut other = base.clone();
        for w in other.iter_mut().skip(180) {
            *w = format!("{w}x");
        }
        let b = other.join(" ");
        let exact = jaccard(&a, &b);
        let est = jaccard_estimate(&signature(&a), &signature(&b));
        assert!((exact - est).abs() < 0.2, "exact {exact} est {est}");
    }

    #[test]
    fn keeps_first_of_near_duplicates() {
        let long: String = (0..100).map(|i| format!("tok{i} ")).collect();
        let near = format!("{long} extra");
        let dups = near_duplicates(&[&long, "other text entirely", &near], 0.8);
        assert_eq!(dups, vec![false, false, true]);
    }
}
