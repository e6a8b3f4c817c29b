//! Dataset records and formats: the one home for the formats Forge trains on.
//!
//! [`Record`] is the shared type: forge-peft reads datasets through
//! [`read_records`], which accepts the native `forge` JSONL and every other
//! format written here (Alpaca, ShareGPT, mlx-lm `text`, `prompt`/`completion`,
//! `messages`).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Alpaca, one JSON array per split (`train.json`).
    AlpacaJson,
    /// Alpaca, JSON lines: `{"instruction","input","output"}`.
    Alpaca,
    /// ShareGPT: `{"conversations":[{"from":"human","value":…},{"from":"gpt",…}]}`.
    Sharegpt,
    /// mlx-lm text: `{"text"}`.
    Text,
    /// mlx-lm completions: `{"prompt","completion"}`.
    Completions,
    /// mlx-lm chat: `{"messages":[{"role","content"}]}`.
    Messages,
    /// Native: every field of [`Record`].
    Forge,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 7] = [
        Format::AlpacaJson,
        Format::Alpaca,
        Format::Sharegpt,
        Format::Text,
        Format::Completions,
        Format::Messages,
        Format::Forge,
    ];

    /// The CLI name (`alpaca-json`, `alpaca`, `sharegpt`, `text`, `completions`, `messages`, `forge`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::AlpacaJson => "alpaca-json",
            Format::Alpaca => "alpaca",
            Format::Sharegpt => "sharegpt",
            Format::Text => "text",
            Format::Completions => "completions",
            Format::Messages => "messages",
            Format::Forge => "forge",
        }
    }

    /// The file of a split in this format (`train.jsonl`, `train.json`).
    pub fn file_name(self, split: Split) -> String {
        let ext = if self == Format::AlpacaJson {
            "json"
        } else {
            "jsonl"
        };
        format!("{}.{ext}", split.as_str())
    }

    /// One record in this format.
    pub fn encode(self, r: &Record) -> Value {
        match self {
            Format::AlpacaJson | Format::Alpaca => {
                let mut v =
                    json!({"instruction": r.instruction, "input": r.input, "output": r.output});
                if let Some(s) = &r.system {
                    v["system"] = json!(s);
                }
                v
            }
            Format::Sharegpt => {
                let conv: Vec<Value> = r
                    .messages()
                    .into_iter()
                    .map(|m| {
                        let from = match m.role.as_str() {
                            "user" => "human",
                            "assistant" => "gpt",
                            other => other,
                        };
                        json!({"from": from, "value": m.content})
                    })
                    .collect();
                json!({ "conversations": conv })
            }
            Format::Text => json!({ "text": r.text() }),
            Format::Completions => json!({"prompt": r.prompt(), "completion": r.output}),
            Format::Messages => json!({ "messages": r.messages() }),
            Format::Forge => serde_json::to_value(r).unwrap_or(Value::Null),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .or(match s {
                "jsonl" | "alpaca-jsonl" => Some(Format::Alpaca),
                "chat" => Some(Format::Messages),
                "prompt-completion" => Some(Format::Completions),
                _ => None,
            })
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown format {s:?} (expected one of alpaca-json, alpaca, sharegpt, text, completions, messages, forge)"
                ))
            })
    }
}

/// A dataset task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Signature (+ doc) → body.
    Completion,
    /// Fill-in-the-middle with sentinel tokens.
    Fim,
    /// Code → its doc comment/docstring.
    Explain,
    /// Doc → code.
    DocToCode,
    /// RAFT: question + oracle/distractor documents → chain-of-thought answer.
    Raft,
}

impl Task {
    /// Every task.
    pub const ALL: [Task; 5] = [
        Task::Completion,
        Task::Fim,
        Task::Explain,
        Task::DocToCode,
        Task::Raft,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Completion => "completion",
            Task::Fim => "fim",
            Task::Explain => "explain",
            Task::DocToCode => "doc_to_code",
            Task::Raft => "raft",
        }
    }
}

impl FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().replace('-', "_");
        Task::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown task {s:?} (expected completion, fim, explain, doc_to_code, raft)"
                ))
            })
    }
}

/// Which tasks to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSet(pub Vec<Task>);

impl Default for TaskSet {
    fn default() -> Self {
        Self::all()
    }
}

impl TaskSet {
    /// Every task.
    pub fn all() -> Self {
        Self(Task::ALL.to_vec())
    }

    /// Whether `t` is in the set.
    pub fn contains(&self, t: Task) -> bool {
        self.0.contains(&t)
    }
}

impl FromStr for TaskSet {
    type Err = Error;
    /// `completion,fim,raft` or `all`.
    fn from_str(s: &str) -> Result<Self> {
        if s.trim() == "all" {
            return Ok(Self::all());
        }
        let mut v: Vec<Task> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(Task::from_str)
            .collect::<Result<_>>()?;
        v.sort();
        v.dedup();
        Ok(Self(v))
    }
}

/// Train, validation or test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training.
    Train,
    /// Validation (`valid`, mlx-lm's name).
    Valid,
    /// Test.
    Test,
}

