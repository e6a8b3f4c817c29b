//! Turns criterion's saved estimates into side-by-side comparison tables.
//!
//! Convention for Forge's benches: within a criterion group, Forge's own
//! implementation has a function id starting with `forge`; every other function
//! is a peer measured in the same run. Each table row is one parameter (size),
//! and each peer gets a `forge / peer` throughput ratio column. A group whose
//! id mentions `flop` reports its element throughput as GFLOP/s.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};

/// One measured benchmark: group, function, parameter and throughput per second.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    pub(crate) group: String,
    pub(crate) function: String,
    pub(crate) param: String,
    /// Throughput in units per second (elements or bytes).
    pub(crate) per_second: f64,
    pub(crate) bytes: bool,
}

fn read_one(new_dir: &Path) -> Result<Option<Measurement>> {
    let bench: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(new_dir.join("benchmark.json")).context("benchmark.json")?,
    )?;
    let est: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(new_dir.join("estimates.json")).context("estimates.json")?,
    )?;
    let ns = est["mean"]["point_estimate"]
        .as_f64()
        .context("no mean estimate")?;
    let (amount, bytes) = match (
        &bench["throughput"]["Elements"],
        &bench["throughput"]["Bytes"],
    ) {
        (e, _) if e.is_number() => (e.as_f64().unwrap_or(0.0), false),
        (_, b) if b.is_number() => (b.as_f64().unwrap_or(0.0), true),
        _ => return Ok(None),
    };
    Ok(Some(Measurement {
        group: bench["group_id"].as_str().unwrap_or_default().to_string(),
        function: bench["function_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        param: bench["value_str"].as_str().unwrap_or_default().to_string(),
        per_second: amount / (ns * 1e-9),
        bytes,
    }))
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Every `*/new/` directory under `dir` written at or after `since` (so stale
/// results of earlier runs never enter a table), read as a measurement with a
/// throughput.
pub(crate) fn collect(dir: &Path, since: SystemTime) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if !path.is_dir()
                || path
                    .file_name()
                    .is_some_and(|n| n == "report" || n == "base")
            {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                if modified(&path.join("estimates.json")).is_none_or(|t| t < since) {
                    continue;
                }
                if let Some(m) =
                    read_one(&path).with_context(|| format!("reading {}", path.display()))?
                {
                    out.push(m);
                }
            } else {
                stack.push(path);
            }
        }
    }
    Ok(out)
}

fn param_key(p: &str) -> (u64, String) {
    (p.parse().unwrap_or(u64::MAX), p.to_string())
}

/// Renders markdown tables, one per group.
pub(crate) fn tables(measurements: &[Measurement]) -> String {
    let mut groups: BTreeMap<&str, Vec<&Measurement>> = BTreeMap::new();
    for m in measurements {
        groups.entry(&m.group).or_default().push(m);
    }
    let mut s = String::new();
    for (group, ms) in groups {
        let flops = group.contains("flop");
        let unit = match (ms.first().is_some_and(|m| m.bytes), flops) {
            (true, _) => "MB/s",
            (false, true) => "GFLOP/s",
            (false, false) => "Melem/s",
        };
        let scale = if unit == "GFLOP/s" { 1e9 } else { 1e6 };
        let functions: BTreeSet<&str> = ms.iter().map(|m| m.function.as_str()).collect();
        let (ours, peers): (Vec<&str>, Vec<&str>) =
            functions.into_iter().partition(|f| f.starts_with("forge"));
        let columns: Vec<&str> = ours.iter().chain(peers.iter()).copied().collect();
        let mut params: Vec<&str> = ms.iter().map(|m| m.param.as_str()).collect();
        params.sort_by_key(|p| param_key(p));
        params.dedup();
        let value = |f: &str, p: &str| {
            ms.iter()
                .find(|m| m.function == f && m.param == p)
                .map(|m| m.per_second / scale)
        };
        s.push_str(&format!(
            "### {group} ({unit}, higher is better)\n\n| size |"
        ));
        for c in &columns {
            s.push_str(&format!(" {c} |"));
        }
        for o in &ours {
            for p in &peers {
                s.push_str(&format!(" {o} / {p} |"));
            }
        }
        s.push_str("\n|---|");
        let n_ratio = ours.len() * peers.len();
        s.push_str(&"---:|".repeat(columns.len() + n_ratio));
        s.push('\n');
        for param in &params {
            s.push_str(&format!("| {param} |"));
            for c in &columns {
                match value(c, param) {
                    Some(v) => s.push_str(&format!(" {v:.1} |")),
                    None => s.push_str(" – |"),
                }
            }
            for o in &ours {
                for p in &peers {
                    match (value(o, param), value(p, param)) {
                        (Some(a), Some(b)) if b > 0.0 => s.push_str(&format!(" {:.2}x |", a / b)),
                        _ => s.push_str(" – |"),
                    }
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s
}

/// Reads the results written to `criterion_dir` since `since` and renders their tables.
pub(crate) fn render(criterion_dir: &Path, since: SystemTime) -> Result<String> {
    let ms = collect(criterion_dir, since)?;
    if ms.is_empty() {
        anyhow::bail!(
            "no criterion results with a throughput under {}",
            criterion_dir.display()
        );
    }
    Ok(tables(&ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(function: &str, param: &str, per_second: f64) -> Measurement {
        Measurement {
            group: "matmul_f32_gflops".into(),
            function: function.into(),
            param: param.into(),
            per_second,
            bytes: false,
        }
    }

    #[test]
    fn ratio_is_forge_over_peer_and_sizes_sort_numerically() {
        let ms = [
            m("ndarray-openblas", "1024", 40e9),
            m("forge-mlx", "1024", 30e9),
            m("forge-mlx", "512", 20e9),
            m("ndarray-openblas", "512", 10e9),
        ];
        let t = tables(&ms);
        assert!(
            t.contains("| size | forge-mlx | ndarray-openblas | forge-mlx / ndarray-openblas |")
        );
        assert!(t.contains("| 512 | 20.0 | 10.0 | 2.00x |"));
        assert!(t.contains("| 1024 | 30.0 | 40.0 | 0.75x |"));
        assert!(t.find("| 512 |").unwrap() < t.find("| 1024 |").unwrap());
    }

    #[test]
    fn reads_criterion_layout() {
        let dir = std::env::temp_dir().join(format!("xtask-crit-{}", std::process::id()));
        let new = dir.join("g").join("forge").join("8").join("new");
        fs::create_dir_all(&new).unwrap();
        fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"g","function_id":"forge","value_str":"8","throughput":{"Elements":1000}}"#,
        )
        .unwrap();
        fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":1000.0}}"#,
        )
        .unwrap();
        let ms = collect(&dir, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(ms.len(), 1);
        // Results older than the run are left out.
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(collect(&dir, later).unwrap().is_empty());
        assert!((ms[0].per_second - 1e9).abs() < 1.0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
