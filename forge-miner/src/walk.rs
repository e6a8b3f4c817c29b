//! Walking a repository: `.gitignore`-aware listing, language detection, skip reasons.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::language::{Language, Registry};

/// Why a file was not mined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// No registered language matches the extension or `#!` line.
    Unsupported,
    /// Contains NUL bytes in its first 8 KiB.
    Binary,
    /// Marked as generated (`@generated`, `DO NOT EDIT`, `*_pb2.py`, …).
    Generated,
    /// Under a vendored directory (`vendor/`, `third_party/`, `node_modules/`, …).
    Vendored,
    /// Minified: very long lines.
    Minified,
    /// Larger than the size limit.
    Oversized,
    /// Not valid UTF-8.
    InvalidUtf8,
    /// Syntax errors cover most of the file.
    ParseErrors,
    /// Could not be read.
    Unreadable,
    /// Empty or whitespace only.
    Empty,
    /// Unchanged since the revision given to incremental mining.
    Unchanged,
}

impl SkipReason {
    /// The snake_case name used in JSON and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unsupported => "unsupported",
            SkipReason::Binary => "binary",
            SkipReason::Generated => "generated",
            SkipReason::Vendored => "vendored",
            SkipReason::Minified => "minified",
            SkipReason::Oversized => "oversized",
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::ParseErrors => "parse_errors",
            SkipReason::Unreadable => "unreadable",
            SkipReason::Empty => "empty",
            SkipReason::Unchanged => "unchanged",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A skipped file and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Skip {
    /// Repo-relative path.
    pub path: String,
    /// The reason.
    pub reason: SkipReason,
    /// Details (the line of the first invalid byte, the size, …).
    pub detail: String,
}

/// Counts per reason.
pub type SkipSummary = BTreeMap<SkipReason, usize>;

/// Limits of the file filters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterConfig {
    /// Files larger than this are skipped as oversized.
    pub max_file_bytes: u64,
    /// Skip minified files (a line longer than `max_line_chars`, or an average
    /// line longer than `max_avg_line_chars`).
    pub skip_minified: bool,
    /// Longest line allowed before a file counts as minified.
    pub max_line_chars: usize,
    /// Longest average line allowed before a file counts as minified.
    pub max_avg_line_chars: usize,
    /// Skip files marked as generated.
    pub skip_generated: bool,
    /// Skip vendored directories.
    pub skip_vendored: bool,
    /// Walk hidden files and directories too.
    pub hidden: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 1 << 20,
            skip_minified: true,
            max_line_chars: 4000,
            max_avg_line_chars: 300,
            skip_generated: true,
            skip_vendored: true,
            hidden: false,
        }
    }
}

/// A file to mine: its path, text and language.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    /// Repo-relative path with `/` separators.
    pub(crate) path: String,
    /// The text.
    pub(crate) text: String,
    /// The detected language.
    pub(crate) language: Arc<dyn Language>,
}

/// Directory names treated as vendored code.
const VENDORED: &[&str] = &[
    "vendor",
    "vendored",
    "third_party",
    "third-party",
    "thirdparty",
    "node_modules",
    "site-packages",
    "bower_components",
    ".venv",
    "venv",
    "__pypackages__",
];

/// Lists the candidate files under `root`, sorted by repo-relative path.
pub(crate) fn list_files(root: &Path, filters: &FilterConfig) -> Result<Vec<(String, PathBuf)>> {
    if !root.is_dir() {
        return Err(Error::Walk {
            path: root.to_path_buf(),
            message: "not a directory".into(),
        });
    }
    let walker = ignore::WalkBuilder::new(root)
        .hidden(!filters.hidden)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(true)
        .require_git(false)
        .ignore(true)
        .parents(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    let mut files = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| Error::Walk {
            path: root.to_path_buf(),
            message: e.to_string(),
        })?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let abs = entry.path().to_path_buf();
        let Ok(rel) = abs.strip_prefix(root) else {
            continue;
        };
        let rel: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        files.push((rel.join("/"), abs));
    }
    files.sort();
    Ok(files)
}

