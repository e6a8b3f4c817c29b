//! Q4_K: super-blocks of 256 values in 8 groups of 32, 4-bit quants, 6-bit
//! scales and mins (4.5 bits per value).
//!
//! Block (144 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 super-scale of the scales |
//! | 2..4 | `dmin` | f16 super-scale of the mins |
//! | 4..16 | `scales[12]` | 8 six-bit scales and 8 six-bit mins: for `g < 4` scale `s[g] & 63`, min `s[g+4] & 63`; for `g ≥ 4` scale `(s[g+4] & 0xF) | (s[g−4] >> 6) << 4`, min `(s[g+4] >> 4) | (s[g] >> 6) << 4` |
//! | 16..144 | `qs[128]` | value `64·c + l` is the low nibble of `qs[32·c + l]`, value `64·c + 32 + l` its high nibble |
//!
//! Dequantize, value `i` in group `g = i / 32`:
//! `x = (d · sc_g) · q − (dmin · m_g)`, `q ∈ 0..=15`.
//!
//! Quantize (llama.cpp `quantize_row_q4_K_ref`): per group an asymmetric fit
//! with weights `sqrt(mean x²) + |x|` (`make_qkx2_quants(32, 15, …, −1, 0.1, 20)`),
//! scales and mins rounded to 6 bits under `d = max_scale / 63`,
//! `dmin = max_min / 63`, then `q = clamp(nearest((x + dmin·m_g) / (d·sc_g)), 0, 15)`.

use super::get_f16;
use super::kquants::{QK_K, dequant_chunk, quantize_qk_asym, scales_mins_k4};
use crate::{BlockFormat, GgmlType};

pub(super) const DMIN: usize = 2;
pub(super) const SCALES: usize = 4;
pub(super) const QS: usize = 16;

/// The Q4_K block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q4_K;

impl BlockFormat for Q4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 144;

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; QK_K] = src.try_into().expect("Q4_K block takes 256 values");
        let y: &mut [u8; 144] = dst.try_into().expect("Q4_K block is 144 bytes");
        let (d, dmin, scales, levels) = quantize_qk_asym(x, 15, -1.0, 20);
        y[..2].copy_from_slice(&d.to_le_bytes());
        y[DMIN..DMIN + 2].copy_from_slice(&dmin.to_le_bytes());
        y[SCALES..SCALES + 12].copy_from_slice(&scales);
        for c in 0..4 {
            for l in 0..32 {
                y[QS + 32 * c + l] = levels[64 * c + l] | (levels[64 * c + 32 + l] << 4);
            }
        }
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 144] = src.try_into().expect("Q4_K block is 144 bytes");
        let y: &mut [f32; QK_K] = dst.try_into().expect("Q4_K block takes 256 values");
        let d = get_f16(b, 0);
        let min = get_f16(b, DMIN);
        let s: &[u8; 12] = b[SCALES..SCALES + 12].try_into().expect("12 bytes");
        let (dl, ml) = scales_mins_k4(d, min, s);
        for c in 0..4 {
            let (d1, m1) = (dl[2 * c], ml[2 * c]);
            let (d2, m2) = (dl[2 * c + 1], ml[2 * c + 1]);
            let q: &[u8; 32] = b[QS + 32 * c..QS + 32 * c + 32]
                .try_into()
                .expect("32 bytes");
            let out: &mut [f32; 64] = (&mut y[64 * c..64 * c + 64]).try_into().expect("64 values");
            dequant_chunk::<false>(q, q, (d1, m1, d2, m2), out);
        }
    }
}
