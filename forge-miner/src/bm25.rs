//! Okapi BM25 retrieval, used to pick RAFT's hard-negative distractors.
//!
//! Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and
//! Beyond" (2009). For a query `Q = q_1 … q_n` and a document `D`:
//!
//! ```text
//! score(D, Q) = Σ_i IDF(q_i) · f(q_i, D) · (k1 + 1)
//!                            / (f(q_i, D) + k1 · (1 − b + b · |D| / avgdl))
//! IDF(q)      = ln((N − n(q) + 0.5) / (n(q) + 0.5) + 1)
//! ```
//!
//! with `f` the term frequency, `|D|` the document length in terms, `avgdl` the
//! mean length, `N` the number of documents and `n(q)` those containing `q`;
//! `k1 = 1.2`, `b = 0.75`. The `+ 1` inside the logarithm (Lucene's variant)
//! keeps IDF positive for terms in more than half of the documents.
//!
//! Code is tokenised into lowercase identifiers plus their `snake_case` and
//! `camelCase` parts, so `parse_header` matches a question about "header".

use std::collections::HashMap;

/// An inverted index scored with Okapi BM25.
#[derive(Debug, Clone)]
pub struct Bm25 {
    k1: f64,
    b: f64,
    doc_len: Vec<u32>,
    avgdl: f64,
    postings: HashMap<String, Vec<(u32, u32)>>,
}

impl Bm25 {
    /// `k1` of Okapi BM25.
    pub const K1: f64 = 1.2;
    /// `b` of Okapi BM25.
    pub const B: f64 = 0.75;

    /// Indexes tokenised documents with `k1 = 1.2`, `b = 0.75`.
    pub fn new(docs: &[Vec<String>]) -> Self {
        Self::with_params(docs, Self::K1, Self::B)
    }

    /// Indexes tokenised documents with the given parameters.
    pub fn with_params(docs: &[Vec<String>], k1: f64, b: f64) -> Self {
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut doc_len = Vec::with_capacity(docs.len());
        for (d, terms) in docs.iter().enumerate() {
            doc_len.push(terms.len() as u32);
            let mut tf: HashMap<&str, u32> = HashMap::new();
            for t in terms {
                *tf.entry(t.as_str()).or_insert(0) += 1;
            }
            for (t, f) in tf {
                postings
                    .entry(t.to_string())
                    .or_default()
                    .push((d as u32, f));
            }
        }
        let total: u64 = doc_len.iter().map(|&l| u64::from(l)).sum();
        let avgdl = if docs.is_empty() {
            0.0
        } else {
            total as f64 / docs.len() as f64
        };
        Self {
            k1,
            b,
            doc_len,
            avgdl,
            postings,
        }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.doc_len.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.doc_len.is_empty()
    }

    /// `IDF(q)` as defined above.
    pub fn idf(&self, term: &str) -> f64 {
        let n = self.postings.get(term).map_or(0, Vec::len) as f64;
        let total = self.len() as f64;
        ((total - n + 0.5) / (n + 0.5) + 1.0).ln()
    }

    /// The `k` best documents for `query` (unique terms), skipping those for
    /// which `exclude` is true; ties broken by document index. Documents with
    /// score 0 are not returned.
    pub fn search(
        &self,
        query: &[String],
        k: usize,
        exclude: impl Fn(usize) -> bool,
    ) -> Vec<(usize, f64)> {
        let mut terms: Vec<&str> = query.iter().map(String::as_str).collect();
        terms.sort_unstable();
        terms.dedup();
        let mut scores: HashMap<u32, f64> = HashMap::new();
        for t in terms {
            let Some(post) = self.postings.get(t) else {
                continue;
            };
            let idf = self.idf(t);
            for &(d, f) in post {
                let f = f64::from(f);
                let norm = 1.0 - self.b
                    + self.b * f64::from(self.doc_len[d as usize]) / self.avgdl.max(1e-9);
                *scores.entry(d).or_insert(0.0) += idf * f * (self.k1 + 1.0) / (f + self.k1 * norm);
            }
        }
        let mut ranked: Vec<(usize, f64)> = scores
            .into_iter()
            .map(|(d, s)| (d as usize, s))
            .filter(|&(d, s)| s > 0.0 && !exclude(d))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

/// Lowercase identifier terms of code or prose, with `snake_case`/`camelCase`
/// parts added for multi-part identifiers.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let word = word.trim_matches('_');
        if word.is_empty() {
            continue;
        }
        let lower = word.to_lowercase();
        let parts = split_identifier(word);
        if parts.len() > 1 {
            out.extend(parts.into_iter().filter(|p| p.len() > 1));
        }
        if lower.len() > 1 {
            out.push(lower);
        }
    }
    out
}

fn split_identifier(word: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for piece in word.split('_').filter(|p| !p.is_empty()) {
        let mut cur = String::new();
        let chars: Vec<char> = piece.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            let boundary = i > 0
                && c.is_uppercase()
                && (chars[i - 1].is_lowercase()
                    || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
            if boundary && !cur.is_empty() {
                parts.push(std::mem::take(&mut cur).to_lowercase());
            }
            cur.push(c);
        }
        if !cur.is_empty() {
            parts.push(cur.to_lowercase());
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizes_identifiers() {
        let t = tokenize("fn parse_header(r: &mut GgufReader) -> HTTPServer");
        for w in [
            "parse",
            "header",
            "parse_header",
            "gguf",
            "reader",
            "ggufreader",
            "http",
            "server",
        ] {
            assert!(t.contains(&w.to_string()), "{w} missing from {t:?}");
        }
    }

    #[test]
    fn scores_match_hand_computation() {
        let docs: Vec<Vec<String>> = ["a b c", "a a d", "e f g h"]
            .iter()
            .map(|d| d.split(' ').map(str::to_string).collect())
            .collect();
        let ix = Bm25::new(&docs);
        // avgdl = 10/3; doc 1: f(a)=2, |D|=3; n(a)=2, N=3.
        let idf = ((3.0 - 2.0 + 0.5) / (2.0 + 0.5) + 1.0f64).ln();
        let norm = 1.0 - 0.75 + 0.75 * 3.0 / (10.0 / 3.0);
        let expected = idf * 2.0 * 2.2 / (2.0 + 1.2 * norm);
        let r = ix.search(&["a".to_string()], 3, |_| false);
        assert_eq!(r[0].0, 1);
        assert!((r[0].1 - expected).abs() < 1e-12);
        assert_eq!(r.len(), 2);
        let r = ix.search(&["a".to_string()], 3, |d| d == 1);
        assert_eq!(r[0].0, 0);
    }
}
