//! Q4_0: 32 values, 4 bits each, one scale.
//!
//! Block (18 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale |
//! | 2..18 | `qs[16]` | byte `j` holds value `j` (low nibble) and value `j + 16` (high nibble) |
//!
//! Dequantize: `x = d · (q − 8)`, `q ∈ 0..=15`.
//!
//! Quantize (gguf-py / `quantize_row_q4_0_ref`): `max` is the value of largest
//! magnitude (with its sign), `d = max / −8`, `q = min(15, trunc(x / d + 8.5))`;
//! the division is a multiplication by the f32 inverse `1/d`.

use super::{get_f16, inverse_or_zero, put_f16, signed_absmax, trunc_clamp};
use crate::{BlockFormat, GgmlType};

pub(super) const QS: usize = 2;

/// The Q4_0 block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q4_0;

impl BlockFormat for Q4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 18;

    #[inline]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; 32] = src.try_into().expect("Q4_0 block takes 32 values");
        let y: &mut [u8; 18] = dst.try_into().expect("Q4_0 block is 18 bytes");
        let d = signed_absmax(x) / -8.0;
        let id = inverse_or_zero(d);
        put_f16(y, 0, d);
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = trunc_clamp(v * id + 8.5, 15.0);
        }
        let (lo, hi) = q.split_at(16);
        for ((o, &a), &b) in y[QS..].iter_mut().zip(lo).zip(hi) {
            *o = a | (b << 4);
        }
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 18] = src.try_into().expect("Q4_0 block is 18 bytes");
        let y: &mut [f32; 32] = dst.try_into().expect("Q4_0 block takes 32 values");
        let d = get_f16(b, 0);
        for j in 0..16 {
            let q = b[QS + j];
            y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}
