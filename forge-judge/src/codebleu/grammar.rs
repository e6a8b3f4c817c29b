//! Grammars and keyword lists: today's tree-sitter grammars (tree-sitter-python 0.25,
//! tree-sitter-rust 0.24) by default, and in compat mode the ones codebleu 0.7.0 is installed
//! with (tree-sitter-python 0.21.0, tree-sitter-rust 0.21.2; see `build.rs`), so that
//! compat-mode trees, error recovery included, are codebleu's.

use std::cell::RefCell;

use tree_sitter::{Parser, Tree};

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

    /// Node kind names, the canonical code of each kind's name, and the field ids the rules
    /// use, built once per grammar.
    fn info(&self) -> &'static Info {
        use std::sync::OnceLock;
        static INFO: [OnceLock<Info>; 4] = [
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
            OnceLock::new(),
        ];
        INFO[self.slot()].get_or_init(|| {
            let language = language(self.lang, self.compat);
            let kinds: Vec<&'static str> = (0..language.node_kind_count())
                .map(|id| {
                    u16::try_from(id)
                        .ok()
                        .and_then(|id| language.node_kind_for_id(id))
                        .unwrap_or("")
                })
                .collect();
            // Several symbols can print the same name (aliases): the first one's id stands
            // for all of them.
            let named = (0..kinds.len())
                .map(|id| u16::try_from(id).is_ok_and(|id| language.node_kind_is_named(id)))
                .collect();
            let mut first = rustc_hash::FxHashMap::default();
            let canon = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| *first.entry(*k).or_insert(i as u32))
                .collect();
            let field = |name: &str| language.field_id_for_name(name).map_or(0, |f| f.get());
            Info {
                fields: Fields {
                    left: field("left"),
                    right: field("right"),
                    name: field("name"),
                    value: field("value"),
                },
                kinds,
                named,
                canon,
            }
        })
    }

    /// Name and whether it is a named node, of a (visible, already aliased) symbol; `None`
    /// for symbols outside the table (`ERROR`).
    pub(crate) fn symbol(&self, symbol: u16) -> Option<(&'static str, bool)> {
        let info = self.info();
        let i = usize::from(symbol);
        match info.kinds.get(i) {
            Some(k) if !k.is_empty() => Some((k, info.named[i])),
            _ => None,
        }
    }

    /// A number that is equal for two symbols exactly when they print the same name.
    pub(crate) fn name_code(&self, symbol: u16) -> u32 {
        self.info()
            .canon
            .get(usize::from(symbol))
            .copied()
            .unwrap_or(0x1_0000 + u32::from(symbol))
    }

    /// Ids of the fields the dataflow rules look up (0: not in this grammar).
    pub(crate) fn fields(&self) -> Fields {
        self.info().fields
    }
}

struct Info {
    kinds: Vec<&'static str>,
    named: Vec<bool>,
    canon: Vec<u32>,
    fields: Fields,
}

/// Field ids of one grammar.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    pub(crate) left: u16,
    pub(crate) right: u16,
    pub(crate) name: u16,
    pub(crate) value: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Default mode runs today's grammars (ABI 15), compat mode codebleu's (ABI 14): a symbol
    /// clash that let the linker pick one grammar for both would show here.
    #[test]
    fn compat_and_default_grammars_are_distinct_versions() {
        for lang in [Lang::Python, Lang::Rust] {
            assert_eq!(language(lang, false).abi_version(), 15, "{lang}");
            assert_eq!(language(lang, true).abi_version(), 14, "{lang}");
        }
        // A node type that only the 0.21 Rust grammar has (0.23 wrapped generic parameters).
        let old = language(Lang::Rust, true);
        let new = language(Lang::Rust, false);
        assert_ne!(old.id_for_node_kind("constrained_type_parameter", true), 0);
        assert_eq!(new.id_for_node_kind("constrained_type_parameter", true), 0);
    }
}
