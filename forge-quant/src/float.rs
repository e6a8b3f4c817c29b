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
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let man = h & 0x3ff;
    let bits = if exp == 0x1f {
        // infinity or NaN: widen the payload
        sign | 0x7f80_0000 | (man << 13)
    } else if exp != 0 {
        // normal: rebias the exponent from 15 to 127
        sign | ((exp + 112) << 23) | (man << 13)
    } else {
        // zero or subnormal: man · 2^-24, exact in f32
        sign | (man as f32 * (1.0 / 16_777_216.0)).to_bits()
    };
    f32::from_bits(bits)
}

/// Converts `f32` to IEEE half bits, rounding to nearest even.
#[inline]
pub fn f32_to_f16(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let abs = x & 0x7fff_ffff;
    if abs > 0x7f80_0000 {
        // NaN: keep the top payload bits; never turn into infinity
        let mut h = 0x7c00 | ((abs & 0x007f_ffff) >> 13) as u16;
        if h == 0x7c00 {
            h += 1;
        }
        return sign | h;
    }
    if abs >= 0x4780_0000 {
        // |f| >= 65536 (or infinite): infinity
        return sign | 0x7c00;
    }
    if abs >= 0x3880_0000 {
        // a normal half: rebias by 112 and round away the 13 low mantissa bits;
        // a carry out of the mantissa correctly bumps the exponent (up to inf)
        let r = abs - 0x3800_0000;
        let half = r >> 13;
        let rem = r & 0x1fff;
        let up = u32::from(rem > 0x1000 || (rem == 0x1000 && half & 1 == 1));
        return sign | (half + up) as u16;
    }
    if abs < 0x3300_0000 {
        // below 2^-25: rounds to zero
        return sign;
    }
    // a subnormal half: count units of 2^-24
    let e = abs >> 23; // 102..=112
    let m = (abs & 0x007f_ffff) | 0x0080_0000;
    let shift = 126 - e; // 14..=24
    let half = m >> shift;
    let rem = m & ((1 << shift) - 1);
    let halfway = 1 << (shift - 1);
    let up = u32::from(rem > halfway || (rem == halfway && half & 1 == 1));
    sign | (half + up) as u16
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
