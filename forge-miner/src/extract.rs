//! Parsing a file and extracting its units (tree-sitter), sized with cAST.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser, Tree};

use crate::error::{Error, Result};
use crate::hash::{fnv1a, fnv1a_fields, hex};
use crate::language::{Definition, Language, Scope, named_children, text};
use crate::lines::LineIndex;
use crate::sizing::{Budget, Piece, chunk_pieces};
use crate::unit::{Chunk, Part, Unit, UnitKind};

/// Container nesting (modules in modules, classes in classes) deeper than this is
/// not descended into.
pub(crate) const MAX_SCOPE_DEPTH: usize = 64;

/// A file whose syntax error nodes cover more than this fraction of its bytes is skipped.
pub(crate) const MAX_ERROR_FRACTION: f64 = 0.5;

/// Something worth knowing about a mined file (the file was still mined).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Repo-relative path.
    pub path: String,
    /// 1-based line, 0 when not tied to a line.
    pub line: usize,
    /// What happened.
    pub message: String,
}

/// The units of one file.
#[derive(Debug, Clone, Default)]
pub struct FileUnits {
    /// Repo-relative path.
    pub path: String,
    /// Language name.
    pub language: String,
    /// Bytes of source.
    pub bytes: usize,
    /// Units in source order (containers before their members).
    pub units: Vec<Unit>,
    /// Diagnostics (syntax errors, deep nesting).
    pub diagnostics: Vec<Diagnostic>,
    /// Set when the file was rejected after parsing (mostly syntax errors).
    pub rejected: Option<String>,
}

thread_local! {
    static PARSERS: RefCell<HashMap<&'static str, Parser>> = RefCell::new(HashMap::new());
}

/// Parses `src` with a per-thread cached parser.
pub(crate) fn parse(lang: &dyn Language, path: &str, src: &str) -> Result<Tree> {
    PARSERS.with(|cell| {
        let mut parsers = cell.borrow_mut();
        let parser = match parsers.entry(lang.name()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let mut p = Parser::new();
                p.set_language(&lang.grammar())
                    .map_err(|e| Error::Grammar {
                        language: lang.name().to_string(),
                        message: e.to_string(),
                    })?;
                v.insert(p)
            }
        };
        parser.parse(src, None).ok_or_else(|| Error::Parse {
            path: path.to_string(),
        })
    })
}

/// Bytes covered by ERROR nodes and the first error's line (iterative walk that
/// only enters subtrees containing errors).
fn error_coverage(root: Node<'_>) -> (usize, Option<usize>) {
    if !root.has_error() {
        return (0, None);
    }
    let mut bytes = 0;
    let mut first: Option<usize> = None;
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        if n.is_error() || n.is_missing() {
            bytes += n.end_byte() - n.start_byte();
            let line = n.start_position().row + 1;
            first = Some(first.map_or(line, |f| f.min(line)));
            continue;
        }
        if n.has_error() {
            let mut cursor = n.walk();
            stack.extend(n.children(&mut cursor));
        }
    }
    (bytes, first)
}

