#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod codebleu;
mod error;
mod exec;
mod passk;
mod sandbox;

pub use codebleu::{CodeBleu, CodeBleuScore, Lang, Weights};
pub use error::{Error, Result};
pub use exec::{
    Evaluation, Problem, Runner, Sample, SampleResult, Step, Summary, TaskCount, load_problems,
    load_samples, summarize,
};
pub use passk::pass_at_k;
pub use sandbox::{
    FsIsolation, Isolation, NetworkIsolation, Outcome, ProcessIsolation, ProcessLimit, RunOutput,
    Sandbox, TimeLimit, isolation,
};
