//! Quantize and dequantize throughput per GGML format, Forge against ggml's C
//! reference (`libggml-base.so` from `cargo xtask peers`) in the same run.
//!
//! Groups `quantize/<type>` and `dequantize/<type>`, parameter = element
//! count (4096 rows × 256 = 1 Mi values), throughput = f32 input/output bytes.
//! Functions: `forge` (single-threaded, the fair comparison: the C functions
//! are single-threaded), `forge-rayon` (the default API on the rayon pool) and
//! `ggml-c`. Without the library only Forge is measured.

#[path = "../tests/common/ggml_c.rs"]
mod ggml_c;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forge_quant::{
    GgmlType, dequantize_into, dequantize_row_into, quantize, quantize_into, quantize_row_into,
};
use ggml_c::GgmlC;

const N: usize = 4096 * 256;

const TYPES: &[GgmlType] = &[
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
    GgmlType::F16,
    GgmlType::BF16,
];

fn c_library() -> Option<GgmlC> {
    let dir = match std::env::var_os("FORGE_PEERS_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"),
    };
    let path = dir.join("ggml/lib/libggml-base.so");
    match GgmlC::load(&path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!(
                "ggml C reference not available ({}: {e}); benchmarking Forge only (run `cargo xtask peers`)",
                path.display()
            );
            None
        }
    }
}

/// A weight-like signal: a smooth component plus deterministic noise.
fn signal() -> Vec<f32> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    (0..N)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let noise = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            0.02 * ((i as f32) * 0.001).sin() + 0.05 * noise
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let lib = c_library();
    let x = signal();
    for &ty in TYPES {
        let name = ty.name().to_lowercase().replace("_k", "_K");
        let n_bytes = N / ty.block_size() * ty.type_size();
        let blocks = quantize(ty, &x, 256).expect("quantize");

        if let Some(lib) = &lib {
            let mut theirs = vec![0u8; n_bytes];
            lib.quantize(ty, &x, &mut theirs);
            if theirs != blocks {
                eprintln!("warning: {ty}: Forge and ggml-c quantize to different bytes");
            }
        }

        let mut g = c.benchmark_group(format!("quantize/{name}"));
        g.throughput(Throughput::Bytes((N * 4) as u64));
        let mut dst = vec![0u8; n_bytes];
        g.bench_function(criterion::BenchmarkId::new("forge", N), |b| {
            b.iter(|| quantize_row_into(ty, black_box(&x), &mut dst).expect("quantize"))
        });
        g.bench_function(criterion::BenchmarkId::new("forge-rayon", N), |b| {
            b.iter(|| quantize_into(ty, black_box(&x), 256, &mut dst).expect("quantize"))
        });
        if let Some(lib) = &lib {
            let f = lib.quantize_fn(ty);
            g.bench_function(criterion::BenchmarkId::new("ggml-c", N), |b| {
                // SAFETY: x holds N values and dst the bytes of N values of ty
                b.iter(|| unsafe { f(black_box(x.as_ptr()), dst.as_mut_ptr(), N as i64) })
            });
        }
        g.finish();

        let mut g = c.benchmark_group(format!("dequantize/{name}"));
        g.throughput(Throughput::Bytes((N * 4) as u64));
        let mut out = vec![0f32; N];
        g.bench_function(criterion::BenchmarkId::new("forge", N), |b| {
            b.iter(|| dequantize_row_into(ty, black_box(&blocks), &mut out).expect("dequantize"))
        });
        g.bench_function(criterion::BenchmarkId::new("forge-rayon", N), |b| {
            b.iter(|| dequantize_into(ty, black_box(&blocks), &mut out).expect("dequantize"))
        });
        if let Some(lib) = &lib {
            let f = lib.dequantize_fn(ty);
            g.bench_function(criterion::BenchmarkId::new("ggml-c", N), |b| {
                // SAFETY: blocks holds the bytes of N values of ty and out N values
                b.iter(|| unsafe { f(black_box(blocks.as_ptr()), out.as_mut_ptr(), N as i64) })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
