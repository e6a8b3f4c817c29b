//! MLX CPU f32 matmul throughput beside ndarray + the system BLAS, in one run.
//!
//! Target (issue 2): MLX within 0.8x of OpenBLAS. The PyPI MLX wheel alone
//! calls a reference BLAS that was measured about 9x slower; `cargo xtask
//! setup` links OpenBLAS ahead of it. `cargo xtask bench` prints the table
//! with ratios. Throughput is counted in FLOPs (2·n³ per product).

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use forge_mlx::mlx_rs::Array;
use forge_mlx::smoke;
use ndarray::Array2;

// The peer: the system BLAS's sgemm on ndarray storage, i.e. exactly what
// ndarray's `blas` feature calls for `dot`. Declared here rather than through
// that feature so that no other test binary gets a direct BLAS reference (the
// forge-mlx tests must see OpenBLAS only through the setup's link flags).
#[cfg_attr(not(target_os = "macos"), link(name = "openblas"))]
#[cfg_attr(target_os = "macos", link(name = "Accelerate", kind = "framework"))]
unsafe extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        layout: i32,
        trans_a: i32,
        trans_b: i32,
        m: i32,
        n: i32,
        k: i32,
        alpha: f32,
        a: *const f32,
        lda: i32,
        b: *const f32,
        ldb: i32,
        beta: f32,
        c: *mut f32,
        ldc: i32,
    );
}
const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;

/// `a · b` for square row-major matrices through the system sgemm.
fn blas_matmul(a: &Array2<f32>, b: &Array2<f32>) -> Array2<f32> {
    let n = a.nrows();
    let ni = i32::try_from(n).expect("size");
    let mut c = Array2::<f32>::zeros((n, n));
    let (a, b) = (
        a.as_slice().expect("contiguous"),
        b.as_slice().expect("contiguous"),
    );
    // SAFETY: a, b, c are contiguous n×n row-major buffers that outlive the call.
    unsafe {
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            CBLAS_NO_TRANS,
            CBLAS_NO_TRANS,
            ni,
            ni,
            ni,
            1.0,
            a.as_ptr(),
            ni,
            b.as_ptr(),
            ni,
            0.0,
            c.as_mut_ptr(),
            ni,
        );
    }
    c
}

const PEER: &str = if cfg!(target_os = "macos") {
    "ndarray+accelerate"
} else {
    "ndarray+openblas"
};

fn host_f32(a: &Array) -> Array2<f32> {
    let shape = a.shape();
    let dims = (shape[0] as usize, shape[1] as usize);
    Array2::from_shape_vec(dims, a.try_as_slice::<f32>().expect("f32 array").to_vec())
        .expect("shape")
}

fn matmul(c: &mut Criterion) {
    eprintln!("MLX runtime: {}", forge_mlx::runtime_info());
    let mut group = c.benchmark_group("matmul_f32_gflops");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for n in [512_i32, 1024, 2048] {
        let a = smoke::normal(&[n, n], 1).expect("a");
        let b = smoke::normal(&[n, n], 2).expect("b");
        a.eval().expect("eval");
        b.eval().expect("eval");
        let (ha, hb) = (host_f32(&a), host_f32(&b));
        // Both sides compute the same product.
        let (mlx_c, blas_c) = (
            host_f32(&a.matmul(&b).expect("matmul")),
            blas_matmul(&ha, &hb),
        );
        let diff =
            (&mlx_c - &blas_c).mapv(|v| v * v).sum().sqrt() / blas_c.mapv(|v| v * v).sum().sqrt();
        assert!(diff < 1e-5, "MLX and BLAS disagree at n={n}: {diff}");
        let flops = 2 * u64::from(n.unsigned_abs()).pow(3);
        group.throughput(Throughput::Elements(flops));
        group.bench_with_input(BenchmarkId::new("forge-mlx", n), &n, |bench, _| {
            bench.iter(|| {
                let c = a.matmul(&b).expect("matmul");
                c.eval().expect("eval");
                c
            })
        });
        group.bench_with_input(BenchmarkId::new(PEER, n), &n, |bench, _| {
            bench.iter(|| blas_matmul(&ha, &hb))
        });
    }
    group.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
