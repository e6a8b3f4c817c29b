#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod dtype;
mod error;

pub use dtype::GgmlType;
pub use error::{Error, Result};