impl Split {
    /// Every split.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// `train`, `valid`, `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Where a record came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSource {
    /// Repo-relative path.
    pub path: String,
    /// Symbol of the unit.
    pub symbol: String,
    /// Language name.
    pub language: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line.
    pub end_line: usize,
}

/// One training example, independent of the output format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Stable id.
    pub id: String,
    /// The task that produced it.
    pub task: Task,
    /// Optional system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The instruction (for raw records such as FIM: the whole prompt).
    pub instruction: String,
    /// Extra input (code, documents); may be empty.
    #[serde(default)]
    pub input: String,
    /// The expected output.
    pub output: String,
    /// The prompt is raw text, not an instruction (FIM): no template around it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
    /// Where it came from.
    #[serde(default)]
    pub source: RecordSource,
    /// Task-specific facts (RAFT: whether the oracle is in the context, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl Record {
    /// The user turn: instruction, then the input after a blank line.
    pub fn prompt(&self) -> String {
        if self.input.is_empty() {
            self.instruction.clone()
        } else {
            format!("{}\n\n{}", self.instruction, self.input)
        }
    }

    /// The record as one text (mlx-lm `text` format): raw records are prompt +
    /// output; instructions use the Alpaca template.
    pub fn text(&self) -> String {
        if self.raw {
            return format!("{}{}", self.instruction, self.output);
        }
        let mut s = String::new();
        if let Some(sys) = &self.system {
            s.push_str(sys);
            s.push_str("\n\n");
        }
        s.push_str("### Instruction:\n");
        s.push_str(&self.instruction);
        if !self.input.is_empty() {
            s.push_str("\n\n### Input:\n");
            s.push_str(&self.input);
        }
        s.push_str("\n\n### Response:\n");
        s.push_str(&self.output);
        s
    }

    /// System (if any), user and assistant messages.
    pub fn messages(&self) -> Vec<Message> {
        let mut m = Vec::with_capacity(3);
        if let Some(s) = &self.system {
            m.push(Message {
                role: "system".into(),
                content: s.clone(),
            });
        }
        m.push(Message {
            role: "user".into(),
            content: self.prompt(),
        });
        m.push(Message {
            role: "assistant".into(),
            content: self.output.clone(),
        });
        m
    }

    /// Reads a record from one JSON value in any format written by [`Format::encode`].
    pub fn decode(v: &Value) -> Option<Record> {
        if v.get("task").is_some() && v.get("output").is_some() {
            return serde_json::from_value(v.clone()).ok();
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let base = |instruction: String, output: String| Record {
            id: crate::hash::hex(crate::hash::fnv1a_fields(&[
                instruction.as_bytes(),
                output.as_bytes(),
            ])),
            task: Task::Completion,
            system: None,
            instruction,
            input: String::new(),
            output,
            raw: false,
            source: RecordSource::default(),
            meta: BTreeMap::new(),
        };
        if let (Some(i), Some(o)) = (s("instruction"), s("output")) {
            let mut r = base(i, o);
            r.input = s("input").unwrap_or_default();
            r.system = s("system");
            return Some(r);
        }
        if let (Some(p), Some(c)) = (s("prompt"), s("completion")) {
            return Some(base(p, c));
        }
        if let Some(t) = s("text") {
            let mut r = base(String::new(), t);
            r.raw = true;
            return Some(r);
        }
        let (list, role_key, text_key) = if let Some(m) = v.get("messages") {
            (m, "role", "content")
        } else {
            (v.get("conversations")?, "from", "value")
        };
        let mut system = None;
        let (mut user, mut assistant) = (None, None);
        for m in list.as_array()? {
            let role = m.get(role_key).and_then(Value::as_str).unwrap_or("");
            let text = m
                .get(text_key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match role {
                "system" => system = Some(text),
                "user" | "human" => user = Some(text),
                "assistant" | "gpt" => assistant = Some(text),
                _ => {}
            }
        }
        let mut r = base(user?, assistant?);
        r.system = system;
        Some(r)
    }
}

/// Writes records in `format` to `path` atomically.
pub fn write_records(path: &Path, format: Format, records: &[Record]) -> Result<()> {
    let json_err = |e: serde_json::Error| Error::Json {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    };
    if format == Format::AlpacaJson {
        let all: Vec<Value> = records.iter().map(|r| format.encode(r)).collect();
        let s = serde_json::to_string_pretty(&all).map_err(json_err)?;
        return crate::fsio::write_string(path, &(s + "\n"));
    }
    crate::fsio::write_atomic(path, |w| {
        for r in records {
            serde_json::to_writer(&mut *w, &format.encode(r))?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Reads records from a JSONL file (any format) or a JSON array (Alpaca JSON).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let bad = |line: usize, message: String| Error::Json {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut first = String::new();
    reader
        .read_line(&mut first)
        .map_err(|e| Error::io(path, e))?;
    if first.trim_start().starts_with('[') {
        let mut rest = first;
        std::io::Read::read_to_string(&mut reader, &mut rest).map_err(|e| Error::io(path, e))?;
        let v: Vec<Value> =
            serde_json::from_str(&rest).map_err(|e| bad(e.line(), e.to_string()))?;
        return v
            .iter()
            .enumerate()
            .map(|(i, x)| {
                Record::decode(x).ok_or_else(|| bad(0, format!("element {i}: not a record")))
            })
            .collect();
    }
    let mut out = Vec::new();
    let lines = std::iter::once(Ok(first)).chain(reader.lines());
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(i + 1, e.to_string()))?;
        out.push(
            Record::decode(&v)
                .ok_or_else(|| bad(i + 1, "not a record in a known format".into()))?,
        );
    }
    Ok(out)
}

/// Fill-in-the-middle sentinels (defaults: Qwen2.5-Coder / StarCoder2 style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FimConfig {
    /// Before the prefix.
    pub prefix: String,
    /// Before the suffix.
    pub suffix: String,
    /// Before the middle (the model writes the middle after it).
    pub middle: String,
}

impl Default for FimConfig {
    fn default() -> Self {
        Self {
            prefix: "<|fim_prefix|>".into(),
            suffix: "<|fim_suffix|>".into(),
            middle: "<|fim_middle|>".into(),
        }
    }
}

/// RAFT parameters (Zhang et al., arXiv:2403.10131).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftConfig {
    /// Probability that the oracle document is in the context (P).
    pub p_oracle: f64,
    /// Number of BM25 hard-negative distractors (k).
    pub distractors: usize,
    /// Questions per unit (at most the number of applicable templates).
    pub questions_per_unit: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            p_oracle: 0.8,
            distractors: 4,
            questions_per_unit: 1,
        }
    }
}

