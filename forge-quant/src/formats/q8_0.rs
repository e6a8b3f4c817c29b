//! Q8_0: 32 values, 8 bits each, one scale.
//!
//! Block (34 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale |
//! | 2..34 | `qs[32]` | i8 quants, value `j` in byte `2 + j` |
//!
//! Dequantize: `x = q · d`, `q ∈ −128..=127` (the quantizer emits −127..=127).
//!
//! Quantize (gguf-py / `quantize_row_q8_0_ref`): `d = max|x| / 127`,
//! `q = round(x · (1/d))` with halves rounded away from zero (`roundf`).

use super::{get_f16, inverse_or_zero, put_f16};
use crate::{BlockFormat, GgmlType};

pub(super) const QS: usize = 2;

/// The Q8_0 block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q8_0;

impl BlockFormat for Q8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 34;

    #[inline]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; 32] = src.try_into().expect("Q8_0 block takes 32 values");
        let y: &mut [u8; 34] = dst.try_into().expect("Q8_0 block is 34 bytes");
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse_or_zero(d);
        put_f16(y, 0, d);
        for j in 0..32 {
            y[QS + j] = (x[j] * id).round() as i8 as u8;
        }
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 34] = src.try_into().expect("Q8_0 block is 34 bytes");
        let y: &mut [f32; 32] = dst.try_into().expect("Q8_0 block takes 32 values");
        let d = get_f16(b, 0);
        for j in 0..32 {
            y[j] = f32::from(b[QS + j] as i8) * d;
        }
    }
}
