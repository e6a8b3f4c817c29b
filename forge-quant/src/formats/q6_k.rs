//! Q6_K: super-blocks of 256 values in 16 groups of 16, 6-bit quants, signed
//! 8-bit scales (6.5625 bits per value).
//!
//! Block (210 bytes):
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..128 | `ql[128]` | low 4 bits: in half `h`, value `128·h + l` (l < 32) is the low nibble of `ql[64·h + l]`, `+32` the low nibble of `ql[64·h + 32 + l]`, `+64` and `+96` the high nibbles of those bytes |
//! | 128..192 | `qh[64]` | high 2 bits: value `128·h + 32·k + l` is bits `2k..2k+2` of `qh[32·h + l]` |
//! | 192..208 | `scales[16]` | i8 scale per group of 16 |
//! | 208..210 | `d` | f16 super-scale |
//!
//! Dequantize, value `i` in group `g = i / 16`: `x = (d · sc_g) · (q − 32)`,
//! `q ∈ 0..=63`.
//!
//! Quantize (llama.cpp `quantize_row_q6_K_ref`): per group a symmetric fit with
//! weights `x²` over 19 trial scales (`make_qx_quants(16, 32, …, rmse_type 1)`),
//! scales rounded to i8 under `d = max_scale / −128`, then
//! `q = clamp(nearest(x / (d·sc_g)), −32, 31) + 32`. A super-block whose largest
//! group scale is below 1e-15 is all zero bytes.

use super::kquants::{GROUP_MAX_EPS, QK_K, make_qx_quants, nearest_int};
use super::{get_f16, put_f16};
use crate::float::f16_to_f32;
use crate::{BlockFormat, GgmlType};

pub(super) const QH: usize = 128;
pub(super) const SCALES: usize = 192;
pub(super) const D: usize = 208;

/// The Q6_K block format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[allow(non_camel_case_types)]
pub struct Q6_K;

impl BlockFormat for Q6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK_SIZE: usize = QK_K;
    const TYPE_SIZE: usize = 210;

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let x: &[f32; QK_K] = src.try_into().expect("Q6_K block takes 256 values");
        let y: &mut [u8; 210] = dst.try_into().expect("Q6_K block is 210 bytes");

        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..16 {
            let xs: &[f32; 16] = x[16 * ib..16 * ib + 16].try_into().expect("16 values");
            let ls: &mut [u8; 16] = (&mut levels[16 * ib..16 * ib + 16])
                .try_into()
                .expect("16 levels");
            let scale = make_qx_quants(32, xs, ls);
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }

        if max_abs_scale < GROUP_MAX_EPS {
            y.fill(0);
            return;
        }

        let iscale = -128.0 / max_scale;
        put_f16(y, D, 1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let d_all = f16_to_f32(u16::from_le_bytes([y[D], y[D + 1]]));
        for j in 0..16 {
            let d = d_all * f32::from(sc[j]);
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                levels[16 * j + ii] = (l + 32) as u8;
            }
        }

        for h in 0..2 {
            for l in 0..32 {
                let j = 128 * h + l;
                let (q1, q2, q3, q4) = (levels[j], levels[j + 32], levels[j + 64], levels[j + 96]);
                y[64 * h + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                y[64 * h + 32 + l] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                y[QH + 32 * h + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        for (o, s) in y[SCALES..SCALES + 16].iter_mut().zip(sc) {
            *o = s as u8;
        }
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: &[u8; 210] = src.try_into().expect("Q6_K block is 210 bytes");
        let y: &mut [f32; QK_K] = dst.try_into().expect("Q6_K block takes 256 values");
        let d = get_f16(b, D);
        for h in 0..2 {
            let ql: &[u8; 64] = b[64 * h..64 * h + 64].try_into().expect("64 bytes");
            let qh: &[u8; 32] = b[QH + 32 * h..QH + 32 * h + 32]
                .try_into()
                .expect("32 bytes");
            let sc = &b[SCALES + 8 * h..SCALES + 8 * h + 8];
            let out: &mut [f32; 128] = (&mut y[128 * h..128 * h + 128])
                .try_into()
                .expect("128 values");
            for l in 0..32 {
                let is = l / 16;
                let q1 = i32::from((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
                let q2 = i32::from((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                out[l] = d * f32::from(sc[is] as i8) * q1 as f32;
                out[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
                out[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
                out[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
            }
        }
    }
}
