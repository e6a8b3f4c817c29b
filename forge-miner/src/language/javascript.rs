//! JavaScript (`tree-sitter-javascript`, feature `javascript`) and TypeScript
//! (`tree-sitter-typescript`, feature `typescript`). One file: TypeScript's
//! grammar extends JavaScript's, so the definitions are shared.

use tree_sitter::Node;

#[cfg(any(feature = "javascript", feature = "typescript"))]
use super::Language;
use super::{Definition, Scope, named_children, text};
use crate::unit::UnitKind;

/// JavaScript.
#[cfg(feature = "javascript")]
#[derive(Debug, Clone, Copy, Default)]
pub struct JavaScript;

/// TypeScript (`.ts`; `.tsx` is not registered).
#[cfg(feature = "typescript")]
#[derive(Debug, Clone, Copy, Default)]
pub struct TypeScript;

macro_rules! js_like {
    ($ty:ty, $name:expr, $exts:expr, $interp:expr, $grammar:expr) => {
        impl Language for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn extensions(&self) -> &'static [&'static str] {
                $exts
            }
            fn interpreters(&self) -> &'static [&'static str] {
                $interp
            }
            fn grammar(&self) -> tree_sitter::Language {
                $grammar
            }
            fn separator(&self) -> &'static str {
                "."
            }
            fn doc_comment_prefix(&self) -> &'static str {
                "//"
            }
            fn module_path(&self, rel_path: &str) -> Vec<String> {
                module_path(rel_path)
            }
            fn is_import(&self, node: Node<'_>) -> bool {
                node.kind() == "import_statement"
            }
            fn definition<'t>(
                &self,
                node: Node<'t>,
                src: &str,
                scope: Scope,
            ) -> Option<Definition<'t>> {
                definition(node, src, scope)
            }
            fn module_doc(&self, _root: Node<'_>, _src: &str) -> Option<(String, usize, usize)> {
                None
            }
        }
    };
}

#[cfg(feature = "javascript")]
js_like!(
    JavaScript,
    "javascript",
    &["js", "mjs", "cjs", "jsx"],
    &["node", "nodejs"],
    tree_sitter_javascript::LANGUAGE.into()
);
#[cfg(feature = "typescript")]
js_like!(
    TypeScript,
    "typescript",
    &["ts", "mts", "cts"],
    &["ts-node", "deno"],
    tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into()
);

fn module_path(rel_path: &str) -> Vec<String> {
    let stem = rel_path.rsplit_once('.').map_or(rel_path, |(s, _)| s);
    let mut comps: Vec<String> = stem.split('/').map(str::to_string).collect();
    if comps.len() > 1 && comps.last().is_some_and(|l| l == "index") {
        comps.pop();
    }
    comps
}

fn definition<'t>(node: Node<'t>, src: &str, scope: Scope) -> Option<Definition<'t>> {
    // `export function f() {}` / `export default class A {}`
    let outer = node;
    let node = if node.kind() == "export_statement" {
        node.child_by_field_name("declaration")?
    } else {
        node
    };
    let (kind, name_node, inner) = match node.kind() {
        "function_declaration" | "generator_function_declaration" => {
            (UnitKind::Function, node.child_by_field_name("name")?, None)
        }
        "method_definition" | "method_signature" | "abstract_method_signature" => {
            (UnitKind::Method, node.child_by_field_name("name")?, None)
        }
        "class_declaration" | "abstract_class_declaration" => {
            let n = node.child_by_field_name("name")?;
            (UnitKind::Class, n, Some(Scope::Class))
        }
        "interface_declaration" => {
            let n = node.child_by_field_name("name")?;
            (UnitKind::Trait, n, Some(Scope::Trait))
        }
        "enum_declaration" => (UnitKind::Enum, node.child_by_field_name("name")?, None),
        "type_alias_declaration" => (UnitKind::TypeAlias, node.child_by_field_name("name")?, None),
        "lexical_declaration" if scope == Scope::Module => {
            // const f = (a) => …;
            let decls = named_children(node);
            let [d] = decls.as_slice() else { return None };
            let value = d.child_by_field_name("value")?;
            if !matches!(
                value.kind(),
                "arrow_function" | "function_expression" | "function"
            ) {
                return None;
            }
            (UnitKind::Function, d.child_by_field_name("name")?, None)
        }
        _ => return None,
    };
    let name = text(name_node, src).to_string();
    let body = node.child_by_field_name("body");
    let (start_byte, doc) = jsdoc(outer, src);
    let params = node
        .child_by_field_name("parameters")
        .map(|p| {
            named_children(p)
                .into_iter()
                .map(|c| {
                    let c = c.child_by_field_name("pattern").unwrap_or(c);
                    text(c, src).to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Definition {
        kind,
        segment: name.clone(),
        inner: inner.map(|s| (s, name.clone())),
        name,
        node: outer,
        start_byte,
        body,
        doc,
        body_start: None,
        params,
        receiver: kind == UnitKind::Method,
    })
}

fn jsdoc(node: Node<'_>, src: &str) -> (usize, Option<(String, usize, usize)>) {
    if let Some(p) = node.prev_sibling() {
        let t = text(p, src);
        if p.kind() == "comment" && t.starts_with("/**") {
            let inner = t.trim_start_matches("/**").trim_end_matches("*/");
            let doc: Vec<&str> = inner
                .lines()
                .map(|l| l.trim().trim_start_matches('*').trim())
                .collect();
            let doc = doc.join("\n").trim().to_string();
            if !doc.is_empty() {
                return (p.start_byte(), Some((doc, p.start_byte(), p.end_byte())));
            }
        }
    }
    (node.start_byte(), None)
}
