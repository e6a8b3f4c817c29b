#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod bm25;
mod card;
pub mod dataset;
mod error;
mod extract;
mod fsio;
#[cfg(feature = "git")]
mod git;
mod hash;
mod language;
mod lines;
mod miner;
mod minhash;
mod progress;
mod raft;
mod rng;
mod run;
mod sizing;
mod tasks;
mod teacher;
mod unit;
mod walk;

pub use bm25::{Bm25, tokenize};
pub use card::{Bucket, Card, MineReport};
pub use dataset::{DatasetConfig, FimConfig, Format, RaftConfig, Record, Split, Task, TaskSet};
pub use error::{Error, Result};
pub use extract::{Diagnostic, FileUnits};
pub use language::{Definition, Language, Python, Registry, Rust, Scope};
pub use miner::{Mined, Miner, MinerConfig};
pub use minhash::{
    Signature as MinhashSignature, jaccard, jaccard_estimate, near_duplicates,
    signature as minhash_signature,
};
pub use progress::{NoProgress, Progress, Stage};
pub use raft::{BEGIN_QUOTE, END_QUOTE};
/// The RAFT prompt layout (instruction, documents, question), for serving.
pub mod raft_layout {
    pub use crate::raft::{INSTRUCTION, document, eligible, input};
}
pub use run::{Dataset, write_units};
pub use sizing::Budget;
pub use teacher::{Qa, Teacher, TemplateTeacher};
pub use unit::{Chunk, Part, Unit, UnitKind, UnitRow};
pub use walk::{FilterConfig, Skip, SkipReason, SkipSummary};

#[cfg(feature = "go")]
pub use language::Go;
#[cfg(feature = "javascript")]
pub use language::JavaScript;
#[cfg(feature = "typescript")]
pub use language::TypeScript;

/// Re-exported so callers can build a token [`Budget`] without naming the crate.
pub use tokenizers::Tokenizer;
