//! Q2_K: super-blocks of 256 values in 16 groups of 16, 2-bit quants,
//! 4-bit scales and mins (2.625 bits per value).
//!
//! Block (84 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..16 | `scales[16]` | group `g`: scale `scales[g] & 0xF`, min `scales[g] >> 4` |
//! | 16..80 | `qs[64]` | 2-bit quants: value `128·h + 32·s + l` is bits `2s..2s+2` of `qs[32·h + l]` |
//! | 80..82 | `d` | f16 super-scale of the scales |
//! | 82..84 | `dmin` | f16 super-scale of the mins |
//!
//! Dequantize, value `i` in group `g = i / 16`:
//! `x = (d · sc_g) · q − (dmin · m_g)`, `q ∈ 0..=3`.
//!
//! Quantize (llama.cpp `quantize_row_q2_K_ref`): per group an asymmetric fit
//! with weights `|x|` and a mean-absolute-error criterion
//! (`make_qkx2_quants(16, 3, …, −0.5, 0.1, 15, use_mad)`), scales and mins
//! rounded to 4 bits under `d = max_scale / 15`, `dmin = max_min / 15`, then
//! `q = clamp(nearest((x + dmin·m_g) / (d·sc_g)), 0, 3)`.

use super::kquants::{QK_K, make_qkx2_quants_x4, nearest_int};
use super::{get_f16, put_f16};
use crate::float::f16_to_f32;
use crate::{BlockFormat, GgmlType};

pub(super) const QS: usize = 16;
pub(super) const D: usize = 80;
pub(super) const DMIN: usize = 82;

/// The Q2_K block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q2_K;

impl BlockFormat for Q2_K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 84;

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; QK_K] = src.try_into().expect("Q2_K block takes 256 values");
        let y: &mut [u8; 84] = dst.try_into().expect("Q2_K block is 84 bytes");
        const Q4SCALE: f32 = 15.0;

        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_min = 0f32;
        for b in 0..4 {
            // four groups side by side: xt[l][g] is value l of group 4b + g
            let mut xt = [[0f32; 4]; 16];
            let mut wt = [[0f32; 4]; 16];
            for g in 0..4 {
                let j = 4 * b + g;
                for l in 0..16 {
                    xt[l][g] = x[16 * j + l];
                    wt[l][g] = x[16 * j + l].abs();
                }
            }
            let mut ls = [[0u8; 16]; 4];
            let fits = make_qkx2_quants_x4(3, &xt, &wt, &mut ls, -0.5, 0.1, 15, true);
            for g in 0..4 {
                let j = 4 * b + g;
                levels[16 * j..16 * j + 16].copy_from_slice(&ls[g]);
                let (scale, min) = fits[g];
                scales[j] = scale;
                mins[j] = min;
                if scale > max_scale {
                    max_scale = scale;
                }
                if min > max_min {
                    max_min = min;
                }
            }
        }

        let mut sc = [0u8; 16];
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            put_f16(y, D, max_scale / Q4SCALE);
        } else {
            put_f16(y, D, 0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..16 {
                let l = nearest_int(iscale * mins[j]);
                sc[j] |= (l << 4) as u8;
            }
            put_f16(y, DMIN, max_min / Q4SCALE);
        } else {
            put_f16(y, DMIN, 0.0);
        }
        let d_all = f16_to_f32(u16::from_le_bytes([y[D], y[D + 1]]));
        let dmin_all = f16_to_f32(u16::from_le_bytes([y[DMIN], y[DMIN + 1]]));
        for j in 0..16 {
            let d = d_all * f32::from(sc[j] & 0x0f);
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * f32::from(sc[j] >> 4);
            for ii in 0..16 {
                levels[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / d).clamp(0, 3) as u8;
            }
        }

        y[..16].copy_from_slice(&sc);
        for h in 0..2 {
            for l in 0..32 {
                let j = 128 * h + l;
                y[QS + 32 * h + l] = levels[j]
                    | (levels[j + 32] << 2)
                    | (levels[j + 64] << 4)
                    | (levels[j + 96] << 6);
            }
        }
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 84] = src.try_into().expect("Q2_K block is 84 bytes");
        let y: &mut [f32; QK_K] = dst.try_into().expect("Q2_K block takes 256 values");
        let d = get_f16(b, D);
        let dmin = get_f16(b, DMIN);
        for h in 0..2 {
            let q: &[u8; 32] = b[QS + 32 * h..QS + 32 * h + 32]
                .try_into()
                .expect("32 bytes");
            for s in 0..4 {
                let shift = 2 * s;
                for half in 0..2 {
                    let g = 8 * h + 2 * s + half;
                    let sc = b[g];
                    let dl = d * f32::from(sc & 0x0f);
                    let ml = dmin * f32::from(sc >> 4);
                    let out = &mut y[128 * h + 32 * s + 16 * half..][..16];
                    for l in 0..16 {
                        out[l] = dl * f32::from((q[16 * half + l] >> shift) & 3) - ml;
                    }
                }
            }
        }
    }
}
