#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod codebleu;
mod error;
mod passk;

pub use codebleu::{CodeBleu, CodeBleuScore, Lang, Weights};
pub use error::{Error, Result};
pub use passk::pass_at_k;
