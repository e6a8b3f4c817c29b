//! Syntax match (CodeBLEU §3.2): the fraction of the reference's subtrees (every node with
//! children, as an S-expression of node types and field names, the format of
//! `ts_node_string`) that also occur in the candidate's tree. Like codebleu 0.7.0 it counts
//! reference subtrees found in the candidate.
//!
//! No string is printed: two subtrees print the same S-expression exactly when they have the
//! same printed name and the same list of (field, child S-expression) over their printed
//! children, so each distinct subtree gets a number by hash-consing that list (exact keys, no
//! hash is trusted for equality). The reference numbers its subtrees; a candidate's subtree
//! only needs the reference's number, and one with a child the reference lacks cannot match.

use rustc_hash::FxHashMap;

use super::grammar::Grammar;
use super::tree::{Flat, NONE};

/// What a node contributes to its parent's S-expression.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Neither named nor missing: prints nothing, and its children do not print into it.
    Hidden,
    /// `(UNEXPECTED …)` / `(MISSING …)`: the library's own text.
    Verbatim,
    /// `(kind field: child …)`.
    Node,
}

fn role(flat: &Flat, i: u32) -> Role {
    let n = flat.node(i);
    if !(n.missing || n.named) {
        Role::Hidden
    } else if n.verbatim != NONE {
        Role::Verbatim
    } else {
        Role::Node
    }
}

/// Key tags: the first element of a node's key.
const HIDDEN: u32 = u32::MAX;

/// Whether codebleu lists node `i`'s subtree: the root and every node with children.
fn listed(flat: &Flat, i: u32) -> bool {
    i == 0 || !flat.children(i).is_empty()
}

/// Writes node `i`'s key (printed name, then field and number of each printed child) into
/// `key`; `None` when a printed child has no number.
fn node_key(g: &Grammar, flat: &Flat, ids: &[u32], i: u32, key: &mut Vec<u32>) -> Option<()> {
    key.clear();
    if role(flat, i) == Role::Hidden {
        key.push(HIDDEN);
        return Some(());
    }
    key.push(g.name_code(flat.node(i).symbol));
    for &c in flat.children(i) {
        if role(flat, c) == Role::Hidden {
            continue;
        }
        let id = ids[c as usize];
        if id == NONE {
            return None;
        }
        key.push(u32::from(flat.node(c).field));
        key.push(id);
    }
    Some(())
}

/// The reference's subtrees: a number for every distinct subtree (listed or not, since
/// listed subtrees are made of them) and how many times each listed one occurs.
#[derive(Default)]
pub(crate) struct RefSubtrees {
    /// Keys of one element (leaves, and nodes whose children all print nothing).
    single: FxHashMap<u32, u32>,
    keys: FxHashMap<Box<[u32]>, u32>,
    texts: FxHashMap<String, u32>,
    /// Listed occurrences by number.
    count: Vec<u32>,
    total: usize,
}

impl RefSubtrees {
    fn number(&mut self, fresh: impl FnOnce(&mut Self, u32)) -> u32 {
        let id = self.count.len() as u32;
        self.count.push(0);
        fresh(self, id);
        id
    }

    fn lookup(&self, key: &[u32]) -> Option<u32> {
        match key {
            [k] => self.single.get(k).copied(),
            _ => self.keys.get(key).copied(),
        }
    }

    pub(crate) fn new(g: &Grammar, flat: &Flat) -> Self {
        let mut out = RefSubtrees::default();
        let mut ids = vec![NONE; flat.nodes.len()];
        let mut key = Vec::new();
        for i in (0..flat.nodes.len() as u32).rev() {
            let n = flat.node(i);
            let id = if n.verbatim != NONE && role(flat, i) == Role::Verbatim {
                let text = &flat.verbatim[n.verbatim as usize];
                match out.texts.get(text) {
                    Some(&id) => id,
                    None => out.number(|s, id| {
                        s.texts.insert(text.clone(), id);
                    }),
                }
            } else {
                // Every child of a reference node has a number.
                let _ = node_key(g, flat, &ids, i, &mut key);
                match out.lookup(&key) {
                    Some(id) => id,
                    None => out.number(|s, id| {
                        if let [k] = key.as_slice() {
                            s.single.insert(*k, id);
                        } else {
                            s.keys.insert(key.as_slice().into(), id);
                        }
                    }),
                }
            };
            ids[i as usize] = id;
            if listed(flat, i) {
                out.count[id as usize] += 1;
                out.total += 1;
            }
        }
        out
    }

