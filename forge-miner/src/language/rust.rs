//! Rust: `tree-sitter-rust`.

use tree_sitter::Node;

use super::{Definition, Language, Scope, named_children, text};
use crate::unit::UnitKind;

/// The Rust language.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rust;

impl Language for Rust {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["rs"]
    }

    fn interpreters(&self) -> &'static [&'static str] {
        &["rust-script"]
    }

    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_rust::LANGUAGE.into()
    }

    fn separator(&self) -> &'static str {
        "::"
    }

    fn doc_comment_prefix(&self) -> &'static str {
        "///"
    }

    /// `forge-miner/src/walk.rs` → `forge_miner::walk`; `src/lib.rs` → `crate`;
    /// `src/a/mod.rs` → `crate::a`; `tests/snap.rs` → `crate::tests::snap`.
    fn module_path(&self, rel_path: &str) -> Vec<String> {
        let stem = rel_path.strip_suffix(".rs").unwrap_or(rel_path);
        let comps: Vec<&str> = stem.split('/').filter(|c| !c.is_empty()).collect();
        let crate_name = |i: usize| -> String {
            if i == 0 {
                "crate".to_string()
            } else {
                comps[i - 1].replace('-', "_")
            }
        };
        let (krate, rest): (String, Vec<&str>) =
            if let Some(i) = comps.iter().rposition(|c| *c == "src") {
                (crate_name(i), comps[i + 1..].to_vec())
            } else if let Some(i) = comps
                .iter()
                .position(|c| matches!(*c, "tests" | "benches" | "examples"))
            {
                (crate_name(i), comps[i..].to_vec())
            } else {
                ("crate".to_string(), comps.clone())
            };
        let mut rest: Vec<String> = rest.iter().map(|c| c.replace('-', "_")).collect();
        if rest.last().is_some_and(|l| l == "mod") {
            rest.pop();
        }
        if rest.len() == 1 && (rest[0] == "lib" || rest[0] == "main") {
            rest.clear();
        }
        let mut out = vec![krate];
        out.extend(rest);
        out
    }

    fn is_import(&self, node: Node<'_>) -> bool {
        matches!(node.kind(), "use_declaration" | "extern_crate_declaration")
    }

    fn definition<'t>(&self, node: Node<'t>, src: &str, scope: Scope) -> Option<Definition<'t>> {
        let kind = match node.kind() {
            "function_item" | "function_signature_item" => match scope {
                Scope::Impl | Scope::Trait => UnitKind::Method,
                _ => UnitKind::Function,
            },
            "struct_item" | "union_item" => UnitKind::Struct,
            "enum_item" => UnitKind::Enum,
            "trait_item" => UnitKind::Trait,
            "impl_item" => UnitKind::Impl,
            "mod_item" => UnitKind::Module,
            "type_item" => UnitKind::TypeAlias,
            "const_item" | "static_item" => UnitKind::Const,
            "macro_definition" => UnitKind::Macro,
            _ => return None,
        };
        let body = node.child_by_field_name("body");
        let (name, segment, inner) = match kind {
            UnitKind::Impl => {
                let ty = node.child_by_field_name("type").map(|n| text(n, src))?;
                let name = base_type_name(ty);
                let segment = match node.child_by_field_name("trait") {
                    Some(tr) => format!("<{name} as {}>", text(tr, src)),
                    None => name.clone(),
                };
                (name.clone(), segment, Some((Scope::Impl, name)))
            }
            _ => {
                let name = text(node.child_by_field_name("name")?, src).to_string();
                let inner = match kind {
                    UnitKind::Trait => Some((Scope::Trait, name.clone())),
                    // `mod foo;` has no body: the file foo.rs is its own module.
                    UnitKind::Module => Some((Scope::Module, name.clone())),
                    _ => None,
                };
                (name.clone(), name, inner)
            }
        };
        if kind == UnitKind::Module && body.is_none() {
            return None;
        }
        let (start_byte, doc) = leading_docs(node, src);
        let (params, receiver) = if kind.is_callable() {
            params(node, src)
        } else {
            (Vec::new(), false)
        };
        Some(Definition {
            kind,
            name,
            segment,
            node,
            start_byte,
            body,
            inner,
            doc,
            body_start: None,
            params,
            receiver,
        })
    }

    fn module_doc(&self, root: Node<'_>, src: &str) -> Option<(String, usize, usize)> {
        let mut lines = Vec::new();
        let (mut start, mut end) = (None, 0);
        for child in named_children(root) {
            let t = text(child, src);
            let stripped = match child.kind() {
                "line_comment" if t.starts_with("//!") => strip_line_doc(t, "//!"),
                "block_comment" if t.starts_with("/*!") => strip_block_doc(t, "/*!"),
                _ => break,
            };
            start.get_or_insert(child.start_byte());
            end = child.end_byte();
            lines.push(stripped);
        }
        let doc = lines.join("\n").trim().to_string();
        (!doc.is_empty()).then(|| (doc, start.unwrap_or(0), end))
    }
}