/// Extracts the units of one parsed file and sizes them to `budget`.
pub(crate) fn extract(
    lang: &dyn Language,
    path: &str,
    src: &str,
    tree: &Tree,
    budget: &Budget,
) -> FileUnits {
    let root = tree.root_node();
    let mut out = FileUnits {
        path: path.to_string(),
        language: lang.name().to_string(),
        bytes: src.len(),
        ..FileUnits::default()
    };
    let (err_bytes, first_err) = error_coverage(root);
    if let Some(line) = first_err {
        let frac = err_bytes as f64 / src.len().max(1) as f64;
        if frac > MAX_ERROR_FRACTION {
            out.rejected = Some(format!(
                "syntax errors cover {:.0}% of the file (first at line {line})",
                frac * 100.0
            ));
            return out;
        }
        out.diagnostics.push(Diagnostic {
            path: path.to_string(),
            line,
            message: "syntax error: units containing errors were dropped".into(),
        });
    }
    let mut ex = Extractor {
        lang,
        path,
        src,
        budget,
        lines: LineIndex::new(src),
        module: lang.module_path(path),
        out: &mut out,
    };
    if let Some((doc, a, b)) = lang.module_doc(root, src) {
        let symbol = ex.module.join(lang.separator());
        let name = ex.module.last().cloned().unwrap_or_default();
        let first_line = doc.lines().next().unwrap_or("").to_string();
        ex.emit(
            Proto {
                kind: UnitKind::ModuleDoc,
                symbol,
                name,
                start: a,
                end: b,
                signature: first_line,
                doc: Some(doc),
                doc_range: Some((a, b)),
                imports: Vec::new(),
                params: Vec::new(),
                receiver: false,
                body: None,
            },
            None,
        );
    }
    let mut scope_path = Vec::new();
    let mut imports = Vec::new();
    ex.walk(root, Scope::Module, &mut scope_path, &mut imports, 0);
    out
}

/// Everything about a unit but its sizing.
struct Proto {
    kind: UnitKind,
    symbol: String,
    name: String,
    start: usize,
    end: usize,
    signature: String,
    doc: Option<String>,
    doc_range: Option<(usize, usize)>,
    imports: Vec<String>,
    params: Vec<String>,
    receiver: bool,
    body: Option<(usize, usize)>,
}

struct Extractor<'a> {
    lang: &'a dyn Language,
    path: &'a str,
    src: &'a str,
    budget: &'a Budget,
    lines: LineIndex,
    module: Vec<String>,
    out: &'a mut FileUnits,
}

