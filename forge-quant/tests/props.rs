//! Property tests of the quantizers: error bounds, block shapes, degenerate
//! blocks, extreme magnitudes and non-finite inputs.

use forge_quant::{Error, GgmlType, SUPPORTED_TYPES, dequantize, f16_to_f32, quantize};
use proptest::prelude::*;

const QUANTIZED: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn any_quantized() -> impl Strategy<Value = GgmlType> {
    proptest::sample::select(QUANTIZED)
}

fn any_supported() -> impl Strategy<Value = GgmlType> {
    proptest::sample::select(SUPPORTED_TYPES)
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let q = quantize(ty, x, ty.block_size()).expect("quantize");
    dequantize(ty, &q, x.len()).expect("dequantize")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Q8_0: every value is within half a step of its block, where the step
    /// is the f32 scale `max|x|/127` plus what rounding that scale to f16
    /// moves the largest quant (127 · |d32 − d16|).
    #[test]
    fn q8_0_error_is_half_a_step(scale in 1e-3f32..1e3, v in prop::collection::vec(-1f32..1.0, 32 * 4)) {
        let x: Vec<f32> = v.iter().map(|a| a * scale).collect();
        let q = quantize(GgmlType::Q8_0, &x, 32).unwrap();
        let y = dequantize(GgmlType::Q8_0, &q, x.len()).unwrap();
        for (b, block) in x.chunks(32).enumerate() {
            let d32 = block.iter().fold(0f32, |m, a| m.max(a.abs())) / 127.0;
            let d16 = f16_to_f32(u16::from_le_bytes([q[34 * b], q[34 * b + 1]]));
            let bound = 0.5 * d32 + 127.0 * (d32 - d16).abs() + 1e-6 * d32;
            for (i, a) in block.iter().enumerate() {
                let e = (a - y[32 * b + i]).abs();
                prop_assert!(e <= bound, "block {b} value {i}: |{a} - {}| = {e} > {bound}", y[32 * b + i]);
            }
        }
    }

    /// F16 and BF16 round trips are within half an ulp of their precision
    /// (2^-11 and 2^-8 relative) for values in the normal f16 range.
    #[test]
    fn half_round_trips_are_within_half_an_ulp(v in prop::collection::vec(6.2e-5f32..65000.0, 1..64), neg in any::<bool>()) {
        let x: Vec<f32> = v.iter().map(|a| if neg { -a } else { *a }).collect();
        let y = round_trip(GgmlType::F16, &x);
        for (a, b) in x.iter().zip(&y) {
            prop_assert!((a - b).abs() <= a.abs() * 2f32.powi(-11), "f16 {a} -> {b}");
        }
        let y = round_trip(GgmlType::BF16, &x);
        for (a, b) in x.iter().zip(&y) {
            prop_assert!((a - b).abs() <= a.abs() * 2f32.powi(-8), "bf16 {a} -> {b}");
        }
    }

    /// Whole blocks quantize to `n / block · type_size` bytes and dequantize
    /// back to `n` values; anything else is `NotBlockAligned`.
    #[test]
    fn block_boundaries(ty in any_supported(), k in 0usize..5, r in 0usize..256) {
        let n = k * ty.block_size() + r % ty.block_size();
        let x = vec![0.25f32; n];
        match quantize(ty, &x, n) {
            Ok(bytes) => {
                prop_assert_eq!(n % ty.block_size(), 0);
                prop_assert_eq!(bytes.len(), n / ty.block_size() * ty.type_size());
                prop_assert_eq!(dequantize(ty, &bytes, n).unwrap().len(), n);
            }
            Err(Error::NotBlockAligned { .. }) => prop_assert!(n % ty.block_size() != 0),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    /// A constant block comes back close to the constant (all-zero exactly).
    #[test]
    fn constant_blocks(ty in any_quantized(), c in -100f32..100.0) {
        let n = ty.block_size();
        let zeros = round_trip(ty, &vec![0.0; n]);
        prop_assert!(zeros.iter().all(|v| *v == 0.0), "{} zeros -> {:?}", ty, &zeros[..4]);
        let y = round_trip(ty, &vec![c; n]);
        for v in y {
            prop_assert!((v - c).abs() <= 0.05 * c.abs() + 1e-6, "{} constant {} -> {}", ty, c, v);
        }
    }

    /// Any magnitude and any bit pattern (NaN, ±inf, subnormals, 1e38)
    /// quantizes and dequantizes without panicking and with the right sizes.
    #[test]
    fn extreme_and_non_finite_inputs_do_not_panic(ty in any_supported(), bits in prop::collection::vec(any::<u32>(), 256), exp in -40i32..39) {
        let scaled: Vec<f32> = bits.iter().map(|b| (*b as f32 / u32::MAX as f32 - 0.5) * 10f32.powi(exp)).collect();
        let raw: Vec<f32> = bits.iter().map(|b| f32::from_bits(*b)).collect();
        for x in [scaled, raw] {
            let q = quantize(ty, &x, 256).unwrap();
            prop_assert_eq!(q.len(), 256 / ty.block_size() * ty.type_size());
            prop_assert_eq!(dequantize(ty, &q, 256).unwrap().len(), 256);
        }
    }

    /// Arbitrary bytes dequantize without panicking.
    #[test]
    fn arbitrary_bytes_dequantize(ty in any_supported(), seed in any::<u64>()) {
        let mut s = seed;
        let bytes: Vec<u8> = (0..4 * ty.type_size()).map(|_| { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 56) as u8 }).collect();
        prop_assert_eq!(dequantize(ty, &bytes, 4 * ty.block_size()).unwrap().len(), 4 * ty.block_size());
    }
}

/// Magnitudes beyond the f16 range of the scales: documented behaviour.
#[test]
fn scales_saturate_to_infinity_and_tiny_blocks_flush_to_zero() {
    // Q8_0's scale max/127 = 1e6 overflows f16: the values come back infinite
    let y = round_trip(GgmlType::Q8_0, &[1.27e8; 32]);
    assert!(y.iter().all(|v| v.is_infinite()), "{y:?}");
    // a block far below f16's smallest subnormal comes back as zeros
    let y = round_trip(GgmlType::Q8_0, &[1e-12; 32]);
    assert!(y.iter().all(|v| *v == 0.0), "{y:?}");
    // NaN in a block: no panic; the block's scale is NaN or the NaN is lost
    let mut x = vec![1.0f32; 256];
    x[3] = f32::NAN;
    for &ty in SUPPORTED_TYPES {
        let _ = round_trip(ty, &x);
    }
}