/// `fmt::Wrapper<T>` → `Wrapper`; `&'a [T]` → `[T]`.
fn base_type_name(ty: &str) -> String {
    let no_generics = ty.split('<').next().unwrap_or(ty);
    let last = no_generics.rsplit("::").next().unwrap_or(no_generics);
    let trimmed = last.trim().trim_start_matches('&').trim();
    let trimmed = trimmed
        .strip_prefix("mut ")
        .or_else(|| trimmed.strip_prefix("dyn "))
        .unwrap_or(trimmed);
    if trimmed.is_empty() {
        ty.trim().to_string()
    } else {
        trimmed.to_string()
    }
}

fn strip_line_doc(t: &str, marker: &str) -> String {
    let rest = t.trim_end().strip_prefix(marker).unwrap_or(t);
    rest.strip_prefix(' ').unwrap_or(rest).to_string()
}

fn strip_block_doc(t: &str, marker: &str) -> String {
    let inner = t
        .strip_prefix(marker)
        .and_then(|s| s.strip_suffix("*/"))
        .unwrap_or(t);
    let lines: Vec<String> = inner
        .lines()
        .map(|l| {
            let l = l.trim();
            let l = l.strip_prefix('*').unwrap_or(l);
            l.strip_prefix(' ').unwrap_or(l).to_string()
        })
        .collect();
    lines.join("\n").trim().to_string()
}

/// Outer doc comments and attributes right before `node`: the unit's start and its doc.
fn leading_docs(node: Node<'_>, src: &str) -> (usize, Option<(String, usize, usize)>) {
    let mut start = node.start_byte();
    let mut docs: Vec<String> = Vec::new();
    let (mut doc_start, mut doc_end) = (usize::MAX, 0);
    let mut cur = node.prev_sibling();
    while let Some(p) = cur {
        let t = text(p, src);
        match p.kind() {
            "attribute_item" => {}
            "line_comment" if t.starts_with("///") && !t.starts_with("////") => {
                docs.push(strip_line_doc(t, "///"));
            }
            "block_comment" if t.starts_with("/**") && !t.starts_with("/***") && t != "/**/" => {
                docs.push(strip_block_doc(t, "/**"));
            }
            _ => break,
        }
        if p.kind() != "attribute_item" {
            doc_start = doc_start.min(p.start_byte());
            doc_end = doc_end.max(p.end_byte());
        }
        start = p.start_byte();
        cur = p.prev_sibling();
    }
    docs.reverse();
    let doc = docs.join("\n").trim().to_string();
    let doc = (!doc.is_empty()).then_some((doc, doc_start, doc_end));
    (start, doc)
}

fn params(node: Node<'_>, src: &str) -> (Vec<String>, bool) {
    let Some(list) = node.child_by_field_name("parameters") else {
        return (Vec::new(), false);
    };
    let mut names = Vec::new();
    let mut receiver = false;
    for p in named_children(list) {
        match p.kind() {
            "self_parameter" => receiver = true,
            "parameter" => {
                if let Some(pat) = p.child_by_field_name("pattern") {
                    let t = text(pat, src);
                    names.push(t.strip_prefix("mut ").unwrap_or(t).to_string());
                }
            }
            _ => {}
        }
    }
    (names, receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths() {
        let r = Rust;
        assert_eq!(r.module_path("src/lib.rs"), ["crate"]);
        assert_eq!(r.module_path("src/a/mod.rs"), ["crate", "a"]);
        assert_eq!(
            r.module_path("forge-miner/src/walk.rs"),
            ["forge_miner", "walk"]
        );
        assert_eq!(
            r.module_path("forge-miner/tests/snap.rs"),
            ["forge_miner", "tests", "snap"]
        );
        assert_eq!(r.module_path("build.rs"), ["crate", "build"]);
    }

    #[test]
    fn type_names() {
        assert_eq!(base_type_name("fmt::Wrapper<T>"), "Wrapper");
        assert_eq!(base_type_name("&'a mut Foo"), "'a mut Foo");
        assert_eq!(base_type_name("Foo"), "Foo");
    }
}
