//! cAST sizing: split-then-merge chunking over the syntax tree.
//!
//! Paper: Zhang et al., "cAST: Enhancing Code Retrieval-Augmented Generation with
//! Structural Chunking via Abstract Syntax Tree", arXiv:2506.15655 (2025), Alg. 1.
//!
//! For a budget `B` and a size function `|·|` (characters or tokens), a sequence
//! of sibling pieces `n_1 … n_m` is chunked greedily, left to right:
//!
//! ```text
//! if |cur| + |n_i| ≤ B          cur ← cur ⊕ n_i                  (merge)
//! else if |n_i| ≤ B             emit cur; cur ← n_i               (start a chunk)
//! else                          chunk(children(n_i)) in place     (split, recursively)
//! ```
//!
//! A node is only ever cut when it is larger than `B`, so **no piece that fits the
//! budget is cut** (a node that fits is added whole the first time the walk meets
//! it or one of its ancestors). Pieces tile their parent: child `i` spans from the
//! end of child `i-1` (or the parent's start) to its own end, the last child to
//! the parent's end, so the whitespace between nodes travels with the next node
//! and chunks of a file in cover mode re-join to the file exactly. A piece whose
//! node fits but whose leading/trailing whitespace does not is split into gap and
//! node first. Leaves larger than `B` (a 10 MB string literal) fall back to line
//! boundaries, then to character (or token) boundaries.
//!
//! The walk uses an explicit stack, so a 10,000-level nesting cannot overflow
//! the call stack; below [`MAX_DEPTH`] levels pieces are treated as plain text.
//! With a token budget, sizes of merged pieces are summed (the paper's additive
//! size); the text of a merged chunk may tokenize slightly differently.

use std::sync::Arc;

use tokenizers::Tokenizer;
use tree_sitter::Node;

/// Below this depth a node's text is split at line boundaries instead of by children.
pub(crate) const MAX_DEPTH: usize = 1024;

/// The size budget of a chunk or unit.
#[derive(Clone)]
pub enum Budget {
    /// Unicode scalar values (`str::chars().count()`), what `text-splitter` counts.
    Chars(usize),
    /// Tokens of a Hugging Face tokenizer (no special tokens).
    Tokens {
        /// The tokenizer.
        tokenizer: Arc<Tokenizer>,
        /// Maximum tokens.
        max: usize,
    },
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Chars(n) => write!(f, "Chars({n})"),
            Budget::Tokens { max, .. } => write!(f, "Tokens({max})"),
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::Chars(2000)
    }
}

impl Budget {
    /// A budget in characters.
    pub fn chars(max: usize) -> Self {
        Budget::Chars(max)
    }

    /// A budget in tokens of `tokenizer`.
    pub fn tokens(tokenizer: impl Into<Arc<Tokenizer>>, max: usize) -> Self {
        Budget::Tokens {
            tokenizer: tokenizer.into(),
            max,
        }
    }

    /// The maximum size (at least 1).
    pub fn max(&self) -> usize {
        match self {
            Budget::Chars(n) | Budget::Tokens { max: n, .. } => (*n).max(1),
        }
    }

    /// `chars` or `tokens`.
    pub fn unit_name(&self) -> &'static str {
        match self {
            Budget::Chars(_) => "chars",
            Budget::Tokens { .. } => "tokens",
        }
    }

    /// The size of `text` in this budget's unit.
    pub fn size(&self, text: &str) -> usize {
        match self {
            Budget::Chars(_) => text.chars().count(),
            Budget::Tokens { tokenizer, .. } => {
                if text.is_empty() {
                    return 0;
                }
                tokenizer
                    .encode(text, false)
                    .map_or_else(|_| text.chars().count(), |e| e.len())
            }
        }
    }

    /// Whether `text` fits.
    pub fn fits(&self, text: &str) -> bool {
        // A token never covers less than one byte … except when the tokenizer
        // fails; measure exactly unless the text is trivially small.
        match self {
            Budget::Chars(n) => text.len() <= *n || self.size(text) <= *n,
            Budget::Tokens { .. } => self.size(text) <= self.max(),
        }
    }

    /// Byte offsets (relative to `text`) at which to hard-cut a text with no usable
    /// boundary into pieces of at most `max` units.
    fn hard_cuts(&self, text: &str) -> Vec<usize> {
        let max = self.max();
        let mut cuts = Vec::new();
        match self {
            Budget::Chars(_) => {
                for (n, (i, _)) in text.char_indices().enumerate() {
                    if n > 0 && n % max == 0 {
                        cuts.push(i);
                    }
                }
            }
            Budget::Tokens { tokenizer, .. } => match tokenizer.encode(text, false) {
                Ok(enc) => {
                    for (n, &(start, _)) in enc.get_offsets().iter().enumerate() {
                        if n > 0 && n % max == 0 {
                            let mut s = start.min(text.len());
                            while !text.is_char_boundary(s) {
                                s += 1;
                            }
                            if cuts.last().is_none_or(|&l| s > l) && s > 0 && s < text.len() {
                                cuts.push(s);
                            }
                        }
                    }
                }
                Err(_) => return Budget::Chars(max).hard_cuts(text),
            },
        }
        cuts
    }
}

