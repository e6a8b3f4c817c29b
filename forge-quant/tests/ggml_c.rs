//! Bit-exactness against ggml's C reference (`libggml-base.so`, ggml 0.25.3,
//! built by `cargo xtask peers` with `-O3` and no native tuning):
//! the k-quants quantize to the same bytes as `quantize_row_q*_K_ref`, the
//! 32-value formats as `quantize_row_q*_ref`, and every format dequantizes to
//! the same bits as `dequantize_row_*`.

mod common;

use common::ggml_c::GgmlC;
use common::{Rng, assert_bits_eq, assert_blocks_eq, mixed_signal};
use forge_quant::{GgmlType, dequantize, quantize};

const KQUANTS: &[GgmlType] = &[
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];
const LEGACY: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

fn ggml() -> Option<GgmlC> {
    let path = common::peer("ggml/lib/libggml-base.so")?;
    Some(GgmlC::load(&path).expect("load libggml-base.so"))
}

fn c_quantize(c: &GgmlC, ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    c.quantize(ty, x, &mut out);
    out
}

/// Signals for the quantizer comparison: the mixed test signal, gaussian rows
/// like weight matrices, and rows with outliers.
fn signals(seed: u64, block: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let gaussian: Vec<f32> = (0..2048 * block).map(|_| rng.normal() * 0.02).collect();
    let outliers: Vec<f32> = (0..512 * block)
        .map(|i| {
            if i % 97 == 0 {
                rng.normal() * 4.0
            } else {
                rng.normal() * 0.05
            }
        })
        .collect();
    vec![mixed_signal(seed, 13 * 32, block), gaussian, outliers]
}

#[test]
fn kquants_quantize_like_llama_cpp_reference() {
    let Some(c) = ggml() else { return };
    for (k, &ty) in KQUANTS.iter().enumerate() {
        for (s, x) in signals(1000 + k as u64, 256).iter().enumerate() {
            let ours = quantize(ty, x, 256).expect("quantize");
            let theirs = c_quantize(&c, ty, x);
            assert_blocks_eq(
                &ours,
                &theirs,
                ty.type_size(),
                &format!("quantize {ty} vs C, signal {s}"),
            );
        }
    }
}

#[test]
fn legacy_formats_quantize_like_ggml_reference() {
    let Some(c) = ggml() else { return };
    for (k, &ty) in LEGACY.iter().enumerate() {
        for (s, x) in signals(2000 + k as u64, 32).iter().enumerate() {
            let ours = quantize(ty, x, 32).expect("quantize");
            let theirs = c_quantize(&c, ty, x);
            assert_blocks_eq(
                &ours,
                &theirs,
                ty.type_size(),
                &format!("quantize {ty} vs C, signal {s}"),
            );
        }
    }
}

#[test]
fn halves_convert_like_ggml_except_nan_payloads() {
    let Some(c) = ggml() else { return };
    let mut rng = Rng::new(3000);
    // random bit patterns with NaNs replaced by the canonical quiet NaN: the
    // only documented difference is how non-canonical NaN payloads are kept
    let x: Vec<f32> = (0..1 << 16)
        .map(|_| f32::from_bits(rng.next_u64() as u32))
        .map(|v| if v.is_nan() { f32::NAN } else { v })
        .collect();
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let ours = quantize(ty, &x, x.len()).expect("quantize");
        let theirs = c_quantize(&c, ty, &x);
        assert_blocks_eq(&ours, &theirs, 2, &format!("f32 -> {ty} vs C"));
    }
}

#[test]
fn every_format_dequantizes_like_ggml_c() {
    let Some(c) = ggml() else { return };
    for (k, &ty) in LEGACY.iter().chain(KQUANTS).enumerate() {
        let mut rng = Rng::new(4000 + k as u64);
        let n_blocks = if ty.block_size() == 256 { 96 } else { 768 };
        let mut bytes = rng.bytes(n_blocks * ty.type_size());
        let x = mixed_signal(5000 + k as u64, n_blocks, ty.block_size());
        bytes.extend(quantize(ty, &x, ty.block_size()).expect("quantize"));
        let n = bytes.len() / ty.type_size() * ty.block_size();
        let ours = dequantize(ty, &bytes, n).expect("dequantize");
        let mut theirs = vec![0f32; n];
        c.dequantize(ty, &bytes, &mut theirs);
        assert_bits_eq(&ours, &theirs, &format!("dequantize {ty} vs C"));
    }
    // halves: every pattern except signalling NaNs, which ggml's f16 -> f32
    // quiets (a float multiply) while numpy and forge-quant keep them as is
    let halves: Vec<u16> = (0..=u16::MAX)
        .filter(|h| !(h & 0x7c00 == 0x7c00 && h & 0x3ff != 0 && h & 0x200 == 0))
        .collect();
    let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let ours = dequantize(ty, &bytes, halves.len()).expect("dequantize");
        let mut theirs = vec![0f32; halves.len()];
        c.dequantize(ty, &bytes, &mut theirs);
        assert_bits_eq(&ours, &theirs, &format!("dequantize {ty} vs C"));
    }
}
