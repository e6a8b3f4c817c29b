//! CodeBLEU pairs/s: forge-judge (compat mode, rayon batch) vs PyPI codebleu 0.7.0 on the same
//! 1,000 pairs, in one run, with a check that every score agrees to 1e-6.
//!
//! `cargo run --release -p forge-judge --example codebleu_vs_python`
//! (peer: `<peers>/codebleu-venv`, found through `FORGE_PEERS_DIR` or `.forge/peers`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use forge_judge::{CodeBleu, Lang};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let peers = std::env::var_os("FORGE_PEERS_DIR")
        .map_or_else(|| root.join("../.forge/peers"), PathBuf::from);
    let corpus = std::fs::read_to_string(root.join("tests/data/codebleu_corpus.jsonl"))?;
    let base: Vec<serde_json::Value> = corpus
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // 1,000 pairs: corpus pair i % n, the candidate of every other round gets one more line
    // so the pairs are not all repeats.
    let mut rows = Vec::with_capacity(1000);
    for i in 0..1000 {
        let b = &base[i % base.len()];
        let mut cand = b["candidate"].as_str().unwrap_or_default().to_string();
        if (i / base.len()) % 2 == 1 {
            cand.push_str(if b["lang"] == "python" {
                "\nresult = None\n"
            } else {
                "\nlet result = 0;\n"
            });
        }
        rows.push(serde_json::json!({"id": i.to_string(), "lang": b["lang"], "reference": b["reference"], "candidate": cand}));
    }
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(
        tmp.path(),
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )?;

    let python = peers.join("codebleu-venv/bin/python");
    let script = root.join("tests/reference/codebleu_ref.py");
    let t = Instant::now();
    let out = Command::new(&python)
        .arg(&script)
        .arg(tmp.path())
        .env("PYTHONHASHSEED", "0")
        .output()?;
    let py_wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("peer failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    // Best of ROUNDS for both sides (the VM is shared; the minimum is the least disturbed run).
    const ROUNDS: usize = 3;
    let mut py_secs = f64::INFINITY;
    for _ in 0..ROUNDS {
        let timed = Command::new(&python)
            .arg(&script)
            .arg(tmp.path())
            .arg("--time")
            .env("PYTHONHASHSEED", "0")
            .output()?;
        let py_inner: serde_json::Value = serde_json::from_slice(&timed.stdout)?;
        py_secs = py_secs.min(py_inner["seconds"].as_f64().unwrap_or(py_wall));
    }
    let expected: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;

    type Items = Vec<(usize, String, String)>;
    let mut by_lang: Vec<(Lang, Items)> = vec![(Lang::Python, vec![]), (Lang::Rust, vec![])];
    for (i, r) in rows.iter().enumerate() {
        let slot = if r["lang"] == "python" { 0 } else { 1 };
        by_lang[slot].1.push((
            i,
            r["reference"].as_str().unwrap_or_default().into(),
            r["candidate"].as_str().unwrap_or_default().into(),
        ));
    }
    let mut scores = vec![None; rows.len()];
    let run = |scores: &mut Vec<Option<forge_judge::CodeBleuScore>>| {
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for (lang, items) in &by_lang {
                let pairs: Vec<(&str, &str)> = items
                    .iter()
                    .map(|(_, r, c)| (r.as_str(), c.as_str()))
                    .collect();
                let got = CodeBleu::new(*lang).with_compat(true).score_batch(&pairs);
                for ((i, _, _), s) in items.iter().zip(got) {
                    scores[*i] = Some(s);
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    let rust_secs = run(&mut scores);
    // The same on one thread: the per-core ratio, less sensitive to other load on the machine.
    let mut single = vec![None; rows.len()];
    let one_secs = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()?
        .install(|| run(&mut single));
    if single != scores {
        return Err("one-thread scores differ from the parallel ones".into());
    }
    let mut max_diff = 0.0f64;
    let mut differing = 0;
    for (s, e) in scores.iter().zip(&expected) {
        let s = s.as_ref().ok_or("missing score")?;
        let d = (s.codebleu - e["codebleu"].as_f64().unwrap_or(f64::NAN)).abs();
        if d > 1e-6 {
            differing += 1;
        }
        max_diff = max_diff.max(d);
    }
    let n = rows.len() as f64;
    let distinct_refs = rows
        .iter()
        .map(|r| r["reference"].as_str().unwrap_or_default())
        .collect::<std::collections::HashSet<_>>()
        .len();
    println!(
        "pairs: {} ({distinct_refs} distinct references; best of {ROUNDS} runs per side)",
        rows.len()
    );
    println!(
        "codebleu 0.7.0 (python, in-process timing): {:.1} pairs/s ({:.3} s; {:.3} s with interpreter start)",
        n / py_secs,
        py_secs,
        py_wall
    );
    println!(
        "forge-judge compat, rayon ({} threads): {:.1} pairs/s ({:.4} s)",
        rayon::current_num_threads(),
        n / rust_secs,
        rust_secs
    );
    println!("ratio: {:.1}x", py_secs / rust_secs);
    println!(
        "forge-judge compat, 1 thread: {:.1} pairs/s ({:.4} s), ratio {:.1}x",
        n / one_secs,
        one_secs,
        py_secs / one_secs
    );
    println!(
        "max |codebleu diff|: {max_diff:.2e}; pairs differing by more than 1e-6: {differing} of {}",
        rows.len()
    );
    Ok(())
}
