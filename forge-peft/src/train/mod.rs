//! The trainer: data, optimizer, loop, configuration.

pub(crate) mod adam8bit;
pub(crate) mod config;
pub(crate) mod data;
pub(crate) mod optim;
pub(crate) mod trainable;
pub(crate) mod trainer;
