//! One module per GGML block format; each opens with its byte layout and equation.
//!
//! Conventions shared by every format: multi-byte fields are little-endian,
//! scales are IEEE halves (`ggml_half`), and the element order inside a block is
//! the order of the `f32` values it was quantized from.

mod bf16;
mod f16;
mod kquants;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;

pub use bf16::BF16;
pub use f16::F16;
pub use q2_k::Q2_K;
pub use q3_k::Q3_K;
pub use q4_0::Q4_0;
pub use q4_1::Q4_1;
pub use q4_k::Q4_K;
pub use q5_0::Q5_0;
pub use q5_1::Q5_1;
pub use q5_k::Q5_K;
pub use q6_k::Q6_K;
pub use q8_0::Q8_0;

use crate::float::{f16_to_f32, f32_to_f16};

/// Reads the half at `b[off..off + 2]` as `f32`.
#[inline(always)]
fn get_f16(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Writes `v` rounded to a half at `b[off..off + 2]`.
#[inline(always)]
fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f32_to_f16(v).to_le_bytes());
}

/// The value of largest magnitude in `x`, the first one on ties, with its sign
/// (numpy's `take_along_axis(x, abs(x).argmax())`, used by Q4_0 and Q5_0).
///
/// Equal to the strict-`>` scan of `|x|` from `x[0]` (a NaN `x[0]` is returned
/// as is, later NaNs are skipped). The value of largest magnitude is the
/// maximum or the minimum; when one strictly dominates the other it is the
/// only value of that magnitude, so only a tie `max == −min` (zeros
/// included) or a NaN `x[0]` needs the scan.
#[inline(always)]
fn signed_absmax(x: &[f32; 32]) -> f32 {
    let (min, max) = lane_min_max(x);
    if max > -min {
        max
    } else if -min > max {
        min
    } else {
        signed_absmax_scan(x)
    }
}