    /// (matched, total) reference subtrees: reference subtrees (with multiplicity) that also
    /// occur among the candidate's listed subtrees.
    pub(crate) fn match_counts(&self, g: &Grammar, cand: &Flat) -> (usize, usize) {
        let mut ids = vec![NONE; cand.nodes.len()];
        let mut present = vec![false; self.count.len()];
        let mut key = Vec::new();
        for i in (0..cand.nodes.len() as u32).rev() {
            let n = cand.node(i);
            let id = if n.verbatim != NONE && role(cand, i) == Role::Verbatim {
                self.texts
                    .get(&cand.verbatim[n.verbatim as usize])
                    .copied()
                    .unwrap_or(NONE)
            } else if node_key(g, cand, &ids, i, &mut key).is_some() {
                self.lookup(&key).unwrap_or(NONE)
            } else {
                NONE
            };
            ids[i as usize] = id;
            if id != NONE && listed(cand, i) {
                present[id as usize] = true;
            }
        }
        let matched = self
            .count
            .iter()
            .zip(&present)
            .filter(|&(_, &p)| p)
            .map(|(&c, _)| c as usize)
            .sum();
        (matched, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebleu::Lang;
    use crate::codebleu::tree::flatten;

    /// Subtree S-expressions as codebleu lists them, printed by tree-sitter itself.
    fn sexps(tree: &tree_sitter::Tree) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![tree.root_node()];
        let mut root = true;
        while let Some(n) = stack.pop() {
            if root || n.child_count() != 0 {
                out.push(n.to_sexp());
            }
            root = false;
            let mut c = n.walk();
            stack.extend(n.children(&mut c));
        }
        out
    }

    /// The numbering agrees with string equality of `ts_node_string`: the match counts equal
    /// those computed from the printed S-expressions, on valid and broken code.
    #[test]
    fn numbering_equals_printed_sexp_matching() {
        let snippets = [
            (
                Lang::Rust,
                "fn f<'a, T: Clone>(x: &'a T) -> Option<T> { let y = x.clone(); if let Some(z) = y { z } else { y } }\nfn g( {",
            ),
            (
                Lang::Rust,
                "fn f<T: Clone>(x: &T) -> T { let y = x.clone(); y }\nstruct S { a: u8 }\nfn g( {",
            ),
            (
                Lang::Rust,
                "fn h(x: u8) -> u8 { let y = x; match y { 0 => 1, _ => y } }",
            ),
            (
                Lang::Python,
                "def f(a, b=1, *c):\n    if a:\n        return [x for x in c if x]\n    return b +\n",
            ),
            (
                Lang::Python,
                "def f(a, b=2, *c):\n    if a:\n        return [x for x in c]\n    return b\n",
            ),
            (Lang::Python, "def g(:\n    return ( b +\n"),
        ];
        for compat in [false, true] {
            for (lang_r, r) in snippets {
                for (lang_c, c) in snippets {
                    if lang_r != lang_c {
                        continue;
                    }
                    let g = Grammar::new(lang_r, compat);
                    let (rt, ct) = (g.parse(r).expect("parse"), g.parse(c).expect("parse"));
                    let want = {
                        let (rs, cs) = (sexps(&rt), sexps(&ct));
                        let cset: std::collections::HashSet<&String> = cs.iter().collect();
                        (rs.iter().filter(|s| cset.contains(s)).count(), rs.len())
                    };
                    let reference = RefSubtrees::new(&g, &flatten(&g, &rt));
                    let got = reference.match_counts(&g, &flatten(&g, &ct));
                    assert_eq!(got, want, "{lang_r} compat={compat}\n{r}\n---\n{c}");
                }
            }
        }
    }
}