/// How datasets are built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetConfig {
    /// Output format.
    pub format: Format,
    /// Tasks to build.
    pub tasks: TaskSet,
    /// Seed of every random choice.
    pub seed: u64,
    /// Fraction of files in the validation split.
    pub valid_fraction: f64,
    /// Fraction of files in the test split.
    pub test_fraction: f64,
    /// Drop units whose whitespace-normalised text was seen before.
    pub dedup_exact: bool,
    /// Drop units that are MinHash near-duplicates of an earlier unit.
    pub dedup_near: bool,
    /// Jaccard threshold for near-duplicates.
    pub near_threshold: f64,
    /// Records with fewer tokens are dropped.
    pub min_tokens: usize,
    /// Records with more tokens are dropped.
    pub max_tokens: usize,
    /// FIM sentinels.
    pub fim: FimConfig,
    /// RAFT parameters.
    pub raft: RaftConfig,
    /// System prompt of every record.
    pub system: Option<String>,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            format: Format::Messages,
            tasks: TaskSet::all(),
            seed: 42,
            valid_fraction: 0.1,
            test_fraction: 0.1,
            dedup_exact: true,
            dedup_near: true,
            near_threshold: 0.85,
            min_tokens: 8,
            max_tokens: 4096,
            fim: FimConfig::default(),
            raft: RaftConfig::default(),
            system: None,
        }
    }
}

impl DatasetConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let frac = |x: f64| (0.0..1.0).contains(&x);
        if !frac(self.valid_fraction)
            || !frac(self.test_fraction)
            || self.valid_fraction + self.test_fraction >= 1.0
        {
            return Err(Error::Config(format!(
                "valid_fraction {} and test_fraction {} must be in [0, 1) with a sum below 1",
                self.valid_fraction, self.test_fraction
            )));
        }
        if !(0.0..=1.0).contains(&self.raft.p_oracle) {
            return Err(Error::Config(format!(
                "raft.p_oracle {} must be in [0, 1]",
                self.raft.p_oracle
            )));
        }
        if !(0.0..=1.0).contains(&self.near_threshold) {
            return Err(Error::Config(format!(
                "near_threshold {} must be in [0, 1]",
                self.near_threshold
            )));
        }
        if self.min_tokens > self.max_tokens {
            return Err(Error::Config(format!(
                "min_tokens {} > max_tokens {}",
                self.min_tokens, self.max_tokens
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            id: "1".into(),
            task: Task::Explain,
            system: Some("sys".into()),
            instruction: "Explain".into(),
            input: "code".into(),
            output: "doc".into(),
            raw: false,
            source: RecordSource::default(),
            meta: BTreeMap::new(),
        }
    }

    #[test]
    fn every_format_decodes_back() {
        let r = rec();
        for f in Format::ALL {
            let v = f.encode(&r);
            let back = Record::decode(&v).expect("decodes");
            assert_eq!(
                back.output,
                if f == Format::Text {
                    r.text()
                } else {
                    r.output.clone()
                },
                "{f}"
            );
            if f == Format::Forge {
                assert_eq!(back, r);
            }
        }
    }

    #[test]
    fn parses_names() -> Result<()> {
        assert_eq!("sharegpt".parse::<Format>()?, Format::Sharegpt);
        assert_eq!(
            "completion,raft".parse::<TaskSet>()?.0,
            vec![Task::Completion, Task::Raft]
        );
        assert!("nope".parse::<Format>().is_err());
        Ok(())
    }
}
