//! Scores the committed CodeBLEU corpus many times on one thread (a target for `perf record`).
//!
//! `cargo run --release -p forge-judge --example codebleu_profile [rounds] [batch]`
//! (`batch`: through `score_batch`, references analysed once per call; run with
//! `RAYON_NUM_THREADS=1` for one thread).

use std::path::PathBuf;
use std::time::Instant;

use forge_judge::{CodeBleu, Lang};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let rounds: usize = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    let corpus = std::fs::read_to_string(root.join("tests/data/codebleu_corpus.jsonl"))?;
    let rows: Vec<serde_json::Value> = corpus
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let py = CodeBleu::new(Lang::Python).with_compat(true);
    let rs = CodeBleu::new(Lang::Rust).with_compat(true);
    let batch = std::env::args().nth(2).as_deref() == Some("batch");
    let t = Instant::now();
    let mut sum = 0.0;
    if batch {
        for (lang, scorer) in [("python", &py), ("rust", &rs)] {
            let pairs: Vec<(&str, &str)> = (0..rounds)
                .flat_map(|_| rows.iter())
                .filter(|r| r["lang"] == lang)
                .map(|r| {
                    (
                        r["reference"].as_str().unwrap_or_default(),
                        r["candidate"].as_str().unwrap_or_default(),
                    )
                })
                .collect();
            sum += scorer
                .score_batch(&pairs)
                .iter()
                .map(|s| s.codebleu)
                .sum::<f64>();
        }
    }
    for _ in 0..if batch { 0 } else { rounds } {
        for r in &rows {
            let s = if r["lang"] == "python" { &py } else { &rs };
            sum += s
                .score(
                    r["reference"].as_str().unwrap_or_default(),
                    r["candidate"].as_str().unwrap_or_default(),
                )
                .codebleu;
        }
    }
    let n = (rounds * rows.len()) as f64;
    println!(
        "{n} pairs, one thread: {:.1} pairs/s (checksum {sum:.6})",
        n / t.elapsed().as_secs_f64()
    );
    Ok(())
}
