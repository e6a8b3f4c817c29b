//! Grammars and keyword lists: today's tree-sitter grammars (tree-sitter-python 0.25,
//! tree-sitter-rust 0.24) by default, and in compat mode the ones codebleu 0.7.0 is installed
//! with (tree-sitter-python 0.21.0, tree-sitter-rust 0.21.2; see `build.rs`), so that
//! compat-mode trees, error recovery included, are codebleu's.

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
    /// One parser per (language, compat) on each thread.
    static PARSERS: RefCell<[Option<Parser>; 4]> = const { RefCell::new([None, None, None, None]) };
}

unsafe extern "C" {
    // tree-sitter-python 0.21.0 and tree-sitter-rust 0.21.2, compiled by build.rs with renamed
    // symbols.
    fn forge_judge_tree_sitter_python_0_21() -> *const tree_sitter::ffi::TSLanguage;
    fn forge_judge_tree_sitter_rust_0_21() -> *const tree_sitter::ffi::TSLanguage;
}

/// The grammar of a language: today's crates, or (compat) the 0.21-era grammars codebleu
/// 0.7.0 is installed with.
pub(crate) fn language(lang: Lang, compat: bool) -> tree_sitter::Language {
    match (lang, compat) {
        (Lang::Python, false) => tree_sitter_python::LANGUAGE.into(),
        (Lang::Rust, false) => tree_sitter_rust::LANGUAGE.into(),
        // SAFETY: the functions return pointers to the grammars' static `TSLanguage`s
        // (ABI 14, which the tree-sitter 0.25 runtime loads), valid for the whole program.
        (Lang::Python, true) => unsafe {
            tree_sitter::Language::from_raw(forge_judge_tree_sitter_python_0_21())
        },
        (Lang::Rust, true) => unsafe {
            tree_sitter::Language::from_raw(forge_judge_tree_sitter_rust_0_21())
        },
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

    fn slot(&self) -> usize {
        self.lang as usize * 2 + usize::from(self.compat)
    }

    pub(crate) fn parse(&self, code: &str) -> Option<Tree> {
        PARSERS.with(|cell| {
            let mut parsers = cell.borrow_mut();
            let slot = &mut parsers[self.slot()];
            if slot.is_none() {
                let mut p = Parser::new();
                p.set_language(&language(self.lang, self.compat)).ok()?;
                *slot = Some(p);
            }
            slot.as_mut()?.parse(code, None)
        })
    }

    /// `node.kind()` through a table built once per grammar (`Node::kind` re-measures and
    /// re-validates the C string on every call).
    pub(crate) fn kind(&self, node: &Node<'_>) -> &'static str {
        use std::sync::OnceLock;
        static TABLES: [OnceLock<Vec<&'static str>>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        let table = TABLES[self.slot()].get_or_init(|| {
            let language = language(self.lang, self.compat);
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
}
