//! Python: `tree-sitter-python`.

use tree_sitter::Node;

use super::{Definition, Language, Scope, cleandoc, named_children, text};
use crate::unit::UnitKind;

/// The Python language.
#[derive(Debug, Clone, Copy, Default)]
pub struct Python;

impl Language for Python {
    fn name(&self) -> &'static str {
        "python"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["py", "pyi", "pyw"]
    }

    fn interpreters(&self) -> &'static [&'static str] {
        &["python", "python3", "python2", "pypy", "pypy3"]
    }

    fn grammar(&self) -> tree_sitter::Language {
        tree_sitter_python::LANGUAGE.into()
    }

    fn separator(&self) -> &'static str {
        "."
    }

    fn doc_comment_prefix(&self) -> &'static str {
        "#"
    }

    /// `pkg/mod.py` → `pkg.mod`; `src/pkg/__init__.py` → `pkg`.
    fn module_path(&self, rel_path: &str) -> Vec<String> {
        let stem = rel_path
            .strip_suffix(".py")
            .or_else(|| rel_path.strip_suffix(".pyi"))
            .or_else(|| rel_path.strip_suffix(".pyw"))
            .unwrap_or(rel_path);
        let mut comps: Vec<String> = stem
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        if comps.len() > 1 && comps[0] == "src" {
            comps.remove(0);
        }
        if comps.len() > 1 && comps.last().is_some_and(|l| l == "__init__") {
            comps.pop();
        }
        comps
    }

    fn is_import(&self, node: Node<'_>) -> bool {
        matches!(
            node.kind(),
            "import_statement" | "import_from_statement" | "future_import_statement"
        )
    }

    fn definition<'t>(&self, node: Node<'t>, src: &str, scope: Scope) -> Option<Definition<'t>> {
        let (def, start_byte) = if node.kind() == "decorated_definition" {
            (node.child_by_field_name("definition")?, node.start_byte())
        } else {
            (node, node.start_byte())
        };
        let kind = match def.kind() {
            "function_definition" if scope == Scope::Class => UnitKind::Method,
            "function_definition" => UnitKind::Function,
            "class_definition" => UnitKind::Class,
            _ => return None,
        };
        let name = text(def.child_by_field_name("name")?, src).to_string();
        let body = def.child_by_field_name("body");
        let (doc, body_start) = match body {
            Some(b) => docstring(b, src),
            None => (None, None),
        };
        let (params, receiver) = if kind.is_callable() {
            params(def, src, scope == Scope::Class)
        } else {
            (Vec::new(), false)
        };
        let inner = (kind == UnitKind::Class).then(|| (Scope::Class, name.clone()));
        Some(Definition {
            kind,
            segment: name.clone(),
            name,
            node,
            start_byte,
            body,
            inner,
            doc,
            body_start,
            params,
            receiver,
        })
    }

    fn module_doc(&self, root: Node<'_>, src: &str) -> Option<(String, usize, usize)> {
        let first = named_children(root)
            .into_iter()
            .find(|n| n.kind() != "comment")?;
        let (doc, _) = docstring_of(first, src)?;
        Some((doc, first.start_byte(), first.end_byte()))
    }
}

/// A statement that is a bare string literal: its cleaned text.
fn docstring_of(stmt: Node<'_>, src: &str) -> Option<(String, ())> {
    if stmt.kind() != "expression_statement" || stmt.named_child_count() != 1 {
        return None;
    }
    let s = stmt.named_child(0)?;
    if s.kind() != "string" {
        return None;
    }
    Some((cleandoc(&unquote(text(s, src))), ()))
}

/// The docstring of a body and where the rest of the body starts.
fn docstring(body: Node<'_>, src: &str) -> (Option<(String, usize, usize)>, Option<usize>) {
    let children = named_children(body);
    let Some(first) = children.iter().copied().find(|n| n.kind() != "comment") else {
        return (None, Some(body.start_byte()));
    };
    match docstring_of(first, src) {
        Some((doc, ())) => {
            let rest = children
                .iter()
                .find(|n| n.start_byte() >= first.end_byte())
                .map_or(body.end_byte(), |n| n.start_byte());
            (
                Some((doc, first.start_byte(), first.end_byte())),
                Some(rest),
            )
        }
        None => (None, Some(body.start_byte())),
    }
}

/// `r"""text"""` → `text`.
fn unquote(s: &str) -> String {
    let s = s.trim_start_matches(|c: char| "rRuUbBfF".contains(c));
    for q in ["\"\"\"", "'''", "\"", "'"] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner.to_string();
        }
    }
    s.to_string()
}

fn params(def: Node<'_>, src: &str, in_class: bool) -> (Vec<String>, bool) {
    let Some(list) = def.child_by_field_name("parameters") else {
        return (Vec::new(), false);
    };
    let mut names = Vec::new();
    for p in named_children(list) {
        let name = match p.kind() {
            "identifier" => Some(text(p, src).to_string()),
            "typed_parameter" => named_children(p)
                .into_iter()
                .find(|c| c.kind() == "identifier")
                .map(|c| text(c, src).to_string()),
            "default_parameter" | "typed_default_parameter" => p
                .child_by_field_name("name")
                .map(|c| text(c, src).to_string()),
            "list_splat_pattern" | "dictionary_splat_pattern" => Some(text(p, src).to_string()),
            _ => None,
        };
        names.extend(name);
    }
    let receiver = in_class && names.first().is_some_and(|n| n == "self" || n == "cls");
    if receiver {
        names.remove(0);
    }
    (names, receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths() {
        let p = Python;
        assert_eq!(p.module_path("pkg/mod.py"), ["pkg", "mod"]);
        assert_eq!(p.module_path("src/pkg/__init__.py"), ["pkg"]);
        assert_eq!(p.module_path("tool.py"), ["tool"]);
    }

    #[test]
    fn unquotes() {
        assert_eq!(unquote("r'''a'''"), "a");
        assert_eq!(unquote("\"b\""), "b");
    }
}
