//! A seeded SplitMix64 generator (Steele, Lea, Flood: "Fast splittable
//! pseudorandom number generators", OOPSLA 2014):
//! `state += 0x9e3779b97f4a7c15; output = mix64(state)`.
//!
//! Every random choice of the dataset builders draws from a generator seeded
//! with `mix64(seed ^ fnv1a(unit id))`, so the choices of one unit do not depend
//! on the order in which units are processed (parallel-safe, deterministic).

use crate::hash::{fnv1a, mix64};

/// A small deterministic random number generator.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one item: the global seed mixed with the item's key.
    pub(crate) fn for_key(seed: u64, key: &str) -> Self {
        Self::new(mix64(seed ^ fnv1a(key.as_bytes())))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias < 2^-64·n).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sequence() {
        // SplitMix64 reference output for seed 1234567.
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn below_and_f64_in_range() {
        let mut r = SplitMix64::for_key(7, "x");
        for n in 1..100 {
            assert!(r.below(n) < n);
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
