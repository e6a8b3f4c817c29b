//! LoRA and rsLoRA / RoRA initialisation.
//!
//! - LoRA: Hu et al. 2021, *LoRA: Low-Rank Adaptation of Large Language
//!   Models* (arXiv:2106.09685), eq. (3): `h = W₀x + ΔWx = W₀x + (α/r)·BAx`,
//!   `A` random (here Kaiming-uniform with `a = √5` as PEFT: `U(−1/√in, 1/√in)`),
//!   `B = 0`, so `ΔW = 0` at step 0.
//! - rsLoRA: Kalajdzievski 2023, *A Rank Stabilization Scaling Factor for
//!   Fine-Tuning with LoRA* (arXiv:2312.03732): `γ_r = α/√r` keeps the
//!   adapter's learning dynamics rank-stable; RoRA (arXiv:2501.04315) uses
//!   the same `α/√r` scale. Only the scale differs from LoRA.

use mlx_rs::Array;

use crate::error::Result;
use crate::util::{SplitMix64, fnv1a};

/// `A ∈ ℝ^{r×in}` uniform in `±1/√in` from a seed and the module name, and
/// `B = 0 ∈ ℝ^{out×r}`.
pub(crate) fn init(
    name: &str,
    rank: usize,
    input: usize,
    output: usize,
    seed: u64,
) -> Result<(Array, Array)> {
    let mut rng = SplitMix64::new(seed ^ fnv1a(name));
    let bound = 1.0 / (input as f64).sqrt();
    let a: Vec<f32> = (0..rank * input)
        .map(|_| (bound * (2.0 * rng.next_f64() - 1.0)) as f32)
        .collect();
    let a = Array::from_slice(&a, &[rank as i32, input as i32]);
    let b = mlx_rs::ops::zeros::<f32>(&[output as i32, rank as i32])?;
    Ok((a, b))
}