impl Extractor<'_> {
    fn walk<'t>(
        &mut self,
        scope_node: Node<'t>,
        scope: Scope,
        scope_path: &mut Vec<String>,
        imports: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > MAX_SCOPE_DEPTH {
            self.out.diagnostics.push(Diagnostic {
                path: self.path.to_string(),
                line: scope_node.start_position().row + 1,
                message: format!(
                    "nesting deeper than {MAX_SCOPE_DEPTH} scopes: inner definitions not extracted"
                ),
            });
            return;
        }
        let children = named_children(scope_node);
        let outer_imports = imports.len();
        for c in &children {
            if self.lang.is_import(*c) {
                let t = text(*c, self.src).trim();
                if !t.is_empty() {
                    imports.push(t.to_string());
                }
            }
        }
        for c in children {
            let Some(def) = self.lang.definition(c, self.src, scope) else {
                continue;
            };
            let has_error = def.node.has_error();
            if !has_error {
                self.unit(&def, scope_path, imports);
            }
            if let (Some((inner, seg)), Some(body)) = (def.inner.clone(), def.body) {
                scope_path.push(seg);
                self.walk(body, inner, scope_path, imports, depth + 1);
                scope_path.pop();
            }
        }
        imports.truncate(outer_imports);
    }

    fn unit(&mut self, def: &Definition<'_>, scope_path: &[String], imports: &[String]) {
        let sep = self.lang.separator();
        let mut segs: Vec<&str> = self.module.iter().map(String::as_str).collect();
        segs.extend(scope_path.iter().map(String::as_str));
        segs.push(&def.segment);
        let symbol = segs.join(sep);
        let node = def.node;
        let start = def.start_byte.min(node.start_byte());
        let end = node.end_byte();
        // Docs and attributes are not part of the signature; decorators are.
        let sig_start = node.start_byte();
        let sig_end = match def.body {
            Some(b) if b.start_byte() >= sig_start => b.start_byte(),
            _ => node
                .child_by_field_name("value")
                .map_or(end, |v| v.start_byte()),
        };
        let signature = self
            .src
            .get(sig_start..sig_end)
            .unwrap_or("")
            .trim()
            .trim_end_matches(['=', ';'])
            .trim_end()
            .to_string();
        let body = def.body.map(|b| {
            (
                def.body_start.unwrap_or(b.start_byte()).min(b.end_byte()),
                b.end_byte(),
            )
        });
        let (doc, doc_range) = match &def.doc {
            Some((d, a, b)) => (Some(d.clone()), Some((*a, *b))),
            None => (None, None),
        };
        self.emit(
            Proto {
                kind: def.kind,
                symbol,
                name: def.name.clone(),
                start,
                end,
                signature,
                doc,
                doc_range,
                imports: imports.to_vec(),
                params: def.params.clone(),
                receiver: def.receiver,
                body,
            },
            Some(node),
        );
    }

    /// Sizes a unit: whole when it fits, else cAST pieces of it.
    fn emit(&mut self, p: Proto, node: Option<Node<'_>>) {
        let Some(text) = self.src.get(p.start..p.end) else {
            return;
        };
        if self.budget.fits(text) {
            let unit = self.make(&p, p.start, p.end, None);
            self.out.units.push(unit);
            return;
        }
        let mut pieces = Vec::new();
        match node {
            Some(n) if n.start_byte() >= p.start => {
                pieces.push(Piece::text(p.start, n.start_byte()));
                pieces.push(Piece::node(n.start_byte(), p.end, n));
            }
            _ => pieces.push(Piece::text(p.start, p.end)),
        }
        let chunked = chunk_pieces(self.budget, self.src, pieces);
        if chunked.too_deep {
            self.out.diagnostics.push(Diagnostic {
                path: self.path.to_string(),
                line: self.lines.line(p.start),
                message: format!(
                    "{} {}: nesting deeper than {} levels was split at line boundaries",
                    p.kind,
                    p.symbol,
                    crate::sizing::MAX_DEPTH
                ),
            });
        }
        let count = chunked.ranges.len();
        for (index, &(a, b, _)) in chunked.ranges.iter().enumerate() {
            let unit = self.make(&p, a, b, Some(Part { index, count }));
            self.out.units.push(unit);
        }
    }

    fn make(&self, p: &Proto, start: usize, end: usize, part: Option<Part>) -> Unit {
        let text = self.src.get(start..end).unwrap_or("").to_string();
        let (start_line, end_line) = self.lines.lines(start, end);
        let part_ix = part.map_or(String::new(), |q| q.index.to_string());
        let id = hex(fnv1a_fields(&[
            self.path.as_bytes(),
            p.symbol.as_bytes(),
            p.kind.as_str().as_bytes(),
            start.to_string().as_bytes(),
            part_ix.as_bytes(),
        ]));
        let whole = part.is_none();
        Unit {
            id,
            path: self.path.to_string(),
            language: self.lang.name().to_string(),
            symbol: p.symbol.clone(),
            name: p.name.clone(),
            kind: p.kind,
            start_byte: start,
            end_byte: end,
            start_line,
            end_line,
            signature: p.signature.clone(),
            doc: p.doc.clone(),
            imports: p.imports.clone(),
            params: p.params.clone(),
            receiver: p.receiver,
            body: if whole { p.body } else { None },
            doc_range: if whole { p.doc_range } else { None },
            part,
            hash: hex(fnv1a(text.as_bytes())),
            text,
        }
    }
}

/// Cover mode: cAST chunks of the whole file that re-join to it exactly.
pub(crate) fn cover(path: &str, src: &str, tree: &Tree, budget: &Budget) -> Vec<Chunk> {
    let lines = LineIndex::new(src);
    let root = tree.root_node();
    let chunked = chunk_pieces(budget, src, vec![Piece::node(0, src.len(), root)]);
    chunked
        .ranges
        .into_iter()
        .map(|(a, b, size)| {
            let (start_line, end_line) = lines.lines(a, b);
            Chunk {
                path: path.to_string(),
                start_byte: a,
                end_byte: b,
                start_line,
                end_line,
                size,
                text: src.get(a..b).unwrap_or("").to_string(),
            }
        })
        .collect()
}
