//! Shared helpers for forge-model's integration tests.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The peer tools directory: `FORGE_PEERS_DIR`, else `../.forge/peers`
/// beside this crate.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

/// Prints the skip line, or panics when `FORGE_REQUIRE_PEERS=1`.
pub fn skip_or_fail(what: &str) {
    if std::env::var("FORGE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{what}: run cargo xtask peers");
    }
    println!("skipped: peers not installed (cargo xtask peers)");
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF from the peers, or `None` after the
/// skip line.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = peers_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    skip_or_fail(&format!("SmolLM2 GGUF not found at {}", path.display()));
    None
}

/// The gguf-py python (`venv/bin/python` of the peers), or `None` after the
/// skip line.
pub fn gguf_py_python() -> Option<PathBuf> {
    let python = peers_dir().join("venv/bin/python");
    let works = python.is_file()
        && Command::new(&python)
            .args(["-c", "import gguf"])
            .output()
            .is_ok_and(|o| o.status.success());
    if works {
        return Some(python);
    }
    skip_or_fail(&format!("gguf-py not found at {}", python.display()));
    None
}

/// The node-llama-cpp peer folder (with `node_modules/node-llama-cpp`) and
/// the `node` binary, or `None` after the skip line.
pub fn node_llama_cpp() -> Option<(PathBuf, PathBuf)> {
    let dir = peers_dir().join("node-llama-cpp");
    let node = std::env::var_os("FORGE_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"));
    let works = dir.join("node_modules/node-llama-cpp").is_dir()
        && Command::new(&node)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if works {
        return Some((dir, node));
    }
    skip_or_fail(&format!("node-llama-cpp not found at {}", dir.display()));
    None
}

/// The mlx-lm python, or `None` after printing the skip line (or a panic
/// when `FORGE_REQUIRE_PEERS=1`).
pub fn mlx_lm_python() -> Option<PathBuf> {
    let python = peers_dir().join("mlx-lm-venv/bin/python");
    let works = python.is_file()
        && Command::new(&python)
            .args(["-c", "import mlx_lm"])
            .output()
            .is_ok_and(|o| o.status.success());
    if works {
        return Some(python);
    }
    if std::env::var("FORGE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "mlx-lm peer not installed at {}: run cargo xtask peers",
            python.display()
        );
    }
    println!("skipped: peers not installed (cargo xtask peers)");
    None
}

/// mlx-lm's logits (one row per position) and greedy continuation.
pub struct Reference {
    pub logits: Vec<Vec<f32>>,
    pub greedy: Vec<u32>,
    pub version: String,
}

/// Runs `tests/reference/mlx_lm_logits.py` on `model_dir`.
pub fn mlx_lm_reference(
    python: &Path,
    model_dir: &Path,
    ids: &[u32],
    greedy_tokens: usize,
) -> Reference {
    let tmp = tempfile::tempdir().expect("temp dir");
    let request = tmp.path().join("request.json");
    let response = tmp.path().join("response.json");
    let body = serde_json::json!({
        "model_dir": model_dir,
        "ids": ids,
        "greedy_tokens": greedy_tokens,
    });
    std::fs::write(&request, body.to_string()).expect("write request");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/mlx_lm_logits.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&request)
        .arg(&response)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "mlx-lm reference failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&response).expect("read response")).expect("json");
    let logits = v["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect();
    let greedy = v["greedy"]
        .as_array()
        .expect("greedy")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect();
    Reference {
        logits,
        greedy,
        version: format!("mlx-lm {} / mlx {}", v["mlx_lm_version"], v["mlx_version"]),
    }
}

/// Max |a - b| over two equally shaped matrices.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "row length");
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        })
        .fold(0.0f32, f32::max)
}

/// Runs `tests/reference/llama_cpp.mjs` with `request` (see the script for
/// the fields) and returns its JSON response.
pub fn llama_cpp_reference(
    dir: &Path,
    node: &Path,
    request: &serde_json::Value,
) -> serde_json::Value {
    let tmp = tempfile::tempdir().expect("temp dir");
    let req = tmp.path().join("request.json");
    let resp = tmp.path().join("response.json");
    std::fs::write(&req, request.to_string()).expect("write request");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/llama_cpp.mjs");
    let out = Command::new(node)
        .current_dir(dir)
        .arg(&script)
        .arg(&req)
        .arg(&resp)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "llama.cpp reference failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&resp).expect("read response")).expect("json")
}

/// The lines of a JSONL file under `tests/data`, parsed.
pub fn jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path)
        .expect("read corpus")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}
