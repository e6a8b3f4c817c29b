//! Q5_0: 32 values, 5 bits each, one scale.
//!
//! Block (22 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale |
//! | 2..6 | `qh` | little-endian u32; bit `j` is the fifth bit of value `j` |
//! | 6..22 | `qs[16]` | byte `j`: low 4 bits of value `j` (low nibble) and of value `j + 16` (high nibble) |
//!
//! Dequantize: `x = d · (q − 16)`, `q ∈ 0..=31`.
//!
//! Quantize (gguf-py / `quantize_row_q5_0_ref`): `max` is the value of largest
//! magnitude, `d = max / −16`, `q = min(31, trunc(x · (1/d) + 16.5))`.

use super::{get_f16, inverse_or_zero, pack_q5, put_f16, signed_absmax, trunc_clamp};
use crate::{BlockFormat, GgmlType};

pub(super) const QH: usize = 2;
pub(super) const QS: usize = 6;

/// The Q5_0 block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q5_0;

impl BlockFormat for Q5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 22;

    #[inline]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; 32] = src.try_into().expect("Q5_0 block takes 32 values");
        let y: &mut [u8; 22] = dst.try_into().expect("Q5_0 block is 22 bytes");
        let d = signed_absmax(x) / -16.0;
        let id = inverse_or_zero(d);
        put_f16(y, 0, d);
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = trunc_clamp(v * id + 16.5, 31.0);
        }
        pack_q5(&q, (&mut y[QH..]).try_into().expect("20 bytes"));
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 22] = src.try_into().expect("Q5_0 block is 22 bytes");
        let y: &mut [f32; 32] = dst.try_into().expect("Q5_0 block takes 32 values");
        let d = get_f16(b, 0);
        let qh = u32::from_le_bytes([b[QH], b[QH + 1], b[QH + 2], b[QH + 3]]);
        for j in 0..16 {
            let q = b[QS + j];
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((u32::from(q & 0x0f) | h0) as i32 - 16) as f32 * d;
            y[j + 16] = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}
