//! Q4_1: 32 values, 4 bits each, a scale and a minimum.
//!
//! Block (20 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale |
//! | 2..4 | `m` | f16 minimum |
//! | 4..20 | `qs[16]` | byte `j` holds value `j` (low nibble) and value `j + 16` (high nibble) |
//!
//! Dequantize: `x = d · q + m` (f32 multiply, then add), `q ∈ 0..=15`.
//!
//! Quantize (gguf-py / `quantize_row_q4_1_ref`): `d = (max − min) / 15`,
//! `m = min`, `q = min(15, trunc((x − min) · (1/d) + 0.5))`.

use super::{get_f16, inverse_or_zero, min_max, put_f16, trunc_clamp};
use crate::{BlockFormat, GgmlType};

pub(super) const M: usize = 2;
pub(super) const QS: usize = 4;

/// The Q4_1 block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q4_1;

impl BlockFormat for Q4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 20;

    #[inline]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; 32] = src.try_into().expect("Q4_1 block takes 32 values");
        let y: &mut [u8; 20] = dst.try_into().expect("Q4_1 block is 20 bytes");
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse_or_zero(d);
        put_f16(y, 0, d);
        put_f16(y, M, min);
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = trunc_clamp((v - min) * id + 0.5, 15.0);
        }
        let (lo, hi) = q.split_at(16);
        for ((o, &a), &b) in y[QS..].iter_mut().zip(lo).zip(hi) {
            *o = a | (b << 4);
        }
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 20] = src.try_into().expect("Q4_1 block is 20 bytes");
        let y: &mut [f32; 32] = dst.try_into().expect("Q4_1 block takes 32 values");
        let d = get_f16(b, 0);
        let m = get_f16(b, M);
        for j in 0..16 {
            let q = b[QS + j];
            y[j] = (q & 0x0f) as f32 * d + m;
            y[j + 16] = (q >> 4) as f32 * d + m;
        }
    }
}
