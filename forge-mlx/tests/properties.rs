//! Property tests of MLX math identities over random shapes and data.
//! MLX is not thread-safe; `cargo xtask test` runs this with one test thread.

use forge_mlx::mlx_rs::ops;
use forge_mlx::smoke::{self, to_host_2d};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// f32 matmul agrees with the f64 product for any shape.
    #[test]
    fn matmul_agrees_with_f64(m in 1i32..48, k in 1i32..96, n in 1i32..48, seed in any::<u64>()) {
        let check = smoke::matmul_check(m, k, n, seed).unwrap();
        prop_assert!(check.error < 1e-5, "{}", check);
    }

    /// Affine 4-bit quantization rounds to nearest: each group g stores a
    /// grid `b_g + s_g·q`, `q ∈ 0..=15`, and every dequantized weight is the
    /// grid point nearest to the original (ties either way). MLX also places 0
    /// exactly on the grid (`−b_g/s_g` is an integer), which is why the grid can
    /// be slightly narrower than the group's range and the error can exceed
    /// half a step at the clipped end.
    #[test]
    fn q4_dequantizes_to_the_nearest_grid_point(rows in 1i32..8, groups in 1i32..5, scale in 0.01f32..100.0, seed in any::<u64>()) {
        const GROUP: usize = 64;
        let w = ops::multiply(smoke::normal(&[rows, groups * GROUP as i32], seed).unwrap(), forge_mlx::mlx_rs::Array::from_f32(scale)).unwrap();
        let (wq, scales, biases) = ops::quantize(&w, GROUP as i32, 4).unwrap();
        let deq = ops::dequantize(&wq, &scales, &biases, GROUP as i32, 4).unwrap();
        let (w, deq) = (to_host_2d(&w, "w").unwrap(), to_host_2d(&deq, "deq").unwrap());
        let (s, b) = (to_host_2d(&scales, "scales").unwrap(), to_host_2d(&biases, "biases").unwrap());
        let mut worst_steps = 0.0f64;
        for ((i, j), &v) in w.indexed_iter() {
            let (sg, bg) = (s[(i, j / GROUP)], b[(i, j / GROUP)]);
            let nearest = (0..16).map(|q| (v - (bg + sg * f64::from(q))).abs()).fold(f64::INFINITY, f64::min);
            let err = (v - deq[(i, j)]).abs();
            prop_assert!(err <= nearest + 1e-5 * (v.abs() + sg.abs()), "w[{i},{j}]={v} ŵ={} nearest error {nearest}", deq[(i, j)]);
            worst_steps = worst_steps.max(err / sg.abs());
        }
        for (&sg, &bg) in s.iter().zip(b.iter()) {
            let zero_at = -bg / sg;
            prop_assert!((zero_at - zero_at.round()).abs() < 1e-3 && (0.0..=15.0).contains(&zero_at.round()), "0 not on the grid: s={sg} b={bg}");
        }
        // 4 bits lose information: some weight is off by a visible fraction of a step.
        prop_assert!(worst_steps > 0.05 && worst_steps < 1.5, "worst error {worst_steps} steps");
    }
}
