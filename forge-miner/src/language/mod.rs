//! The language registry: one file per language, each implementing [`Language`].
//!
//! Adding a language is one file: implement [`Language`] (grammar, file
//! detection, which nodes are definitions, docs, imports, module path) and add
//! it to [`Registry::new`].

use std::sync::Arc;

use tree_sitter::Node;

use crate::unit::UnitKind;

#[cfg(feature = "go")]
mod go;
#[cfg(any(feature = "javascript", feature = "typescript"))]
mod javascript;
mod python;
mod rust;

#[cfg(feature = "go")]
pub use go::Go;
#[cfg(feature = "javascript")]
pub use javascript::JavaScript;
#[cfg(feature = "typescript")]
pub use javascript::TypeScript;
pub use python::Python;
pub use rust::Rust;

/// What kind of scope a definition sits in (drives `Function` vs `Method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// File or module level.
    Module,
    /// Inside an `impl` block.
    Impl,
    /// Inside a trait (or interface).
    Trait,
    /// Inside a class.
    Class,
}

/// A definition recognised by a [`Language`].
#[derive(Debug, Clone)]
pub struct Definition<'t> {
    /// Unit kind.
    pub kind: UnitKind,
    /// The definition's name (last symbol segment).
    pub name: String,
    /// The symbol segment (differs from `name` for trait impls: `<Foo as Display>`).
    pub segment: String,
    /// The node that holds the definition (for Python decorated definitions, the inner one).
    pub node: Node<'t>,
    /// Where the unit starts: leading doc comments, attributes and decorators included.
    pub start_byte: usize,
    /// The body node (block, declaration list), if any.
    pub body: Option<Node<'t>>,
    /// For containers, the scope their children are in and the segment they add.
    pub inner: Option<(Scope, String)>,
    /// The doc comment or docstring, markers stripped, and its byte range.
    pub doc: Option<(String, usize, usize)>,
    /// Where the body starts once the docstring is skipped (Python).
    pub body_start: Option<usize>,
    /// Parameter names without `self`.
    pub params: Vec<String>,
    /// Whether the callable takes `self`.
    pub receiver: bool,
}

/// A programming language the miner understands.
pub trait Language: Send + Sync + std::fmt::Debug {
    /// Short lowercase name (`rust`, `python`).
    fn name(&self) -> &'static str;
    /// File extensions without the dot.
    fn extensions(&self) -> &'static [&'static str];
    /// Interpreter names recognised in a `#!` line (`python3`).
    fn interpreters(&self) -> &'static [&'static str] {
        &[]
    }
    /// The tree-sitter grammar.
    fn grammar(&self) -> tree_sitter::Language;
    /// Symbol path separator (`::` or `.`).
    fn separator(&self) -> &'static str;
    /// Line comment marker used when a prompt shows a doc as a comment.
    fn doc_comment_prefix(&self) -> &'static str;
    /// Module path segments of a repo-relative file path.
    fn module_path(&self, rel_path: &str) -> Vec<String>;
    /// Whether `node` is a `use`/`import` line.
    fn is_import(&self, node: Node<'_>) -> bool;
    /// Recognise a definition among the named children of a scope.
    fn definition<'t>(&self, node: Node<'t>, src: &str, scope: Scope) -> Option<Definition<'t>>;
    /// The module's own documentation: text and byte range.
    fn module_doc(&self, root: Node<'_>, src: &str) -> Option<(String, usize, usize)>;
}

/// The set of languages the miner detects, by extension and by `#!` line.
#[derive(Debug, Clone)]
pub struct Registry {
    languages: Vec<Arc<dyn Language>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// Every built-in language enabled by cargo features (Rust and Python always).
    pub fn new() -> Self {
        #[allow(unused_mut)]
        let mut languages: Vec<Arc<dyn Language>> = vec![Arc::new(Rust), Arc::new(Python)];
        #[cfg(feature = "javascript")]
        languages.push(Arc::new(JavaScript));
        #[cfg(feature = "typescript")]
        languages.push(Arc::new(TypeScript));
        #[cfg(feature = "go")]
        languages.push(Arc::new(Go));
        Self { languages }
    }

    /// An empty registry.
    pub fn empty() -> Self {
        Self {
            languages: Vec::new(),
        }
    }

    /// Adds (or replaces, by name) a language.
    #[must_use]
    pub fn with(mut self, language: impl Language + 'static) -> Self {
        self.languages.retain(|l| l.name() != language.name());
        self.languages.push(Arc::new(language));
        self
    }

    /// The registered languages.
    pub fn languages(&self) -> impl Iterator<Item = &Arc<dyn Language>> {
        self.languages.iter()
    }

    /// A language by name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<dyn Language>> {
        self.languages.iter().find(|l| l.name() == name)
    }

    /// Detects by extension (`a/b.rs`).
    pub fn by_path(&self, path: &str) -> Option<&Arc<dyn Language>> {
        let file = path.rsplit('/').next().unwrap_or(path);
        let (_, ext) = file.rsplit_once('.')?;
        self.languages
            .iter()
            .find(|l| l.extensions().iter().any(|e| e.eq_ignore_ascii_case(ext)))
    }

    /// Detects by a `#!` first line (`#!/usr/bin/env python3`, `#!/usr/bin/python -u`).
    pub fn by_shebang(&self, first_line: &str) -> Option<&Arc<dyn Language>> {
        let line = first_line.strip_prefix("#!")?.trim();
        let mut words = line.split_whitespace();
        let mut prog = words.next()?.rsplit('/').next()?;
        if prog == "env" {
            prog = words.find(|w| !w.starts_with('-'))?;
        }
        // python3.12 → python3 → python
        let base = prog.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
        self.languages
            .iter()
            .find(|l| l.interpreters().iter().any(|i| *i == prog || *i == base))
    }
}

/// The text of `node`, or "" when the range is not a char boundary (never on
/// tree-sitter output for valid UTF-8, but user data must not panic).
pub(crate) fn text<'s>(node: Node<'_>, src: &'s str) -> &'s str {
    src.get(node.start_byte()..node.end_byte()).unwrap_or("")
}

/// Named children of `node`, collected (tree-sitter's cursor API borrows).
pub(crate) fn named_children(node: Node<'_>) -> Vec<Node<'_>> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor).collect()
}

/// Dedent lines of a docstring the way Python's `inspect.cleandoc` does.
pub(crate) fn cleandoc(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let indent = lines
        .iter()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        if i == 0 {
            out.push(l.trim().to_string());
        } else {
            out.push(
                l.get(indent..)
                    .unwrap_or(l.trim_start())
                    .trim_end()
                    .to_string(),
            );
        }
    }
    while out.first().is_some_and(|l| l.is_empty()) {
        out.remove(0);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_extension_and_shebang() {
        let r = Registry::new();
        assert_eq!(r.by_path("src/lib.rs").map(|l| l.name()), Some("rust"));
        assert_eq!(r.by_path("a/b/c.PY").map(|l| l.name()), Some("python"));
        assert!(r.by_path("Makefile").is_none());
        assert_eq!(
            r.by_shebang("#!/usr/bin/env python3").map(|l| l.name()),
            Some("python")
        );
        assert_eq!(
            r.by_shebang("#!/usr/bin/python3.12 -u").map(|l| l.name()),
            Some("python")
        );
        assert!(r.by_shebang("#!/bin/sh").is_none());
    }

    #[test]
    fn cleandoc_dedents() {
        assert_eq!(
            cleandoc("Title.\n\n    Body\n      more\n    "),
            "Title.\n\nBody\n  more"
        );
    }
}