/// Reads and classifies one file: a source file to mine or a skip with its reason.
pub(crate) fn classify(
    rel: &str,
    abs: &Path,
    registry: &Registry,
    filters: &FilterConfig,
) -> std::result::Result<SourceFile, Skip> {
    let skip = |reason: SkipReason, detail: String| Skip {
        path: rel.to_string(),
        reason,
        detail,
    };
    if filters.skip_vendored
        && let Some(dir) = rel.split('/').rev().skip(1).find(|c| VENDORED.contains(c))
    {
        return Err(skip(SkipReason::Vendored, format!("under {dir}/")));
    }
    let by_ext = registry.by_path(rel).cloned();
    let has_ext = rel
        .rsplit('/')
        .next()
        .is_some_and(|f| f.contains('.') && !f.starts_with('.'));
    if by_ext.is_none() && has_ext {
        return Err(skip(SkipReason::Unsupported, String::new()));
    }
    let size = std::fs::metadata(abs).map(|m| m.len()).unwrap_or(0);
    if size > filters.max_file_bytes {
        return Err(skip(
            SkipReason::Oversized,
            format!("{size} bytes > {} bytes", filters.max_file_bytes),
        ));
    }
    let bytes = std::fs::read(abs).map_err(|e| skip(SkipReason::Unreadable, e.to_string()))?;
    if bytes.len() as u64 > filters.max_file_bytes {
        return Err(skip(
            SkipReason::Oversized,
            format!("{} bytes > {} bytes", bytes.len(), filters.max_file_bytes),
        ));
    }
    let head = &bytes[..bytes.len().min(8192)];
    let language = match by_ext {
        Some(l) => l,
        None => {
            // No extension: only a `#!` line can make it a source file.
            let first = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
            let first = String::from_utf8_lossy(first);
            match registry.by_shebang(&first) {
                Some(l) => l.clone(),
                None => return Err(skip(SkipReason::Unsupported, String::new())),
            }
        }
    };
    if head.contains(&0) {
        return Err(skip(
            SkipReason::Binary,
            "NUL byte in the first 8 KiB".into(),
        ));
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(skip(
                SkipReason::InvalidUtf8,
                format!("invalid UTF-8 at byte {at} (line {line})"),
            ));
        }
    };
    if text.trim().is_empty() {
        return Err(skip(SkipReason::Empty, String::new()));
    }
    if filters.skip_generated
        && let Some(why) = generated(rel, &text)
    {
        return Err(skip(SkipReason::Generated, why));
    }
    if filters.skip_minified
        && let Some(why) = minified(&text, filters)
    {
        return Err(skip(SkipReason::Minified, why));
    }
    Ok(SourceFile {
        path: rel.to_string(),
        text,
        language,
    })
}

fn generated(rel: &str, text: &str) -> Option<String> {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    for suffix in [
        "_pb2.py",
        "_pb2_grpc.py",
        "_pb2.pyi",
        ".pb.rs",
        ".generated.rs",
    ] {
        if file.ends_with(suffix) {
            return Some(format!("file name ends with {suffix}"));
        }
    }
    for (i, line) in text.lines().take(5).enumerate() {
        let lower = line.to_ascii_lowercase();
        for marker in [
            "@generated",
            "do not edit",
            "code generated by",
            "automatically generated",
            "auto-generated",
            "autogenerated",
        ] {
            if lower.contains(marker) {
                return Some(format!("line {}: {marker:?}", i + 1));
            }
        }
    }
    None
}

fn minified(text: &str, filters: &FilterConfig) -> Option<String> {
    let mut lines = 0usize;
    let mut longest = (0usize, 0usize);
    for (i, line) in text.lines().enumerate() {
        lines += 1;
        // Bytes bound characters from above: count characters only when needed.
        let len = if line.len() > filters.max_line_chars {
            line.chars().count()
        } else {
            line.len()
        };
        if len > longest.0 {
            longest = (len, i + 1);
        }
    }
    if longest.0 > filters.max_line_chars {
        return Some(format!(
            "line {} has {} characters (> {})",
            longest.1, longest.0, filters.max_line_chars
        ));
    }
    let avg = text.chars().count() / lines.max(1);
    (text.len() > 1024 && avg > filters.max_avg_line_chars).then(|| {
        format!(
            "average line length {avg} characters (> {})",
            filters.max_avg_line_chars
        )
    })
}
