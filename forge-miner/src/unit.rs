//! Mined units and their metadata.

use serde::{Deserialize, Serialize};

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// A free function.
    Function,
    /// A function inside an `impl`, trait or class.
    Method,
    /// A Rust `struct` or `union`.
    Struct,
    /// A Rust `enum`.
    Enum,
    /// A Rust trait or a TypeScript/Go interface.
    Trait,
    /// A Rust `impl` block.
    Impl,
    /// A Python/JS/TS class.
    Class,
    /// An inline module (`mod name { … }`).
    Module,
    /// A module's own documentation (`//!` lines, a Python module docstring).
    ModuleDoc,
    /// A type alias.
    TypeAlias,
    /// A `const` or `static` item.
    Const,
    /// A `macro_rules!` definition.
    Macro,
    /// A chunk of a file in cover mode (not a single definition).
    Chunk,
}

impl UnitKind {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Function => "function",
            UnitKind::Method => "method",
            UnitKind::Struct => "struct",
            UnitKind::Enum => "enum",
            UnitKind::Trait => "trait",
            UnitKind::Impl => "impl",
            UnitKind::Class => "class",
            UnitKind::Module => "module",
            UnitKind::ModuleDoc => "module_doc",
            UnitKind::TypeAlias => "type_alias",
            UnitKind::Const => "const",
            UnitKind::Macro => "macro",
            UnitKind::Chunk => "chunk",
        }
    }

    /// Functions and methods.
    pub fn is_callable(self) -> bool {
        matches!(self, UnitKind::Function | UnitKind::Method)
    }

    /// Units that contain other units (impl blocks, classes, traits, modules).
    pub fn is_container(self) -> bool {
        matches!(
            self,
            UnitKind::Impl | UnitKind::Class | UnitKind::Module | UnitKind::Trait
        )
    }
}

impl std::fmt::Display for UnitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which piece of a split unit this is (cAST sizing split an over-budget unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// 0-based index of the piece.
    pub index: usize,
    /// Number of pieces of the unit.
    pub count: usize,
}

/// One mined unit: a whole definition (or, when it was over budget, one piece of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Stable id: a hash of path, symbol, kind, start byte and part.
    pub id: String,
    /// Repo-relative path with `/` separators.
    pub path: String,
    /// Language name (`rust`, `python`, …).
    pub language: String,
    /// Qualified symbol path: `crate::module::Type::method`, `pkg.module.Class.method`.
    pub symbol: String,
    /// The unit's own name (last segment of the symbol).
    pub name: String,
    /// What the unit is.
    pub kind: UnitKind,
    /// Byte offset of the first byte (including leading doc comments and attributes).
    pub start_byte: usize,
    /// Byte offset one past the last byte.
    pub end_byte: usize,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (inclusive).
    pub end_line: usize,
    /// The declaration up to its body (`pub fn f(x: u32) -> u32`, `def f(x):`).
    pub signature: String,
    /// The doc comment or docstring, markers stripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// The `use`/`import` lines in scope (file level and enclosing modules/classes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<String>,
    /// Parameter names (without `self`), for callables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    /// Whether a callable takes `self` (a method called on a value).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub receiver: bool,
    /// Byte range of the body (after the docstring in Python), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<(usize, usize)>,
    /// Byte range of the doc comment/docstring inside the unit's text, absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_range: Option<(usize, usize)>,
    /// Set when cAST sizing split the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// FNV-1a 64 of the text, 16 hex digits.
    pub hash: String,
    /// The source text (`source[start_byte..end_byte]`).
    pub text: String,
}

impl Unit {
    /// The text with the doc comment/docstring removed (what "doc → code" asks for).
    pub fn code_without_doc(&self) -> String {
        match self.doc_range {
            Some((a, b)) if a >= self.start_byte && b <= self.end_byte && a <= b => {
                let (a, b) = (a - self.start_byte, b - self.start_byte);
                let (Some(head), Some(tail)) = (self.text.get(..a), self.text.get(b..)) else {
                    return self.text.clone();
                };
                // Drop the rest of the docstring's line (newline and indentation).
                let tail = match tail.find('\n') {
                    Some(nl) if tail[..nl].trim().is_empty() && !head.trim().is_empty() => {
                        &tail[nl + 1..]
                    }
                    _ => tail,
                };
                let head = if head.trim().is_empty() { "" } else { head };
                format!("{head}{tail}")
            }
            _ => self.text.clone(),
        }
    }

    /// The body text, if the unit has one.
    pub fn body_text(&self) -> Option<&str> {
        let (a, b) = self.body?;
        if a < self.start_byte || b > self.end_byte || a > b {
            return None;
        }
        self.text.get(a - self.start_byte..b - self.start_byte)
    }

    /// The row written to the `--units` JSONL file (metadata, no text).
    pub fn row(&self) -> UnitRow {
        UnitRow {
            id: self.id.clone(),
            path: self.path.clone(),
            language: self.language.clone(),
            symbol: self.symbol.clone(),
            kind: self.kind,
            start_line: self.start_line,
            end_line: self.end_line,
            start_byte: self.start_byte,
            end_byte: self.end_byte,
            part: self.part,
            hash: self.hash.clone(),
        }
    }
}

/// One line of the `--units` JSONL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRow {
    /// Stable unit id.
    pub id: String,
    /// Repo-relative path.
    pub path: String,
    /// Language name.
    pub language: String,
    /// Qualified symbol path.
    pub symbol: String,
    /// Unit kind.
    pub kind: UnitKind,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (inclusive).
    pub end_line: usize,
    /// First byte.
    pub start_byte: usize,
    /// One past the last byte.
    pub end_byte: usize,
    /// Set for pieces of a split unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    /// Content hash.
    pub hash: String,
}

/// A chunk of a file in cover mode: chunks of one file re-join to the file exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Repo-relative path.
    pub path: String,
    /// First byte.
    pub start_byte: usize,
    /// One past the last byte.
    pub end_byte: usize,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (inclusive).
    pub end_line: usize,
    /// Size in the budget's unit (characters or tokens).
    pub size: usize,
    /// The text.
    pub text: String,
}
