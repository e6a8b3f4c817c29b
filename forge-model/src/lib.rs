#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod cache;
mod config;
mod cpu;
mod decoder;
mod error;
mod factory;
mod generate;
mod gguf;
mod gguf_tokenizer;
mod loader;
mod rope;
mod spm;
mod tokenizer;
mod util;
mod weights;

pub use cache::KvCache;
pub use config::{Architecture, HfConfig, ModelConfig, RopeScaling, TokenIds};
pub use cpu::{CpuCache, CpuModel, KvType};
pub use decoder::{Attention, Decoder, DecoderLayer, Mlp, Model};
pub use error::{Error, Result};
pub use factory::{TINY_TOKENIZER_VOCAB, random_model, tiny_config, write_hf_dir};
pub use generate::{
    CausalLm, DecodeSession, FinishReason, GenerateOptions, Generation, Generator, Sampler,
    TextStream, TokenProb, TokenStream, generate_ids,
};
pub use gguf::{GgufSource, config_from_gguf};
pub use gguf_tokenizer::PRE_TOKENIZER_NAMES;
pub use loader::{
    DEFAULT_MODEL_FILE, LoadOptions, LoadReport, LoadedModel, ModelSource, default_model_path,
    load, load_cpu, load_weights,
};
pub use rope::Rope;
pub use tokenizer::{CHATML_TEMPLATE, ChatMessage, Tokenizer, render_chat_template};
pub use weights::{NamedTensor, SafetensorsSource, WeightSource};
