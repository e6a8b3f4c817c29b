//! The MLX build computes correctly: each check against an independent
//! reference (see `forge_mlx::smoke` for the math). MLX is not thread-safe;
//! `cargo xtask test` runs this file with one test thread.

use forge_mlx::mlx_rs::{Array, random};
use forge_mlx::smoke::{self, Check};
use forge_mlx::{BlasBackend, runtime_info};

fn assert_passed(check: &Check) {
    assert!(check.passed(), "{check}");
}

#[test]
fn matmul_matches_ndarray_f64_reference() {
    for (m, k, n) in [(1, 1, 1), (17, 33, 9), (256, 384, 128)] {
        let check = smoke::matmul_check(m, k, n, 7).unwrap();
        assert!(check.error < 1e-5, "{check}");
    }
}

#[test]
fn matmul_check_detects_a_wrong_product() {
    // The reference must disagree with a different product: guard against a
    // check that cannot fail.
    let a = smoke::normal(&[8, 8], 1).unwrap();
    let b = smoke::normal(&[8, 8], 2).unwrap();
    let wrong = smoke::to_host_2d(&b.matmul(&a).unwrap(), "ba").unwrap();
    let right = smoke::to_host_2d(&a, "a")
        .unwrap()
        .dot(&smoke::to_host_2d(&b, "b").unwrap());
    assert!(smoke::relative_error(wrong.view(), right.view()) > 0.1);
}

#[test]
fn svd_reconstructs_and_is_orthogonal() {
    for (m, n) in [(64, 64), (96, 64), (40, 72)] {
        for check in smoke::svd_check(m, n, 11).unwrap() {
            assert_passed(&check);
        }
    }
}

#[test]
fn quantized_matmul_is_exact_on_dequantized_weights_and_noise_is_as_predicted() {
    let [kernel, noise] = smoke::quantized_matmul_check(256, 512, 8, 5).unwrap();
    assert_passed(&kernel);
    assert_passed(&noise);
    // 4-bit rounding noise is real: the ratio is near 1, not near 0.
    assert!(noise.error > 0.75, "{noise}");
}

#[test]
fn value_and_grad_matches_finite_differences() {
    for seed in [3, 4] {
        assert_passed(&smoke::grad_check(seed).unwrap());
    }
}

fn host(a: &Array) -> Vec<f32> {
    a.try_as_slice::<f32>().expect("f32 array").to_vec()
}

#[test]
fn seeding_is_reproducible() {
    // Explicit keys.
    let a = host(&smoke::normal(&[4, 5], 123).unwrap());
    let b = host(&smoke::normal(&[4, 5], 123).unwrap());
    let c = host(&smoke::normal(&[4, 5], 124).unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The global generator after `random::seed`.
    random::seed(9).unwrap();
    let d = host(&random::normal::<f32>(&[16], None, None, None).unwrap());
    random::seed(9).unwrap();
    let e = host(&random::normal::<f32>(&[16], None, None, None).unwrap());
    assert_eq!(d, e);
    // A seeded RandomState.
    let mut s1 = random::RandomState::with_seed(5).unwrap();
    let mut s2 = random::RandomState::with_seed(5).unwrap();
    assert_eq!(
        host(&random::normal::<f32>(&[8], None, None, &s1.next_key().unwrap()).unwrap()),
        host(&random::normal::<f32>(&[8], None, None, &s2.next_key().unwrap()).unwrap())
    );
}

#[test]
fn time_seeded_random_state_links_and_runs() {
    // RandomState::new() calls mach_approximate_time, which forge-mlx provides
    // off Apple platforms; this test fails to link without it.
    let mut state = random::RandomState::new().unwrap();
    let key = state.next_key().unwrap();
    let x = random::normal::<f32>(&[1000], None, None, &key).unwrap();
    let v = host(&x);
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean.abs() < 0.2, "mean {mean}");
}

#[test]
fn cpu_matmul_runs_on_an_optimised_blas() {
    let info = runtime_info();
    // Force MLX's BLAS into the process before looking.
    smoke::matmul_check(8, 8, 8, 1).unwrap();
    let info = if matches!(info.blas, BlasBackend::Unknown) {
        runtime_info()
    } else {
        info
    };
    assert!(
        matches!(
            info.blas,
            BlasBackend::OpenBlas(_) | BlasBackend::Accelerate
        ),
        "MLX's CPU matmul would use {} (run `cargo xtask setup`)",
        info.blas
    );
}

#[test]
fn full_smoke_report_passes() {
    let report = smoke::run(42).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.checks.len(), 6);
}