/// One piece of the walk: a byte range, and the node it holds if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece<'t> {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) node: Option<Node<'t>>,
    pub(crate) depth: usize,
}

impl<'t> Piece<'t> {
    pub(crate) fn text(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            node: None,
            depth: 0,
        }
    }

    pub(crate) fn node(start: usize, end: usize, node: Node<'t>) -> Self {
        Self {
            start,
            end,
            node: Some(node),
            depth: 0,
        }
    }
}

/// The output of [`chunk_pieces`]: byte ranges with their sizes.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    pub(crate) ranges: Vec<(usize, usize, usize)>,
    /// Set when a piece reached [`MAX_DEPTH`] and was split as text.
    pub(crate) too_deep: bool,
}

/// cAST over pieces that tile one contiguous range of `src`.
pub(crate) fn chunk_pieces(budget: &Budget, src: &str, initial: Vec<Piece<'_>>) -> Chunked {
    let max = budget.max();
    let mut out = Chunked::default();
    let mut cur: Option<(usize, usize, usize)> = None;
    let mut stack: Vec<Piece<'_>> = initial.into_iter().rev().collect();
    while let Some(p) = stack.pop() {
        if p.start >= p.end {
            continue;
        }
        let Some(text) = src.get(p.start..p.end) else {
            continue;
        };
        let s = budget.size(text);
        if let Some(c) = cur.as_mut()
            && c.1 == p.start
            && c.2 + s <= max
        {
            c.1 = p.end;
            c.2 += s;
            continue;
        }
        if s <= max {
            out.ranges.extend(cur.take());
            cur = Some((p.start, p.end, s));
            continue;
        }
        let subs = expand(budget, src, p, &mut out.too_deep);
        if let [only] = subs.as_slice()
            && only.node.is_none()
            && (only.start, only.end) == (p.start, p.end)
        {
            // Cannot be cut further (a tokenizer failure): emit over budget.
            out.ranges.extend(cur.take());
            out.ranges.push((p.start, p.end, s));
            continue;
        }
        stack.extend(subs.into_iter().rev());
    }
    out.ranges.extend(cur);
    out
}

/// Splits an over-budget piece: gap/node separation, then children, then lines,
/// then hard cuts.
fn expand<'t>(budget: &Budget, src: &str, p: Piece<'t>, too_deep: &mut bool) -> Vec<Piece<'t>> {
    if let Some(n) = p.node {
        let (ns, ne) = (n.start_byte(), n.end_byte());
        let inside = p.start <= ns && ns <= ne && ne <= p.end;
        if inside && (ns > p.start || ne < p.end) {
            let mut node = Piece::node(ns, ne, n);
            node.depth = p.depth;
            return vec![Piece::text(p.start, ns), node, Piece::text(ne, p.end)];
        }
        if inside && n.child_count() > 0 {
            if p.depth < MAX_DEPTH {
                let mut cursor = n.walk();
                let kids: Vec<Node<'t>> = n.children(&mut cursor).collect();
                let mut out = Vec::with_capacity(kids.len());
                let mut pos = p.start;
                for (i, k) in kids.iter().enumerate() {
                    let end = if i + 1 == kids.len() {
                        p.end
                    } else {
                        k.end_byte().clamp(pos, p.end)
                    };
                    out.push(Piece {
                        start: pos,
                        end,
                        node: Some(*k),
                        depth: p.depth + 1,
                    });
                    pos = end;
                }
                if pos < p.end {
                    out.push(Piece::text(pos, p.end));
                }
                return out;
            }
            *too_deep = true;
        }
    }
    split_text(budget, src, p.start, p.end)
}

/// Line boundaries first; a single over-budget line is hard-cut.
fn split_text<'t>(budget: &Budget, src: &str, start: usize, end: usize) -> Vec<Piece<'t>> {
    let Some(text) = src.get(start..end) else {
        return Vec::new();
    };
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.contains('\n') {
        let mut out = Vec::new();
        let mut pos = start;
        for line in text.split_inclusive('\n') {
            out.push(Piece::text(pos, pos + line.len()));
            pos += line.len();
        }
        return out;
    }
    let mut out = Vec::new();
    let mut pos = 0;
    for cut in budget.hard_cuts(text) {
        out.push(Piece::text(start + pos, start + cut));
        pos = cut;
    }
    out.push(Piece::text(start + pos, end));
    if out.len() == 1 {
        // One piece that still does not fit (cannot happen with a char budget):
        // emit it as is rather than loop.
        return vec![Piece::text(start, end)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_cuts_on_char_boundaries() {
        let b = Budget::chars(3);
        let t = "äöüßéèç";
        let cuts = b.hard_cuts(t);
        assert_eq!(cuts.len(), 2);
        for c in cuts {
            assert!(t.is_char_boundary(c));
        }
    }

    #[test]
    fn text_pieces_rejoin() {
        let src = "line one\nline two is longer\nx";
        let b = Budget::chars(10);
        let out = chunk_pieces(&b, src, vec![Piece::text(0, src.len())]);
        let joined: String = out.ranges.iter().map(|&(a, e, _)| &src[a..e]).collect();
        assert_eq!(joined, src);
        assert!(
            out.ranges
                .iter()
                .all(|&(a, e, _)| src[a..e].chars().count() <= 10)
        );
    }
}
