//! The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models
//! Trained on Code", arXiv 2107.03374, §2.1):
//!
//! ```text
//! pass@k = 1 − C(n−c, k) / C(n, k) = 1 − ∏_{i=n−c+1}^{n} (1 − k / i)
//! ```
//!
//! for n samples of which c pass. The product form never forms the binomials, so it stays
//! exact in f64 for any n.

use crate::error::{Error, Result};

/// Unbiased pass@k for `n` samples with `c` correct.
///
/// ```
/// # fn main() -> forge_judge::Result<()> {
/// assert_eq!(forge_judge::pass_at_k(10, 0, 1)?, 0.0);
/// assert!((forge_judge::pass_at_k(10, 3, 1)? - 0.3).abs() < 1e-12);
/// # Ok(()) }
/// ```
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Result<f64> {
    if k == 0 || k > n || c > n {
        return Err(Error::InvalidArgument(format!(
            "pass@k needs 0 < k <= n and c <= n, got n={n} c={c} k={k}"
        )));
    }
    if n - c < k {
        return Ok(1.0);
    }
    let mut prod = 1.0f64;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    Ok(1.0 - prod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom(n: u64, k: u64) -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    #[test]
    fn equals_binomial_form() {
        for n in 1..=30u64 {
            for c in 0..=n {
                for k in 1..=n {
                    let exact = 1.0 - binom(n - c, k) / binom(n, k);
                    let got = pass_at_k(n, c, k).expect("valid");
                    assert!(
                        (got - exact).abs() < 1e-12,
                        "n={n} c={c} k={k}: {got} vs {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn exact_values() {
        assert_eq!(pass_at_k(5, 5, 3).expect("valid"), 1.0);
        // 1 - C(2,2)/C(4,2) = 1 - 1/6
        assert!((pass_at_k(4, 2, 2).expect("valid") - 5.0 / 6.0).abs() < 1e-15);
        // large n stays finite: 1 - C(990,100)/C(1000,100)
        let v = pass_at_k(1000, 10, 100).expect("valid");
        assert!(v > 0.65 && v < 0.66, "{v}");
        assert!(pass_at_k(3, 1, 4).is_err());
        assert!(pass_at_k(3, 4, 1).is_err());
    }
}
