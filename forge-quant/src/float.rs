//! Scalar conversions between `f32` and the two 16-bit float formats GGUF stores.
//!
//! * **F16** (IEEE binary16): `f32 → f16` rounds to nearest, ties to even, and
//!   overflows to infinity, which is what numpy's `astype(np.float16)` and
//!   ggml's `GGML_FP32_TO_FP16` both do. NaNs keep their sign and the top ten
//!   payload bits, as numpy does (a payload that would vanish becomes `0x7c01`);
//!   ggml instead returns the canonical quiet NaN `0x7e00`, so the two peers
//!   differ only on non-canonical NaNs. `f16 → f32` is exact and keeps NaN
//!   payloads bit for bit (numpy's behaviour; ggml's conversion quiets a
//!   signalling NaN).
//! * **BF16** (the upper half of an `f32`): `f32 → bf16` rounds to nearest even
//!   by adding `0x7fff + lsb` and forces NaNs quiet by setting bit 6, exactly as
//!   ggml's `ggml_compute_fp32_to_bf16` and gguf-py's `BF16.quantize_blocks`.
//!   `bf16 → f32` is a 16-bit shift.

/// Converts IEEE half bits to `f32`, exactly (NaN payloads are preserved).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = h & 0x7c00;
    let man = h & 0x03ff;
    // normal: rebias the exponent from 15 to 127 (adds 112 << 23)
    let normal = ((h & 0x7fff) << 13) + 0x3800_0000;
    // infinity or NaN: widen the payload
    let special = 0x7f80_0000 | (man << 13);
    // zero or subnormal: man · 2^-24, exact in f32
    let small = (man as f32 * (1.0 / 16_777_216.0)).to_bits();
    let bits = if exp == 0x7c00 {
        special
    } else if exp == 0 {
        small
    } else {
        normal
    };
    f32::from_bits(sign | bits)
}

/// Converts `f32` to IEEE half bits, rounding to nearest even.
///
/// Branch-free so that row loops vectorize: every path is computed and the
/// right one selected. Normal halves round by adding `0x0fff + lsb` below the
/// kept bits; subnormal halves let the FPU round, by adding 0.5 (whose ulp is
/// the half subnormal step 2^-24) and reading the low mantissa bits.
#[inline(always)]
pub fn f32_to_f16(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = (x >> 16) & 0x8000;
    let abs = x & 0x7fff_ffff;
    let r = abs.wrapping_sub(0x3800_0000);
    let normal = r.wrapping_add(0x0fff + ((r >> 13) & 1)) >> 13;
    let subnormal = (f32::from_bits(abs) + 0.5)
        .to_bits()
        .wrapping_sub(0x3f00_0000);
    let nan = 0x7c00 | ((abs & 0x007f_ffff) >> 13);
    let nan = if nan == 0x7c00 { 0x7c01 } else { nan };
    let h = if abs > 0x7f80_0000 {
        nan
    } else if abs >= 0x4780_0000 {
        0x7c00
    } else if abs >= 0x3880_0000 {
        normal
    } else {
        subnormal
    };
    (sign | h) as u16
}

/// Converts bfloat16 bits to `f32` (exact).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Converts `f32` to bfloat16 bits: round to nearest even, NaNs forced quiet.
#[inline]
pub fn f32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    // cannot overflow: the largest non-NaN pattern is 0xff80_0000
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straightforward branchy f32 -> f16 (RNE, numpy NaN rule) to check
    /// the branch-free one against.
    fn f32_to_f16_slow(f: f32) -> u16 {
        let x = f.to_bits();
        let sign = ((x >> 16) & 0x8000) as u16;
        let abs = x & 0x7fff_ffff;
        if abs > 0x7f80_0000 {
            let h = 0x7c00 | ((abs & 0x007f_ffff) >> 13) as u16;
            return sign | if h == 0x7c00 { 0x7c01 } else { h };
        }
        if abs >= 0x4780_0000 {
            return sign | 0x7c00;
        }
        if abs >= 0x3880_0000 {
            let r = abs - 0x3800_0000;
            let (half, rem) = (r >> 13, r & 0x1fff);
            let up = u32::from(rem > 0x1000 || (rem == 0x1000 && half & 1 == 1));
            return sign | (half + up) as u16;
        }
        if abs < 0x3300_0000 {
            return sign;
        }
        let e = abs >> 23;
        let m = (abs & 0x007f_ffff) | 0x0080_0000;
        let shift = 126 - e;
        let (half, rem, halfway) = (m >> shift, m & ((1 << shift) - 1), 1 << (shift - 1));
        let up = u32::from(rem > halfway || (rem == halfway && half & 1 == 1));
        sign | (half + up) as u16
    }

    #[test]
    fn branch_free_f16_matches_the_branchy_definition() {
        // a stride coprime to every field boundary, plus the neighbourhood of
        // each rounding boundary of the half grid
        for x in (0..=u32::MAX)
            .step_by(65_537)
            .chain(0x3300_0000..0x3300_4000)
            .chain(0x477f_e000..0x4780_2000)
        {
            let f = f32::from_bits(x);
            assert_eq!(f32_to_f16(f), f32_to_f16_slow(f), "{x:#010x}");
        }
    }

    /// Every f32 pattern; about 10 s in release:
    /// `cargo test -p forge-quant --release --lib -- --ignored`.
    #[test]
    #[ignore = "exhaustive over 2^32 patterns; run in release"]
    fn branch_free_f16_matches_the_branchy_definition_exhaustively() {
        for x in 0..=u32::MAX {
            let f = f32::from_bits(x);
            assert_eq!(f32_to_f16(f), f32_to_f16_slow(f), "{x:#010x}");
        }
    }

    #[test]
    fn f16_round_trips_every_half() {
        for h in 0..=u16::MAX {
            let back = f32_to_f16(f16_to_f32(h));
            assert_eq!(back, h, "half {h:#06x}");
        }
    }

    #[test]
    fn f16_rounding_edges() {
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(65519.99), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // tie rounds to even = inf
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7c00);
        assert_eq!(f32_to_f16(-f32::INFINITY), 0xfc00);
        assert_eq!(f32_to_f16(f32::NAN), 0x7e00);
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie to even
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-25)), 0x0001);
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-24)), 0x0002); // tie to even (up)
        assert_eq!(f32_to_f16(2f32.powi(-14)), 0x0400);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // tie, even stays
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
    }

    #[test]
    fn bf16_rounds_to_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }
}
