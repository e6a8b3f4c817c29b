//! Syntax match (CodeBLEU §3.2): the fraction of the reference's subtrees (every node with
//! children, as an S-expression of node types and field names, the format of
//! `ts_node_string`) that also occur in the candidate's tree. Like codebleu 0.7.0 it counts
//! reference subtrees found in the candidate.

use rustc_hash::FxHashMap;
use tree_sitter::Node;

use super::grammar::Grammar;

/// The multiset of subtree S-expressions: each distinct string with its count.
pub(crate) type Subtrees = FxHashMap<String, u32>;

/// What a node contributes to its parent's S-expression.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Neither named nor missing: prints nothing, its children do not print into the parent.
    Hidden,
    /// `(UNEXPECTED …)` / `(MISSING …)`: the library's own text.
    Verbatim,
    /// `(kind child child …)`.
    Node,
}

struct Frame {
    role: Role,
    /// The field this node has in its parent.
    field: Option<&'static str>,
    /// `(kind …` so far (`Node`) or the verbatim text.
    buf: String,
    listed: bool,
}

fn enter(g: &Grammar, node: &Node<'_>, field: Option<&'static str>, root: bool) -> Frame {
    let listed = root || node.child_count() != 0;
    let (role, buf) = if !(node.is_missing() || node.is_named()) {
        (Role::Hidden, String::new())
    } else if node.is_error() && node.child_count() == 0 || node.is_missing() {
        (Role::Verbatim, node.to_sexp())
    } else {
        let kind = g.kind(node);
        let mut buf = String::with_capacity(kind.len() + 16);
        buf.push('(');
        buf.push_str(kind);
        (Role::Node, buf)
    };
    Frame {
        role,
        field,
        buf,
        listed,
    }
}

/// The multiset of S-expressions of the root and of every node that has children (the
/// subtrees codebleu walks), each printed as `ts_node_string` prints it.
///
/// One walk: every node's text is built once, from its children's finished texts, so the cost
/// is the total length of the strings rather than a tree walk per subtree. The walk is
/// iterative (no recursion on deep user input).
pub(crate) fn subtree_counts(g: &Grammar, root: Node<'_>) -> Subtrees {
    let mut out = Subtrees::default();
    let mut cursor = root.walk();
    let mut stack = vec![enter(g, &root, None, true)];
    loop {
        if cursor.goto_first_child() {
            let field = cursor.field_name();
            stack.push(enter(g, &cursor.node(), field, false));
            continue;
        }
        loop {
            let Some(mut frame) = stack.pop() else {
                return out;
            };
            if frame.role == Role::Node {
                frame.buf.push(')');
            }
            if let Some(parent) = stack.last_mut()
                && parent.role != Role::Hidden
                && frame.role != Role::Hidden
            {
                parent.buf.push(' ');
                if let Some(f) = frame.field {
                    parent.buf.push_str(f);
                    parent.buf.push_str(": ");
                }
                parent.buf.push_str(&frame.buf);
            }
            if frame.listed {
                *out.entry(frame.buf).or_insert(0) += 1;
            }
            if stack.is_empty() {
                return out;
            }
            if cursor.goto_next_sibling() {
                let field = cursor.field_name();
                stack.push(enter(g, &cursor.node(), field, false));
                break;
            }
            cursor.goto_parent();
        }
    }
}

/// (matched, total) reference subtrees: reference subtrees (with multiplicity) whose text
/// occurs in the candidate.
pub(crate) fn match_counts(reference: &Subtrees, candidate: &Subtrees) -> (usize, usize) {
    let mut matched = 0;
    let mut total = 0;
    for (s, &n) in reference {
        total += n as usize;
        if candidate.contains_key(s) {
            matched += n as usize;
        }
    }
    (matched, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebleu::Lang;

    /// Without compat reshaping every listed subtree prints exactly as `ts_node_string`.
    #[test]
    fn one_walk_equals_ts_node_string_per_subtree() {
        for (lang, code) in [
            (
                Lang::Rust,
                "fn f<'a, T: Clone>(x: &'a T) -> Option<T> { let y = x.clone(); if let Some(z) = y { z } else { y } }\nfn g( {",
            ),
            (
                Lang::Python,
                "def f(a, b=1, *c):\n    if a:\n        return [x for x in c if x]\n    return b +\n",
            ),
        ] {
            let g = Grammar::new(lang, false);
            let tree = g.parse(code).expect("parse");
            let mut expected = Subtrees::default();
            let mut stack = vec![tree.root_node()];
            while let Some(n) = stack.pop() {
                *expected.entry(n.to_sexp()).or_insert(0) += 1;
                let mut c = n.walk();
                stack.extend(n.children(&mut c).filter(|c| c.child_count() != 0));
            }
            assert_eq!(subtree_counts(&g, tree.root_node()), expected, "{lang}");
        }
    }

    #[test]
    fn match_counts_counts_reference_multiplicity() {
        let r: Subtrees = [("(a)".to_string(), 3), ("(b)".to_string(), 1)]
            .into_iter()
            .collect();
        let c: Subtrees = [("(a)".to_string(), 1)].into_iter().collect();
        assert_eq!(match_counts(&r, &c), (3, 4));
        assert_eq!(match_counts(&c, &r), (1, 1));
    }
}
