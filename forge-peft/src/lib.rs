#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod adapter;
mod checkpoint;
mod config;
mod error;
mod linalg;
mod loss;
mod methods;
mod model;
mod quant;
mod save;
mod target;
mod train;
mod util;

pub use adapter::{AdaptedLinear, Adapter, BaseWeight};
pub use config::PeftConfig;
pub use error::{Error, Result};
pub use linalg::SvdMode;
pub use loss::{Batch, HEAD_CHUNK, loss_and_grad, loss_and_grad_with, masked_nll_sum};
pub use methods::Method;
pub use methods::cloq::weighted_error as cloq_objective;
pub use methods::dlp_lora::{
    DLP_CONFIG, DLP_LIBRARY, DLP_PLUGIN, DlpLora, LoraLibrary, Plugin, PluginConfig, PluginReport,
    PluginTrainOptions, Selection, sentence_features, sentence_features_batch, top_p_select,
};
pub use methods::moe_lora::{
    Experts, Gating, MOE_CONFIG, MOE_ROUTER, MOE_WEIGHTS, MoeLoraConfig, MoeLoraModel,
};
pub use model::{PROJECTIONS, PeftModel, calibration_grams, module_name};
pub use quant::{QuantSpec, QuantizedWeight};
pub use save::{ADAPTER_CONFIG, MLX_LM_WEIGHTS, PEFT_WEIGHTS, PlainLora};
pub use target::TargetRule;
pub use train::adam8bit::{AdamW8bit, BLOCK as ADAM8BIT_BLOCK, Quantized8, dynamic_map};
pub use train::config::{AdapterFile, DataConfig, DataFile, RunConfig, RunFile};
pub use train::data::{Example, PromptStyle, collate, pack, read_records, tokenize};
pub use train::optim::{AdamW, Schedule, learning_rate};
pub use train::trainable::{LossGrad, Trainable, loss_and_grad_aux};
pub use train::trainer::{
    ComputeDtype, OptimizerKind, StepMetrics, TrainOptions, TrainReport, Trainer,
    latest_checkpoint, peak_rss,
};
