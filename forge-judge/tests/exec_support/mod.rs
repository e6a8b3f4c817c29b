//! Shared by the sandbox and HumanEval tests: the peers folder and leftover checks.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// `FORGE_PEERS_DIR` or `<crate>/../.forge/peers`.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

/// `path` if it exists; otherwise fails under `FORGE_REQUIRE_PEERS=1`, else prints the
/// skip line and returns `None`.
pub fn peer(path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("FORGE_REQUIRE_PEERS").as_deref() != Ok("1"),
        "peer missing at {} and FORGE_REQUIRE_PEERS=1",
        path.display()
    );
    println!("skipped: peers not installed (cargo xtask peers)");
    None
}

/// Pids of live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
            && String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// `forge-judge-*` directories in the temporary directory.
pub fn sandbox_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("forge-judge-"))
                })
                .collect()
        })
        .unwrap_or_default()
}
