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

/// The keyword list of a language, one keyword per line as in codebleu.
pub(crate) fn keywords(lang: Lang) -> &'static [&'static str] {
    use std::sync::OnceLock;
    static PY: OnceLock<Vec<&'static str>> = OnceLock::new();
    static RS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let (cell, text) = match lang {
        Lang::Python => (&PY, PYTHON_KEYWORDS),
        Lang::Rust => (&RS, RUST_KEYWORDS),
    };
    cell.get_or_init(|| text.lines().map(str::trim).collect())
}

thread_local! {
    static PARSERS: RefCell<[Option<Parser>; 2]> = const { RefCell::new([None, None]) };
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
                let language: tree_sitter::Language = match self.lang {
                    Lang::Python => tree_sitter_python::LANGUAGE.into(),
                    Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
                };
                p.set_language(&language).ok()?;
                *slot = Some(p);
            }
            slot.as_mut()?.parse(code, None)
        })
    }

    /// The node's type as the rules expect it.
    pub(crate) fn kind(&self, node: &Node<'_>) -> &'static str {
        let k = node.kind();
        if self.compat {
            map_kind(self.lang, k)
        } else {
            k
        }
    }

    /// How the node prints in the S-expression of the grammar the mode targets.
    pub(crate) fn shape(&self, node: &Node<'_>) -> Shape {
        match (self.compat, self.lang) {
            (true, Lang::Rust) => rust_shape(node),
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
fn rust_shape(node: &Node<'_>) -> Shape {
    match node.kind() {
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
