//! Q5_1: 32 values, 5 bits each, a scale and a minimum.
//!
//! Block (24 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 scale |
//! | 2..4 | `m` | f16 minimum |
//! | 4..8 | `qh` | little-endian u32; bit `j` is the fifth bit of value `j` |
//! | 8..24 | `qs[16]` | byte `j`: low 4 bits of value `j` (low nibble) and of value `j + 16` (high nibble) |
//!
//! Dequantize: `x = d · q + m`, `q ∈ 0..=31`.
//!
//! Quantize (gguf-py): `d = (max − min) / 31`, `m = min`,
//! `q = min(31, trunc((x − min) · (1/d) + 0.5))`. (ggml's
//! `quantize_row_q5_1_ref` omits the `min(31, ·)`, which never binds.)

use super::{get_f16, inverse_or_zero, min_max, pack_q5, put_f16, trunc_clamp};
use crate::{BlockFormat, GgmlType};

pub(super) const M: usize = 2;
pub(super) const QH: usize = 4;
pub(super) const QS: usize = 8;

/// The Q5_1 block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q5_1;

impl BlockFormat for Q5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK_SIZE: usize = 32;
    const TYPE_SIZE: usize = 24;

    #[inline]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; 32] = src.try_into().expect("Q5_1 block takes 32 values");
        let y: &mut [u8; 24] = dst.try_into().expect("Q5_1 block is 24 bytes");
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse_or_zero(d);
        put_f16(y, 0, d);
        put_f16(y, M, min);
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = trunc_clamp((v - min) * id + 0.5, 31.0);
        }
        pack_q5(&q, (&mut y[QH..]).try_into().expect("20 bytes"));
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 24] = src.try_into().expect("Q5_1 block is 24 bytes");
        let y: &mut [f32; 32] = dst.try_into().expect("Q5_1 block takes 32 values");
        let d = get_f16(b, 0);
        let m = get_f16(b, M);
        let qh = u32::from_le_bytes([b[QH], b[QH + 1], b[QH + 2], b[QH + 3]]);
        for j in 0..16 {
            let q = b[QS + j];
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (u32::from(q & 0x0f) | h0) as f32 * d + m;
            y[j + 16] = (u32::from(q >> 4) | h1) as f32 * d + m;
        }
    }
}
