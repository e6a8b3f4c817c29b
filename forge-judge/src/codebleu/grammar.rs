//! Grammars, keyword lists and the compat-mode mapping from today's tree-sitter grammars
//! (tree-sitter-python 0.25, tree-sitter-rust 0.24) to the node types of the 0.21-era grammars
//! that codebleu 0.7.0 is installed with.

use std::cell::RefCell;

use tree_sitter::{Node, Parser, Tree};

use super::Lang;

/// codebleu 0.7.0's `keywords/python.txt` (MIT, © 2023 Konstantin Chernyshev).
const PYTHON_KEYWORDS: &str = include_str!("keywords/python.txt");
/// codebleu 0.7.0's `keywords/rust.txt`.
const RUST_KEYWORDS: &str = include_str!("keywords/rust.txt");

/// Whether `token` is on the language's keyword list (one keyword per line, as in codebleu).
pub(crate) fn is_keyword(lang: Lang, token: &str) -> bool {
    use rustc_hash::FxHashSet;
    use std::sync::OnceLock;
    static PY: OnceLock<FxHashSet<&'static str>> = OnceLock::new();
    static RS: OnceLock<FxHashSet<&'static str>> = OnceLock::new();
    let (cell, text) = match lang {
        Lang::Python => (&PY, PYTHON_KEYWORDS),
        Lang::Rust => (&RS, RUST_KEYWORDS),
    };
    cell.get_or_init(|| text.lines().map(str::trim).collect())
        .contains(token)
}

thread_local! {
    static PARSERS: RefCell<[Option<Parser>; 2]> = const { RefCell::new([None, None]) };
}

fn language(lang: Lang) -> tree_sitter::Language {
    match lang {
        Lang::Python => tree_sitter_python::LANGUAGE.into(),
        Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
    }
}

pub(crate) struct Grammar {
    lang: Lang,
    compat: bool,
}

impl Grammar {
    pub(crate) fn new(lang: Lang, compat: bool) -> Self {
        Self { lang, compat }
    }

    pub(crate) fn parse(&self, code: &str) -> Option<Tree> {
        PARSERS.with(|cell| {
            let mut parsers = cell.borrow_mut();
            let slot = &mut parsers[self.lang as usize];
            if slot.is_none() {
                let mut p = Parser::new();
                p.set_language(&language(self.lang)).ok()?;
                *slot = Some(p);
            }
            slot.as_mut()?.parse(code, None)
        })
    }

    /// The node's type as the rules expect it.
    pub(crate) fn kind(&self, node: &Node<'_>) -> &'static str {
        let k = self.raw_kind(node);
        if self.compat {
            map_kind(self.lang, k)
        } else {
            k
        }
    }

    /// `node.kind()` through a table built once per language (`Node::kind` re-measures and
    /// re-validates the C string on every call).
    pub(crate) fn raw_kind(&self, node: &Node<'_>) -> &'static str {
        use std::sync::OnceLock;
        static TABLES: [OnceLock<Vec<&'static str>>; 2] = [OnceLock::new(), OnceLock::new()];
        let table = TABLES[self.lang as usize].get_or_init(|| {
            let language = language(self.lang);
            (0..language.node_kind_count())
                .map(|id| {
                    u16::try_from(id)
                        .ok()
                        .and_then(|id| language.node_kind_for_id(id))
                        .unwrap_or("")
                })
                .collect()
        });
        match table.get(usize::from(node.kind_id())) {
            Some(k) if !k.is_empty() => k,
            _ => node.kind(),
        }
    }

    /// How the node prints in the S-expression of the grammar the mode targets.
    pub(crate) fn shape(&self, node: &Node<'_>) -> Shape {
        match (self.compat, self.lang) {
            (true, Lang::Rust) => rust_shape(self.raw_kind(node), node),
            _ => Shape::Keep,
        }
    }
}

/// How a node of today's grammar appears in the 0.21-era grammar's S-expression.
pub(crate) enum Shape {
    /// Same type and fields.
    Keep,
    /// Another type name, fields renamed `(new grammar, old grammar)`.
    Rename(&'static str, &'static [(&'static str, &'static str)]),
    /// No node in the old grammar: the children take its place.
    Splice,
}

fn map_kind(_lang: Lang, k: &'static str) -> &'static str {
    k
}

/// tree-sitter-rust 0.23 wrapped generic parameters in `type_parameter` / `lifetime_parameter`
/// nodes; 0.21 had the bare name, `constrained_type_parameter left: … bounds: …` and
/// `optional_type_parameter name: … default_type: …`.
fn rust_shape(kind: &str, node: &Node<'_>) -> Shape {
    match kind {
        "type_parameter" | "lifetime_parameter" => {
            let bounds = node.child_by_field_name("bounds").is_some();
            let default = node.child_by_field_name("default_type").is_some();
            match (bounds, default) {
                (false, false) => Shape::Splice,
                (true, false) => Shape::Rename("constrained_type_parameter", &[("name", "left")]),
                _ => Shape::Rename("optional_type_parameter", &[]),
            }
        }
        _ => Shape::Keep,
    }
}
