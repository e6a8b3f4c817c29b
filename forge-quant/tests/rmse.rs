//! Round-trip error ceilings per type, in the style of llama.cpp's
//! `test-quantize-fns`: quantize a deterministic synthetic signal, dequantize,
//! and require the RMSE to stay under a documented ceiling. The ceilings are
//! the measured values (see `docs/crates/forge-quant.md`) plus about 10 %,
//! so a quantizer that gets worse fails here even when it still matches no peer.

mod common;

use forge_quant::{GgmlType, dequantize, quantize};

/// 64 rows of 256: llama.cpp's `0.1 + 2·cos(i + offset)` followed by
/// gaussian rows (σ = 1) drawn from a seeded PRNG.
fn signal() -> Vec<f32> {
    let mut x: Vec<f32> = (0..32 * 256)
        .map(|i| 0.1 + 2.0 * (i as f32 + 0.5).cos())
        .collect();
    let mut rng = common::Rng::new(42);
    x.extend((0..32 * 256).map(|_| rng.normal()));
    x
}

fn rmse(ty: GgmlType, x: &[f32]) -> f64 {
    let q = quantize(ty, x, 256).expect("quantize");
    let y = dequantize(ty, &q, x.len()).expect("dequantize");
    let se: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    (se / x.len() as f64).sqrt()
}

/// `(type, RMSE ceiling)`, from the finest to the coarsest.
const CEILINGS: &[(GgmlType, f64)] = &[
    (GgmlType::F16, 0.000_27),
    (GgmlType::BF16, 0.002_3),
    (GgmlType::Q8_0, 0.005_5),
    (GgmlType::Q6_K, 0.019),
    (GgmlType::Q5_1, 0.040),
    (GgmlType::Q5_0, 0.044),
    (GgmlType::Q5_K, 0.038),
    (GgmlType::Q4_1, 0.083),
    (GgmlType::Q4_0, 0.087),
    (GgmlType::Q4_K, 0.073),
    (GgmlType::Q3_K, 0.172),
    (GgmlType::Q2_K, 0.325),
];

fn ceiling(ty: GgmlType) -> f64 {
    CEILINGS
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, c)| *c)
        .expect("type has a ceiling")
}

#[test]
fn round_trip_rmse_is_under_each_types_ceiling() {
    let x = signal();
    let mut report = String::new();
    let mut failures = Vec::new();
    for &(ty, max) in CEILINGS {
        let e = rmse(ty, &x);
        report.push_str(&format!("{ty:>5}: rmse {e:.6} (ceiling {max})\n"));
        if e > max {
            failures.push(format!("{ty}: rmse {e:.6} > ceiling {max}"));
        }
    }
    println!("{report}");
    assert!(failures.is_empty(), "{failures:?}\n{report}");
}

#[test]
fn ceilings_and_errors_order_by_bits_per_value() {
    let x = signal();
    let ladder = [
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::Q5_K,
        GgmlType::Q4_K,
        GgmlType::Q3_K,
        GgmlType::Q2_K,
    ];
    for pair in ladder.windows(2) {
        let (fine, coarse) = (pair[0], pair[1]);
        assert!(ceiling(fine) < ceiling(coarse), "ceiling {fine} < {coarse}");
        assert!(rmse(fine, &x) < rmse(coarse, &x), "rmse {fine} < {coarse}");
    }
}
