//! Go: `tree-sitter-go` (feature `go`).

use tree_sitter::Node;

use super::{Definition, Language, Scope, named_children, text};
use crate::unit::UnitKind;

/// The Go language.
#[derive(Debug, Clone, Copy, Default)]
pub struct Go;

impl Language for Go {
    fn name(&self) -> &'static str {
        "go"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["go"]
    }

    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_go::LANGUAGE.into()
    }

    fn separator(&self) -> &'static str {
        "."
    }

    fn doc_comment_prefix(&self) -> &'static str {
        "//"
    }

    /// The package directory: `pkg/sub/file.go` → `pkg.sub`.
    fn module_path(&self, rel_path: &str) -> Vec<String> {
        let dir = rel_path.rsplit_once('/').map_or("main", |(d, _)| d);
        dir.split('/').map(str::to_string).collect()
    }

    fn is_import(&self, node: Node<'_>) -> bool {
        node.kind() == "import_declaration"
    }

    fn definition<'t>(&self, node: Node<'t>, src: &str, _scope: Scope) -> Option<Definition<'t>> {
        let (kind, name, segment) = match node.kind() {
            "function_declaration" => {
                let n = text(node.child_by_field_name("name")?, src).to_string();
                (UnitKind::Function, n.clone(), n)
            }
            "method_declaration" => {
                let n = text(node.child_by_field_name("name")?, src).to_string();
                let recv = node.child_by_field_name("receiver").map(|r| text(r, src));
                let ty = recv
                    .and_then(|r| r.split_whitespace().last())
                    .map(|t| t.trim_matches(|c| c == '(' || c == ')' || c == '*'))
                    .unwrap_or("");
                let seg = if ty.is_empty() {
                    n.clone()
                } else {
                    format!("{ty}.{n}")
                };
                (UnitKind::Method, n, seg)
            }
            "type_declaration" => {
                let spec = named_children(node)
                    .into_iter()
                    .find(|c| c.kind() == "type_spec")?;
                let n = text(spec.child_by_field_name("name")?, src).to_string();
                let k = match spec.child_by_field_name("type").map(|t| t.kind()) {
                    Some("struct_type") => UnitKind::Struct,
                    Some("interface_type") => UnitKind::Trait,
                    _ => UnitKind::TypeAlias,
                };
                (k, n.clone(), n)
            }
            _ => return None,
        };
        let mut start_byte = node.start_byte();
        let mut lines = Vec::new();
        let (mut ds, mut de) = (usize::MAX, 0);
        let mut cur = node.prev_sibling();
        while let Some(p) = cur {
            let t = text(p, src);
            if p.kind() != "comment" || !t.starts_with("//") {
                break;
            }
            lines.push(t.trim_start_matches("//").trim().to_string());
            start_byte = p.start_byte();
            ds = ds.min(p.start_byte());
            de = de.max(p.end_byte());
            cur = p.prev_sibling();
        }
        lines.reverse();
        let doc = lines.join("\n");
        let params = node
            .child_by_field_name("parameters")
            .map(|p| {
                named_children(p)
                    .into_iter()
                    .filter_map(|c| {
                        c.child_by_field_name("name")
                            .map(|n| text(n, src).to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Definition {
            kind,
            name,
            segment,
            node,
            start_byte,
            body: node.child_by_field_name("body"),
            inner: None,
            doc: (!doc.is_empty()).then_some((doc, ds, de)),
            body_start: None,
            params,
            receiver: kind == UnitKind::Method,
        })
    }

    fn module_doc(&self, _root: Node<'_>, _src: &str) -> Option<(String, usize, usize)> {
        None
    }
}
