#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod block;
mod dispatch;
mod dtype;
mod error;
mod float;
mod formats;
mod vecdot;

pub use block::BlockFormat;
pub use dispatch::{
    SUPPORTED_TYPES, dequantize, dequantize_into, dequantize_row_into, is_supported, quantize,
    quantize_into, quantize_row_into,
};
pub use dtype::GgmlType;
pub use error::{Error, Result};
pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
pub use formats::{BF16, F16, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
pub use vecdot::{ActivationFormat, Activations, matmul, round_to_f16};
