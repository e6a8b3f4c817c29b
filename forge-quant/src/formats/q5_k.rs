//! Q5_K: super-blocks of 256 values in 8 groups of 32, 5-bit quants, 6-bit
//! scales and mins (5.5 bits per value).
//!
//! Block (176 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..2 | `d` | f16 super-scale of the scales |
//! | 2..4 | `dmin` | f16 super-scale of the mins |
//! | 4..16 | `scales[12]` | 8 six-bit scales and mins, packed as in Q4_K |
//! | 16..48 | `qh[32]` | fifth bit: value `64·c + l` is bit `2c` of `qh[l]`, value `64·c + 32 + l` bit `2c + 1` |
//! | 48..176 | `qs[128]` | low 4 bits, laid out as Q4_K's quants |
//!
//! Dequantize, value `i` in group `g = i / 32`:
//! `x = (d · sc_g) · q − (dmin · m_g)`, `q ∈ 0..=31`.
//!
//! Quantize (llama.cpp `quantize_row_q5_K_ref`): as Q4_K with `nmax = 31` and
//! the trial grid `make_qkx2_quants(32, 31, …, −0.5, 0.1, 15)`.

use super::get_f16;
use super::kquants::{QK_K, dequant_chunk, quantize_qk_asym, scales_mins_k4};
use crate::{BlockFormat, GgmlType};

pub(super) const DMIN: usize = 2;
pub(super) const SCALES: usize = 4;
pub(super) const QH: usize = 16;
pub(super) const QS: usize = 48;

/// The Q5_K block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q5_K;

impl BlockFormat for Q5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 176;

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; QK_K] = src.try_into().expect("Q5_K block takes 256 values");
        let y: &mut [u8; 176] = dst.try_into().expect("Q5_K block is 176 bytes");
        let (d, dmin, scales, levels) = quantize_qk_asym(x, 31, -0.5, 15);
        y[..2].copy_from_slice(&d.to_le_bytes());
        y[DMIN..DMIN + 2].copy_from_slice(&dmin.to_le_bytes());
        y[SCALES..SCALES + 12].copy_from_slice(&scales);
        let mut qh = [0u8; 32];
        for c in 0..4 {
            let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for j in 0..32 {
                let mut l1 = levels[64 * c + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = levels[64 * c + 32 + j];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                y[QS + 32 * c + j] = l1 | (l2 << 4);
            }
        }
        y[QH..QH + 32].copy_from_slice(&qh);
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 176] = src.try_into().expect("Q5_K block is 176 bytes");
        let y: &mut [f32; QK_K] = dst.try_into().expect("Q5_K block takes 256 values");
        let d = get_f16(b, 0);
        let min = get_f16(b, DMIN);
        let s: &[u8; 12] = b[SCALES..SCALES + 12].try_into().expect("12 bytes");
        let (dl, ml) = scales_mins_k4(d, min, s);
        // the fifth bits of chunk c are bits 2c and 2c + 1 of qh; shifting a
        // copy right by two per chunk keeps every shift a constant
        let mut qh: [u8; 32] = b[QH..QH + 32].try_into().expect("32 bytes");
        for c in 0..4 {
            let (d1, m1) = (dl[2 * c], ml[2 * c]);
            let (d2, m2) = (dl[2 * c + 1], ml[2 * c + 1]);
            let q: &[u8; 32] = b[QS + 32 * c..QS + 32 * c + 32]
                .try_into()
                .expect("32 bytes");
            let out: &mut [f32; 64] = (&mut y[64 * c..64 * c + 64]).try_into().expect("64 values");
            dequant_chunk::<true>(q, &qh, (d1, m1, d2, m2), out);
            for h in &mut qh {
                *h >>= 2;
            }
        }
    }
}
