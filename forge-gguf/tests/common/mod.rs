//! Shared test helpers: where the peers are, and whether their absence is a
//! failure or a skip.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// The SmolLM2 GGUF file the real-file tests use.
pub const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The peers directory: `FORGE_PEERS_DIR`, else `<workspace>/.forge/peers`.
pub fn peers_dir() -> PathBuf {
    match std::env::var_os("FORGE_PEERS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"),
    }
}

/// `peers_dir()/rel` if it exists. If it does not: with `FORGE_REQUIRE_PEERS=1`
/// (set by `cargo xtask test`) this panics, telling to run `cargo xtask peers`;
/// otherwise it prints the skip notice and returns `None`.
pub fn peer(rel: &str) -> Option<PathBuf> {
    let path = peers_dir().join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("FORGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!(
            "peer {} is missing and FORGE_REQUIRE_PEERS=1: run `cargo xtask peers`",
            path.display()
        );
    }
    eprintln!(
        "skipped: peers not installed (cargo xtask peers); missing {}",
        path.display()
    );
    None
}

/// A fresh path under cargo's per-test temporary directory.
pub fn temp_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("forge-gguf-tests");
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir.join(format!("{}-{name}", std::process::id()))
}