/// [`signed_absmax`] by the scan itself.
#[cold]
fn signed_absmax_scan(x: &[f32; 32]) -> f32 {
    let mut amax = x[0].abs();
    let mut max = x[0];
    for &v in &x[1..] {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `(min, max)` of `x` in eight independent lanes that all start from
/// `x[0]`: the extreme values of the strict `<` / `>` scan from `x[0]` (NaN
/// if `x[0]` is), but of equal values not necessarily the first.
///
/// On x86_64 the lanes are two SSE2 registers per extreme (SSE2 is part of the
/// x86_64 baseline): `minps(v, m)` is exactly `if v < m { v } else { m }`,
/// NaN `v` included, and LLVM's SLP vectorizer leaves most of the portable
/// loop scalar.
#[inline(always)]
fn lane_min_max(x: &[f32; 32]) -> (f32, f32) {
    let mut lo = [x[0]; 8];
    let mut hi = [x[0]; 8];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the SSE2 intrinsics are available on every x86_64 target; the
    // loads read 4 f32 at offsets 0..=28 of `x` and the stores write 4 f32 at
    // offsets 0 and 4 of the 8-lane arrays, all unaligned.
    unsafe {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_max_ps, _mm_min_ps, _mm_set1_ps, _mm_storeu_ps};
        let p = x.as_ptr();
        let x0 = _mm_set1_ps(x[0]);
        let (mut lo0, mut lo1, mut hi0, mut hi1) = (x0, x0, x0, x0);
        for c in 0..4 {
            let a = _mm_loadu_ps(p.add(8 * c));
            let b = _mm_loadu_ps(p.add(8 * c + 4));
            lo0 = _mm_min_ps(a, lo0);
            lo1 = _mm_min_ps(b, lo1);
            hi0 = _mm_max_ps(a, hi0);
            hi1 = _mm_max_ps(b, hi1);
        }
        _mm_storeu_ps(lo.as_mut_ptr(), lo0);
        _mm_storeu_ps(lo.as_mut_ptr().add(4), lo1);
        _mm_storeu_ps(hi.as_mut_ptr(), hi0);
        _mm_storeu_ps(hi.as_mut_ptr().add(4), hi1);
    }
    #[cfg(not(target_arch = "x86_64"))]
    for c in x.chunks_exact(8) {
        for k in 0..8 {
            let v = c[k];
            lo[k] = if v < lo[k] { v } else { lo[k] };
            hi[k] = if v > hi[k] { v } else { hi[k] };
        }
    }
    let (mut min, mut max) = (lo[0], hi[0]);
    for k in 1..8 {
        min = if lo[k] < min { lo[k] } else { min };
        max = if hi[k] > max { hi[k] } else { max };
    }
    (min, max)
}

/// `(min, max)` of `x` by `<` / `>` comparisons starting from `x[0]`.
///
/// The scan keeps the first of equal values, which only shows for a zero
/// extreme (`-0.0 == 0.0`): a zero extreme from [`lane_min_max`] is taken
/// from its first holder, so the result equals the sequential scan bit for bit.
#[inline(always)]
fn min_max(x: &[f32; 32]) -> (f32, f32) {
    let (mut min, mut max) = lane_min_max(x);
    if min == 0.0 {
        min = first_equal(x, min);
    }
    if max == 0.0 {
        max = first_equal(x, max);
    }
    (min, max)
}

/// The first element of `x` equal to `v` (which is one of them).
#[cold]
fn first_equal(x: &[f32; 32], v: f32) -> f32 {
    x.iter().copied().find(|&e| e == v).unwrap_or(v)
}

/// `min(hi, v as u8)` for `0 ≤ hi ≤ 255`, with `as`'s saturation (NaN and
/// negatives give 0). Vectorizes, unlike a saturating `as` (which LLVM
/// scalarizes at the SSE2 baseline): the value is clamped in `f32`, then
/// truncated through the float adder — adding `2^23` leaves `c` rounded to
/// nearest in the low mantissa bits (exact for `0 ≤ c < 2^23`), and one is
/// taken off where that rounded up.
#[inline(always)]
fn trunc_clamp(v: f32, hi: f32) -> u8 {
    const TWO_23: f32 = 8_388_608.0;
    let c = if v > 0.0 { v } else { 0.0 };
    let c = if c < hi { c } else { hi };
    let r = c + TWO_23;
    let n = (r.to_bits() & 0x007f_ffff) as i32;
    let up = i32::from(r - TWO_23 > c);
    (n - up) as u8
}

/// Packs 32 five-bit quants as Q5_0/Q5_1 store them: the fifth bits as a
/// little-endian u32 (bit `j` for value `j`), then 16 bytes of nibble pairs
/// (value `j` low, value `j + 16` high).
#[inline(always)]
fn pack_q5(q: &[u8; 32], out: &mut [u8; 20]) {
    // fifth bits, eight at a time: byte k of `w` is 0 or 1, and the multiply
    // moves byte k's bit to bit 56 + k (all partial products are distinct bits)
    let mut qh = [0u8; 4];
    for (h, c) in qh.iter_mut().zip(q.chunks_exact(8)) {
        let w = (u64::from_le_bytes(c.try_into().expect("8 bytes")) >> 4) & 0x0101_0101_0101_0101;
        *h = (w.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8;
    }
    out[..4].copy_from_slice(&qh);
    let (lo, hi) = q.split_at(16);
    for ((o, &a), &b) in out[4..].iter_mut().zip(lo).zip(hi) {
        *o = (a & 0x0f) | (b << 4);
    }
}

/// `1/d`, or 0 when `d` is zero (so an all-zero block quantizes to zeros).
#[inline(always)]
fn inverse_or_zero(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

#[cfg(test)]
mod reduction_tests {
    //! The lane reductions against the sequential scans they replace, bit for
    //! bit, on blocks with ties, signed zeros, NaNs and infinities.
    use super::*;

    fn absmax_scan(x: &[f32; 32]) -> f32 {
        let amax = x
            .iter()
            .fold(x[0].abs(), |m, v| if v.abs() > m { v.abs() } else { m });
        x.iter().copied().find(|v| v.abs() == amax).unwrap_or(x[0])
    }

    fn min_max_scan(x: &[f32; 32]) -> (f32, f32) {
        let (mut min, mut max) = (x[0], x[0]);
        for &v in &x[1..] {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        (min, max)
    }

    #[test]
    fn lane_reductions_equal_the_scans() {
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.5,
            -2.5,
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
        ];
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..200_000 {
            let mut x = [0f32; 32];
            let mode = next() % 3;
            for v in &mut x {
                let r = next();
                *v = match mode {
                    0 => specials[(r % specials.len() as u64) as usize],
                    1 => specials[(r % 6) as usize],
                    _ => (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0,
                };
            }
            let bits = |v: f32| v.to_bits();
            assert_eq!(bits(signed_absmax(&x)), bits(absmax_scan(&x)), "{x:?}");
            let (a, b) = min_max(&x);
            let (c, d) = min_max_scan(&x);
            assert_eq!((bits(a), bits(b)), (bits(c), bits(d)), "{x:?}");
        }
    }

    #[test]
    fn trunc_clamp_equals_saturating_as() {
        let mut values: Vec<f32> = (-300_000..4_000_000).map(|i| i as f32 * 1e-5).collect();
        for k in -2..40 {
            let k = k as f32;
            values.extend([k, k.next_down(), k.next_up(), k + 0.5]);
        }
        for v in values {
            for hi in [15.0f32, 31.0] {
                assert_eq!(trunc_clamp(v, hi), (v as u8).min(hi as u8), "{v}");
            }
        }
        for v in [
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            -0.0,
            15.0,
            14.999_999,
            31.5,
        ] {
            assert_eq!(trunc_clamp(v, 15.0), (v as u8).min(15), "{v}");
        }
    }
}

#[cfg(test)]
mod layout_tests {
    //! The byte layouts against `repr(C)` mirrors of ggml-common.h's structs.
    use std::mem::{offset_of, size_of};

    use super::*;
    use crate::{BlockFormat, GgmlType};

    #[repr(C)]
    struct BlockQ4_0 {
        d: u16,
        qs: [u8; 16],
    }
    #[repr(C)]
    struct BlockQ4_1 {
        d: u16,
        m: u16,
        qs: [u8; 16],
    }
    #[repr(C)]
    struct BlockQ5_0 {
        d: u16,
        qh: [u8; 4],
        qs: [u8; 16],
    }
    #[repr(C)]
    struct BlockQ5_1 {
        d: u16,
        m: u16,
        qh: [u8; 4],
        qs: [u8; 16],
    }
    #[repr(C)]
    struct BlockQ8_0 {
        d: u16,
        qs: [i8; 32],
    }
    #[repr(C)]
    struct BlockQ2K {
        scales: [u8; 16],
        qs: [u8; 64],
        d: u16,
        dmin: u16,
    }
    #[repr(C)]
    struct BlockQ3K {
        hmask: [u8; 32],
        qs: [u8; 64],
        scales: [u8; 12],
        d: u16,
    }
    #[repr(C)]
    struct BlockQ4K {
        d: u16,
        dmin: u16,
        scales: [u8; 12],
        qs: [u8; 128],
    }
    #[repr(C)]
    struct BlockQ5K {
        d: u16,
        dmin: u16,
        scales: [u8; 12],
        qh: [u8; 32],
        qs: [u8; 128],
    }
    #[repr(C)]
    struct BlockQ6K {
        ql: [u8; 128],
        qh: [u8; 64],
        scales: [i8; 16],
        d: u16,
    }

    fn sizes<B: BlockFormat>(ty: GgmlType, struct_size: usize) {
        assert_eq!(B::TYPE, ty);
        assert_eq!(B::BLOCK_SIZE, ty.block_size(), "{ty}");
        assert_eq!(B::TYPE_SIZE, ty.type_size(), "{ty}");
        assert_eq!(B::TYPE_SIZE, struct_size, "{ty}");
    }

    #[test]
    fn block_sizes_match_ggml() {
        sizes::<Q4_0>(GgmlType::Q4_0, size_of::<BlockQ4_0>());
        sizes::<Q4_1>(GgmlType::Q4_1, size_of::<BlockQ4_1>());
        sizes::<Q5_0>(GgmlType::Q5_0, size_of::<BlockQ5_0>());
        sizes::<Q5_1>(GgmlType::Q5_1, size_of::<BlockQ5_1>());
        sizes::<Q8_0>(GgmlType::Q8_0, size_of::<BlockQ8_0>());
        sizes::<Q2_K>(GgmlType::Q2_K, size_of::<BlockQ2K>());
        sizes::<Q3_K>(GgmlType::Q3_K, size_of::<BlockQ3K>());
        sizes::<Q4_K>(GgmlType::Q4_K, size_of::<BlockQ4K>());
        sizes::<Q5_K>(GgmlType::Q5_K, size_of::<BlockQ5K>());
        sizes::<Q6_K>(GgmlType::Q6_K, size_of::<BlockQ6K>());
        sizes::<F16>(GgmlType::F16, 2);
        sizes::<BF16>(GgmlType::BF16, 2);
    }

    #[test]
    fn field_offsets_match_ggml() {
        assert_eq!((offset_of!(BlockQ4_0, qs)), q4_0::QS);
        assert_eq!(
            (offset_of!(BlockQ4_1, m), offset_of!(BlockQ4_1, qs)),
            (q4_1::M, q4_1::QS)
        );
        assert_eq!(
            (offset_of!(BlockQ5_0, qh), offset_of!(BlockQ5_0, qs)),
            (q5_0::QH, q5_0::QS)
        );
        assert_eq!(
            (
                offset_of!(BlockQ5_1, m),
                offset_of!(BlockQ5_1, qh),
                offset_of!(BlockQ5_1, qs)
            ),
            (q5_1::M, q5_1::QH, q5_1::QS)
        );
        assert_eq!(offset_of!(BlockQ8_0, qs), q8_0::QS);
        assert_eq!(
            (
                offset_of!(BlockQ2K, qs),
                offset_of!(BlockQ2K, d),
                offset_of!(BlockQ2K, dmin)
            ),
            (q2_k::QS, q2_k::D, q2_k::DMIN)
        );
        assert_eq!(
            (
                offset_of!(BlockQ3K, qs),
                offset_of!(BlockQ3K, scales),
                offset_of!(BlockQ3K, d)
            ),
            (q3_k::QS, q3_k::SCALES, q3_k::D)
        );
        assert_eq!(
            (
                offset_of!(BlockQ4K, dmin),
                offset_of!(BlockQ4K, scales),
                offset_of!(BlockQ4K, qs)
            ),
            (q4_k::DMIN, q4_k::SCALES, q4_k::QS)
        );
        assert_eq!(
            (
                offset_of!(BlockQ5K, dmin),
                offset_of!(BlockQ5K, scales),
                offset_of!(BlockQ5K, qh),
                offset_of!(BlockQ5K, qs)
            ),
            (q5_k::DMIN, q5_k::SCALES, q5_k::QH, q5_k::QS)
        );
        assert_eq!(
            (
                offset_of!(BlockQ6K, qh),
                offset_of!(BlockQ6K, scales),
                offset_of!(BlockQ6K, d)
            ),
            (q6_k::QH, q6_k::SCALES, q6_k::D)
        );
    }
}
