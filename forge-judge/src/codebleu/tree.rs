//! A parsed snippet flattened into one array, in one cursor walk: the syntax match and the
//! dataflow rules read node types, fields, children and positions from it instead of going
//! back to tree-sitter (cursor moves and child lookups through hidden nodes cost more than the
//! rules themselves, and each rule used to walk the tree again).

use tree_sitter::{Node, Tree};

use super::grammar::Grammar;

/// No token / no text: the sentinel of the `u32` slots below.
pub(crate) const NONE: u32 = u32::MAX;

/// One node of the tree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FNode {
    /// Node type as the grammar names it (`ERROR` for errors).
    pub(crate) kind: &'static str,
    /// Grammar symbol (`kind_id`).
    pub(crate) symbol: u16,
    /// Field id of this node in its parent, 0 when none.
    pub(crate) field: u16,
    /// Children: `Flat::kids[kids.0..kids.1]`, in order.
    pub(crate) kids: (u32, u32),
    /// Start and end (row, byte column).
    pub(crate) start: (u32, u32),
    pub(crate) end: (u32, u32),
    pub(crate) named: bool,
    pub(crate) missing: bool,
    /// `(UNEXPECTED …)` / `(MISSING …)` leaves: index into `Flat::verbatim`, else [`NONE`].
    pub(crate) verbatim: u32,
}

/// The whole tree in pre-order: a node's children come after it, so walking the array
/// backwards visits every child before its parent.
pub(crate) struct Flat {
    pub(crate) nodes: Vec<FNode>,
    pub(crate) kids: Vec<u32>,
    /// `ts_node_string` of the verbatim leaves.
    pub(crate) verbatim: Vec<String>,
}

impl Flat {
    /// The children of node `i`.
    pub(crate) fn children(&self, i: u32) -> &[u32] {
        let (a, b) = self.nodes[i as usize].kids;
        &self.kids[a as usize..b as usize]
    }

    /// The first child of `i` with field `field` (`child_by_field_name`).
    pub(crate) fn field(&self, i: u32, field: u16) -> Option<u32> {
        if field == 0 {
            return None;
        }
        self.children(i)
            .iter()
            .copied()
            .find(|&c| self.nodes[c as usize].field == field)
    }

    pub(crate) fn node(&self, i: u32) -> &FNode {
        &self.nodes[i as usize]
    }
}

fn point(p: tree_sitter::Point) -> (u32, u32) {
    (
        u32::try_from(p.row).unwrap_or(u32::MAX),
        u32::try_from(p.column).unwrap_or(u32::MAX),
    )
}

fn push(g: &Grammar, flat: &mut Flat, node: &Node<'_>, field: u16) -> u32 {
    let symbol = node.kind_id();
    let missing = node.is_missing();
    // `ERROR` (symbol 65535) without children, and missing nodes, print verbatim.
    let verbatim = if missing || symbol == u16::MAX && node.child_count() == 0 {
        flat.verbatim.push(node.to_sexp());
        (flat.verbatim.len() - 1) as u32
    } else {
        NONE
    };
    let (kind, named) = match g.symbol(symbol) {
        Some(k) => k,
        None => (node.kind(), node.is_named()),
    };
    flat.nodes.push(FNode {
        kind,
        symbol,
        field,
        kids: (0, 0),
        start: point(node.start_position()),
        end: point(node.end_position()),
        named,
        missing,
        verbatim,
    });
    (flat.nodes.len() - 1) as u32
}

/// One iterative cursor walk over `tree` (no recursion on deep user input).
pub(crate) fn flatten(g: &Grammar, tree: &Tree) -> Flat {
    let root = tree.root_node();
    let mut flat = Flat {
        nodes: Vec::with_capacity(256),
        kids: Vec::with_capacity(256),
        verbatim: Vec::new(),
    };
    let mut cursor = root.walk();
    // Children found so far of every node on the path, and where each node's run starts.
    let mut scratch: Vec<u32> = Vec::with_capacity(64);
    let mut path: Vec<(u32, usize)> = vec![(push(g, &mut flat, &root, 0), 0)];
    let field = |c: &tree_sitter::TreeCursor<'_>| c.field_id().map_or(0, |f| f.get());
    loop {
        if cursor.goto_first_child() {
            let i = push(g, &mut flat, &cursor.node(), field(&cursor));
            scratch.push(i);
            path.push((i, scratch.len()));
            continue;
        }
        loop {
            let Some((i, start)) = path.pop() else {
                return flat;
            };
            let a = flat.kids.len() as u32;
            flat.kids.extend_from_slice(&scratch[start..]);
            scratch.truncate(start);
            flat.nodes[i as usize].kids = (a, flat.kids.len() as u32);
            if path.is_empty() {
                return flat;
            }
            if cursor.goto_next_sibling() {
                let i = push(g, &mut flat, &cursor.node(), field(&cursor));
                scratch.push(i);
                path.push((i, scratch.len()));
                break;
            }
            cursor.goto_parent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebleu::Lang;

    /// Children, fields (as `child_by_field_name` finds them), kinds and positions agree with
    /// tree-sitter's own accessors, on valid and broken code, for both grammars of a language.
    #[test]
    fn flat_tree_agrees_with_tree_sitter() {
        let cases = [
            (
                Lang::Rust,
                "fn f<'a, T: Clone>(x: &'a T) -> Option<T> { let y = x.clone(); if let Some(z) = y { z } else { y } }\nfn g( {",
            ),
            (
                Lang::Python,
                "def f(a, b=1, *c):\n    x, y = a, b\n    for i in c:\n        x += i\n    return [x for x in c if x] + f'{a}'\ndef g(:\n    return b +\n",
            ),
        ];
        for (lang, code) in cases {
            for compat in [false, true] {
                let g = Grammar::new(lang, compat);
                let tree = g.parse(code).expect("parse");
                let flat = flatten(&g, &tree);
                let mut nodes = vec![tree.root_node()];
                let mut order = Vec::new();
                while let Some(n) = nodes.pop() {
                    order.push(n);
                    let mut c = n.walk();
                    let kids: Vec<_> = n.children(&mut c).collect();
                    nodes.extend(kids.into_iter().rev());
                }
                assert_eq!(order.len(), flat.nodes.len(), "{lang} {compat}");
                let language = super::super::grammar::language(lang, compat);
                for (i, n) in order.iter().enumerate() {
                    let f = flat.node(i as u32);
                    assert_eq!(f.kind, n.kind(), "{lang} {compat} node {i}");
                    assert_eq!(f.named, n.is_named(), "{lang} {compat} node {i}");
                    assert_eq!(f.missing, n.is_missing(), "{lang} {compat} node {i}");
                    assert_eq!(f.start, point(n.start_position()));
                    assert_eq!(f.end, point(n.end_position()));
                    assert_eq!(flat.children(i as u32).len(), n.child_count());
                    for name in ["left", "right", "name", "value", "body"] {
                        let Some(id) = language.field_id_for_name(name) else {
                            continue;
                        };
                        let ours = flat
                            .field(i as u32, id.get())
                            .map(|c| order[c as usize].id());
                        let theirs = n.child_by_field_name(name).map(|c| c.id());
                        assert_eq!(ours, theirs, "{lang} {compat} node {i} field {name}");
                    }
                }
            }
        }
    }
}
