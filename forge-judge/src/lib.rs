#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod codebleu;
mod error;
mod exec;
mod gate;
mod passk;
#[cfg(feature = "model")]
mod perplexity;
mod reconstruct;
mod report;
mod sandbox;

pub use codebleu::{CodeBleu, CodeBleuScore, Lang, Weights};
pub use error::{Error, Result};
pub use exec::{
    Evaluation, Problem, Runner, Sample, SampleResult, Step, Summary, TaskCount, load_problems,
    load_samples, summarize,
};
pub use gate::{Check, Gate, Rule, Verdict, higher_is_better};
pub use passk::pass_at_k;
#[cfg(feature = "model")]
pub use perplexity::{
    EvalModel, Logits, Perplexity, PerplexityOptions, load_for_eval, perplexity,
    perplexity_of_examples,
};
pub use reconstruct::{
    HeldOutUnit, Reconstruction, UnitScore, cut_body, edit_similarity, levenshtein, normalize_body,
    score_units,
};
#[cfg(feature = "model")]
pub use reconstruct::{ReconstructOptions, generate_bodies};
#[cfg(feature = "miner")]
pub use reconstruct::{held_out_from_mined, held_out_since};
pub use report::{EvalResults, MetricRow, Report, TaskRow, TaskScore};
pub use sandbox::{
    FsIsolation, Isolation, NetworkIsolation, Outcome, ProcessIsolation, ProcessLimit, RunOutput,
    Sandbox, TimeLimit, isolation,
};
