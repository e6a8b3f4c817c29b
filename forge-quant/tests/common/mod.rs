//! Shared helpers of the integration tests: locating the peers, a seeded
//! PRNG and test signals, the gguf-py runner. (Each test binary uses a subset.)
#![allow(dead_code, unreachable_pub)]

pub mod ggml_c;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The peers folder: `FORGE_PEERS_DIR`, else `<workspace>/.forge/peers`.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("FORGE_PEERS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"),
    }
}

/// `peers_dir()/rel` if it exists. Otherwise: panics when
/// `FORGE_REQUIRE_PEERS=1` (set by `cargo xtask test`), else prints the skip
/// line and returns `None`.
pub fn peer(rel: &str) -> Option<PathBuf> {
    let path = peers_dir().join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("FORGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!(
            "peer {} is missing; run `cargo xtask peers`",
            path.display()
        );
    }
    println!("skipped: peers not installed (cargo xtask peers)");
    None
}

/// The gguf-py 0.19 interpreter.
pub fn python() -> Option<PathBuf> {
    peer("venv/bin/python")
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF file.
pub fn smollm2() -> Option<PathBuf> {
    peer("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Runs `tests/reference/gguf_py_ref.py` on a JSON job list.
pub fn run_gguf_py(python: &Path, jobs: &serde_json::Value, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/gguf_py_ref.py");
    let jobs_path = dir.join("jobs.json");
    std::fs::write(
        &jobs_path,
        serde_json::to_vec_pretty(jobs).expect("jobs serialize"),
    )
    .expect("write jobs.json");
    let out = Command::new(python)
        .arg(&script)
        .arg(&jobs_path)
        .output()
        .expect("start gguf-py reference script");
    assert!(
        out.status.success(),
        "gguf_py_ref.py failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `f32` values little-endian.
pub fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("write f32 file");
}

/// Reads little-endian `f32` values.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).expect("read f32 file");
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Asserts two `f32` slices are bitwise identical, naming the first difference.
pub fn assert_bits_eq(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    if let Some(i) = ours
        .iter()
        .zip(theirs)
        .position(|(a, b)| a.to_bits() != b.to_bits())
    {
        let n_diff = ours
            .iter()
            .zip(theirs)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        panic!(
            "{what}: {n_diff} of {} values differ; first at {i}: ours {:e} ({:#010x}), peer {:e} ({:#010x})",
            ours.len(),
            ours[i],
            ours[i].to_bits(),
            theirs[i],
            theirs[i].to_bits()
        );
    }
}

/// Asserts two byte buffers are identical, naming the first differing block.
pub fn assert_blocks_eq(ours: &[u8], theirs: &[u8], type_size: usize, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    let bad: Vec<usize> = ours
        .chunks(type_size)
        .zip(theirs.chunks(type_size))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    if let Some(&i) = bad.first() {
        let r = i * type_size..(i + 1) * type_size;
        panic!(
            "{what}: {} of {} blocks differ; first is block {i}:\n ours {:02x?}\n peer {:02x?}",
            bad.len(),
            ours.len() / type_size,
            &ours[r.clone()],
            &theirs[r]
        );
    }
}

/// The position-weighted checksum `Σ bits(x_i)·(2i+1) mod 2^64` that the
/// reference script computes with numpy (one changed value always changes it).
pub fn checksum(v: &[f32]) -> u64 {
    v.iter().enumerate().fold(0u64, |acc, (i, x)| {
        acc.wrapping_add(u64::from(x.to_bits()).wrapping_mul(2 * i as u64 + 1))
    })
}

/// SplitMix64: a tiny deterministic PRNG (no external crate, fixed output).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller, in f64).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Test signals for quantizer comparisons: `n_blocks` blocks of `block`
/// values mixing gaussian, uniform, heavy-tailed, zero, constant, tiny, huge,
/// exact-tie and single-spike blocks. Deterministic for a seed.
pub fn mixed_signal(seed: u64, n_blocks: usize, block: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n_blocks * block);
    for b in 0..n_blocks {
        let kind = b % 13;
        let scale = [1.0f32, 0.02, 3.0, 1e-3, 40.0][b % 5];
        for i in 0..block {
            let v = match kind {
                0..=2 => rng.normal() * scale,
                3 => rng.uniform() * 2.0 - 1.0,
                4 => rng.uniform() * scale + 0.5 * scale, // all positive
                5 => -(rng.uniform() * scale) - 0.1,      // all negative
                6 => 0.0,
                7 => 0.75 * scale,                                 // constant
                8 => rng.normal() * 1e-6,                          // tiny
                9 => rng.normal() * 3e4,                           // huge (f16 range)
                10 => ((rng.next_u64() % 33) as f32 - 16.0) * 0.5, // exact halves: ties
                11 => {
                    if i == block / 3 {
                        7.5
                    } else {
                        rng.normal() * 0.01
                    }
                } // one spike
                // scale exactly 1 for Q8_0 (max 127) with half-integers: round-half ties
                _ => {
                    if i == 0 {
                        127.0
                    } else {
                        (rng.next_u64() % 254) as f32 - 126.5
                    }
                }
            };
            out.push(v);
        }
    }
    out
}
