//! CodeBLEU compat mode against PyPI codebleu 0.7.0 on the committed corpus
//! (`tests/data/codebleu_corpus.jsonl`, scored by `tests/reference/codebleu_ref.py`).

use std::path::PathBuf;
use std::process::Command;

use forge_judge::{CodeBleu, Lang};

fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

fn peer_python() -> Option<PathBuf> {
    let p = peers_dir().join("codebleu-venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("FORGE_REQUIRE_PEERS").as_deref() != Ok("1"),
        "codebleu peer missing at {} and FORGE_REQUIRE_PEERS=1",
        p.display()
    );
    println!("skipped: peers not installed (cargo xtask peers)");
    None
}

#[test]
fn compat_mode_equals_codebleu_0_7_0() {
    let Some(python) = peer_python() else { return };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
    let corpus = dir.join("data/codebleu_corpus.jsonl");
    let out = Command::new(python)
        .arg(dir.join("reference/codebleu_ref.py"))
        .arg(&corpus)
        .env("PYTHONHASHSEED", "0")
        .output()
        .expect("run the codebleu peer");
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("peer json"))
        .collect();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&corpus)
        .expect("corpus")
        .lines()
        .map(|l| serde_json::from_str(l).expect("corpus json"))
        .collect();
    assert_eq!(rows.len(), expected.len());
    let mut max_diff = [0.0f64; 5];
    let mut bad = Vec::new();
    for (row, exp) in rows.iter().zip(&expected) {
        let lang: Lang = row["lang"].as_str().expect("lang").parse().expect("lang");
        let s = CodeBleu::new(lang).with_compat(true).score(
            row["reference"].as_str().expect("reference"),
            row["candidate"].as_str().expect("candidate"),
        );
        let got = [
            s.codebleu,
            s.ngram_match,
            s.weighted_ngram_match,
            s.syntax_match,
            s.dataflow_match,
        ];
        let keys = [
            "codebleu",
            "ngram_match_score",
            "weighted_ngram_match_score",
            "syntax_match_score",
            "dataflow_match_score",
        ];
        let mut ok = true;
        for i in 0..5 {
            let e = exp[keys[i]].as_f64().expect("number");
            let d = (got[i] - e).abs();
            max_diff[i] = max_diff[i].max(d);
            if d > 1e-6 {
                ok = false;
                bad.push(format!(
                    "{} {}: forge {} codebleu {}",
                    row["id"], keys[i], got[i], e
                ));
            }
        }
        let _ = ok;
    }
    println!(
        "pairs: {}, max abs diff [codebleu, ngram, weighted, syntax, dataflow]: {max_diff:?}",
        rows.len()
    );
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
