//! Syntax match (CodeBLEU §3.2): the fraction of the reference's subtrees (every node with
//! children, as an S-expression of node types and field names, the format of
//! `ts_node_string`) that also occur in the candidate's tree. Like codebleu 0.7.0 it counts
//! reference subtrees found in the candidate.

use std::collections::HashSet;

use tree_sitter::{Node, TreeCursor};

use super::grammar::{Grammar, Shape};

/// S-expressions of the root and of every node that has children (the subtrees codebleu
/// walks), after the grammar's compat reshaping.
pub(crate) fn subtree_sexps(g: &Grammar, root: Node<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        let mut s = String::new();
        if node.id() == root.id() || !matches!(g.shape(&node), Shape::Splice) {
            write_sexp(g, &node, None, &mut s);
            out.push(s);
        }
        let mut c = node.walk();
        for child in node.children(&mut c) {
            if child.child_count() != 0 {
                stack.push(child);
            }
        }
    }
    out
}

fn write_children(
    g: &Grammar,
    cursor: &mut TreeCursor<'_>,
    out: &mut String,
    renames: &[(&str, &str)],
) {
    if !cursor.goto_first_child() {
        return;
    }
    loop {
        let child = cursor.node();
        let field = cursor
            .field_name()
            .map(|f| renames.iter().find(|(a, _)| *a == f).map_or(f, |(_, b)| *b));
        write_sexp(g, &child, field, out);
        if !cursor.goto_next_sibling() {
            break;
        }
    }
    cursor.goto_parent();
}

fn write_sexp(g: &Grammar, node: &Node<'_>, field: Option<&str>, out: &mut String) {
    let visible = node.is_missing() || node.is_named();
    if !visible {
        return;
    }
    if node.is_error() && node.child_count() == 0 || node.is_missing() {
        // `(UNEXPECTED 'c')` / `(MISSING …)`: the library's own text.
        if !out.is_empty() {
            out.push(' ');
        }
        if let Some(f) = field {
            out.push_str(f);
            out.push_str(": ");
        }
        out.push_str(&node.to_sexp());
        return;
    }
    let (kind, renames): (&str, &[(&str, &str)]) = match g.shape(node) {
        Shape::Keep => (node.kind(), &[]),
        Shape::Rename(kind, renames) => (kind, renames),
        Shape::Splice => {
            // The old grammar had no node here: its children stand in its place, without fields.
            let mut c = node.walk();
            for child in node.children(&mut c) {
                write_sexp(g, &child, None, out);
            }
            return;
        }
    };
    if !out.is_empty() {
        out.push(' ');
    }
    if let Some(f) = field {
        out.push_str(f);
        out.push_str(": ");
    }
    out.push('(');
    out.push_str(kind);
    let mut cursor = node.walk();
    write_children(g, &mut cursor, out, renames);
    out.push(')');
}

/// (matched, total) reference subtrees.
pub(crate) fn match_counts(reference: &[String], candidate: &[String]) -> (usize, usize) {
    let cand: HashSet<&str> = candidate.iter().map(String::as_str).collect();
    let matched = reference
        .iter()
        .filter(|s| cand.contains(s.as_str()))
        .count();
    (matched, reference.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebleu::Lang;

    #[test]
    fn builder_equals_ts_node_string_without_compat() {
        let g = Grammar::new(Lang::Rust, false);
        let code = "fn f<'a, T: Clone>(x: &'a T) -> Option<T> { let y = x.clone(); if let Some(z) = y { z } else { y } }\nfn g( {";
        let tree = g.parse(code).expect("parse");
        let mut s = String::new();
        write_sexp(&g, &tree.root_node(), None, &mut s);
        assert_eq!(s, tree.root_node().to_sexp());
    }
}
