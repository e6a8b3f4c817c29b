//! Prompt assembly with retrieved units, in the layout RAFT training used
//! (Zhang et al. 2024, *RAFT*, arXiv:2403.10131; forge-miner's `raft.rs`):
//! the user turn is the RAFT instruction, a blank line, the documents
//! (`<DOCUMENT path="…" lines="a-b">…</DOCUMENT>`, a blank line between each)
//! and `Question: …`. Raw completions put the same documents before the
//! prompt; fill-in-the-middle puts them before the FIM sentinels
//! (`<|fim_prefix|>prefix<|fim_suffix|>suffix<|fim_middle|>`, forge-miner's
//! `FimConfig` defaults, which FIM training used).

use forge_miner::FimConfig;
use forge_miner::raft_layout::{INSTRUCTION, document, input};
use serde::Serialize;

use crate::index::Hit;

/// Where a retrieved document came from, returned with every response that
/// used retrieval (the `citations` field).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Citation {
    /// Repo-relative path.
    pub path: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (inclusive).
    pub end_line: usize,
    /// Qualified symbol.
    pub symbol: String,
    /// Unit kind (`function`, `method`, `struct`, …).
    pub kind: String,
    /// forge-miner's unit id.
    pub id: String,
    /// BM25 score.
    pub score: f64,
}

impl Citation {
    /// The citation of a hit.
    pub fn of(hit: &Hit) -> Self {
        let u = &hit.unit;
        Self {
            path: u.path.clone(),
            start_line: u.start_line,
            end_line: u.end_line,
            symbol: u.symbol.clone(),
            kind: u.kind.as_str().to_string(),
            id: u.id.clone(),
            score: hit.score,
        }
    }
}

/// Keeps the best hits whose documents fit in `max_chars` together.
pub(crate) fn fit(hits: Vec<Hit>, max_chars: usize) -> Vec<Hit> {
    let mut used = 0;
    let mut out = Vec::new();
    for h in hits {
        let n = document(&h.unit).chars().count() + 2;
        if used + n > max_chars {
            continue;
        }
        used += n;
        out.push(h);
    }
    out
}

/// The RAFT user turn for `question` with the retrieved documents.
pub fn raft_user_turn(hits: &[Hit], question: &str) -> String {
    let docs: Vec<&forge_miner::Unit> = hits.iter().map(|h| &h.unit).collect();
    format!("{INSTRUCTION}\n\n{}", input(&docs, question))
}

/// A raw completion prompt with the documents before it.
pub fn documents_then(hits: &[Hit], prompt: &str) -> String {
    if hits.is_empty() {
        return prompt.to_string();
    }
    let docs: Vec<String> = hits.iter().map(|h| document(&h.unit)).collect();
    format!("{}\n\n{prompt}", docs.join("\n\n"))
}

/// The fill-in-the-middle prompt: documents, then the sentinels.
pub fn fim_prompt(hits: &[Hit], prefix: &str, suffix: &str, fim: &FimConfig) -> String {
    let body = format!("{}{prefix}{}{suffix}{}", fim.prefix, fim.suffix, fim.middle);
    documents_then(hits, &body)
}

/// The retrieval query for fill-in-the-middle: the last `lines` lines of the
/// prefix and the first `lines / 4` of the suffix (the code around the
/// cursor).
pub fn fim_query(prefix: &str, suffix: &str, lines: usize) -> String {
    let before: Vec<&str> = prefix.lines().rev().take(lines).collect();
    let after: Vec<&str> = suffix.lines().take(lines.div_ceil(4)).collect();
    let mut q: Vec<&str> = before.into_iter().rev().collect();
    q.extend(after);
    q.join("\n")
}

/// Checks a client-supplied repo-relative path: relative, `/`-separated
/// components that are not empty, `.` or `..`, no NUL or backslash, at most
/// 4096 bytes. Returns the normalised path or a message for a 400.
pub fn check_repo_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("`path` is empty".into());
    }
    if path.len() > 4096 {
        return Err(format!("`path` is {} bytes, at most 4096", path.len()));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(format!(
            "`path` {path:?} contains a NUL or backslash; use `/` separators"
        ));
    }
    if path.starts_with('/') || path.as_bytes().get(1) == Some(&b':') {
        return Err(format!(
            "`path` {path:?} is absolute; give it relative to the repository root"
        ));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(format!(
            "`path` {path:?} leaves the repository (`..` is not allowed)"
        ));
    }
    if parts.is_empty() {
        return Err(format!("`path` {path:?} names no file"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert_eq!(check_repo_path("src/./lib.rs").as_deref(), Ok("src/lib.rs"));
        for bad in [
            "",
            "../etc/passwd",
            "src/../../x",
            "/etc/passwd",
            "C:/x",
            "a\\..\\b",
            "a\0b",
            ".",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fim_query_takes_the_cursor_neighbourhood() {
        let prefix = (1..=50)
            .map(|i| format!("p{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let suffix = (1..=50)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let q = fim_query(&prefix, &suffix, 8);
        assert!(q.starts_with("p43\n") && q.ends_with("s2"), "{q}");
    }
}
