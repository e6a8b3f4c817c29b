//! Q3_K: super-blocks of 256 values in 16 groups of 16, 3-bit quants,
//! signed 6-bit scales (3.4375 bits per value).
//!
//! Block (110 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..32 | `hmask[32]` | high bit of value `i` is bit `i / 32` of `hmask[i % 32]` |
//! | 32..96 | `qs[64]` | low 2 bits: value `128·h + 32·s + l` is bits `2s..2s+2` of `qs[32·h + l]` |
//! | 96..108 | `scales[12]` | 16 six-bit scales: low 4 bits of scale `g` in the low (g < 8) or high (g ≥ 8) nibble of byte `g % 8`; high 2 bits at bits `2·(g / 4)` of byte `8 + g % 4` |
//! | 108..110 | `d` | f16 super-scale |
//!
//! Dequantize, value `i` in group `g = i / 16`:
//! `x = (d · (sc_g − 32)) · (q_lo − (high bit ? 0 : 4))`, so `q ∈ −4..=3`.
//!
//! Quantize (llama.cpp `quantize_row_q3_K_ref`): per group a symmetric fit with
//! weights `x²` refined by coordinate descent (`make_q3_quants(16, 4, …, true)`),
//! scales rounded to 6 bits under `d = max_scale / −32`, then
//! `q = clamp(nearest(x / (d·(sc_g − 32))), −4, 3)`.

use super::kquants::{QK_K, make_q3_quants, nearest_int};
use super::{get_f16, put_f16};
use crate::float::f16_to_f32;
use crate::{BlockFormat, GgmlType};

pub(super) const QS: usize = 32;
pub(super) const SCALES: usize = 96;
pub(super) const D: usize = 108;

/// The 16 unpacked 6-bit scales (`0..=63`, stored with an offset of 32).
#[inline(always)]
fn unpack_scales(s: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for g in 0..16 {
        let lo = if g < 8 { s[g] & 0x0f } else { s[g - 8] >> 4 };
        let hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        out[g] = lo | (hi << 4);
    }
    out
}

/// The Q3_K block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q3_K;

impl BlockFormat for Q3_K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 110;

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; QK_K] = src.try_into().expect("Q3_K block takes 256 values");
        let y: &mut [u8; 110] = dst.try_into().expect("Q3_K block is 110 bytes");

        let mut levels = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut amax = 0f32;
        for j in 0..16 {
            let xs: &[f32; 16] = x[16 * j..16 * j + 16].try_into().expect("16 values");
            let ls: &mut [i8; 16] = (&mut levels[16 * j..16 * j + 16])
                .try_into()
                .expect("16 levels");
            scales[j] = make_q3_quants(4, xs, ls);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }

        let mut packed = [0u8; 12];
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..16 {
                // C: int8_t l = nearest_int(...) (wrapping), clamped to -32..=31, +32
                let l = i32::from(nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
                let l = l as u8;
                if j < 8 {
                    packed[j] = l & 0x0f;
                } else {
                    packed[j - 8] |= (l & 0x0f) << 4;
                }
                packed[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
            }
            put_f16(y, D, 1.0 / iscale);
        } else {
            put_f16(y, D, 0.0);
        }

        let d_all = f16_to_f32(u16::from_le_bytes([y[D], y[D + 1]]));
        let sc = unpack_scales(&packed);
        for j in 0..16 {
            let d = d_all * (i32::from(sc[j]) - 32) as f32;
            if d == 0.0 {
                continue;
            }
            let xs = &x[16 * j..16 * j + 16];
            for (l, &v) in levels[16 * j..16 * j + 16].iter_mut().zip(xs) {
                *l = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
            }
        }

        // levels are 0..=7: bit 2 goes to hmask, bits 0..2 stay
        let mut hmask = [0u8; 32];
        for (r, row) in levels.chunks_exact_mut(32).enumerate() {
            for (h, l) in hmask.iter_mut().zip(row) {
                *h |= ((*l as u8 >> 2) & 1) << r;
                *l &= 3;
            }
        }
        y[..32].copy_from_slice(&hmask);
        for h in 0..2 {
            for l in 0..32 {
                let j = 128 * h + l;
                y[QS + 32 * h + l] = (levels[j] as u8)
                    | ((levels[j + 32] as u8) << 2)
                    | ((levels[j + 64] as u8) << 4)
                    | ((levels[j + 96] as u8) << 6);
            }
        }
        y[SCALES..SCALES + 12].copy_from_slice(&packed);
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 110] = src.try_into().expect("Q3_K block is 110 bytes");
        let y: &mut [f32; QK_K] = dst.try_into().expect("Q3_K block takes 256 values");
        let d_all = get_f16(b, D);
        let sc = unpack_scales(&b[SCALES..SCALES + 12]);
        let hm: &[u8; 32] = b[..32].try_into().expect("32 bytes");
        for h in 0..2 {
            let q: &[u8; 32] = b[QS + 32 * h..QS + 32 * h + 32]
                .try_into()
                .expect("32 bytes");
            for s in 0..4 {
                let shift = 2 * s;
                let bit = 1u8 << (4 * h + s);
                for half in 0..2 {
                    let g = 8 * h + 2 * s + half;
                    let dl = d_all * (i32::from(sc[g]) - 32) as f32;
                    let out = &mut y[128 * h + 32 * s + 16 * half..][..16];
                    let (q, hm) = (
                        &q[16 * half..16 * half + 16],
                        &hm[16 * half..16 * half + 16],
                    );
                    for ((o, &ql), &hb) in out.iter_mut().zip(q).zip(hm) {
                        let v = i32::from((ql >> shift) & 3) - if hb & bit != 0 { 0 } else { 4 };
                        *o = dl * v as f32;
                    }
                }
            }
        }
    }
}
