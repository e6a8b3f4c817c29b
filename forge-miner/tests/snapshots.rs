//! Snapshot tests over real Rust and Python inputs in `tests/corpus/`, with the
//! sizing invariants asserted on every file and several budgets.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;

use forge_miner::{Budget, Miner, NoProgress};

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn render(miner: &Miner) -> String {
    let mined = miner.mine(&NoProgress).expect("mine corpus");
    let mut s = String::new();
    for f in &mined.files {
        let _ = writeln!(s, "== {} ({})", f.path, f.language);
        for u in &f.units {
            let part = u.part.map_or(String::new(), |p| {
                format!(" part {}/{}", p.index + 1, p.count)
            });
            let _ = writeln!(
                s,
                "{} {} L{}-{}{part} hash={}",
                u.kind, u.symbol, u.start_line, u.end_line, u.hash
            );
            let _ = writeln!(s, "    sig: {}", u.signature.replace('\n', "⏎"));
            if let Some(d) = &u.doc {
                let _ = writeln!(s, "    doc: {}", d.lines().next().unwrap_or(""));
            }
            if !u.params.is_empty() || u.receiver {
                let _ = writeln!(s, "    params: {:?} receiver: {}", u.params, u.receiver);
            }
            if !u.imports.is_empty() {
                let _ = writeln!(s, "    imports: {}", u.imports.len());
            }
        }
        for d in &f.diagnostics {
            let _ = writeln!(s, "  ! line {}: {}", d.line, d.message);
        }
    }
    for k in &mined.skipped {
        let _ = writeln!(s, "skipped {} ({})", k.path, k.reason);
    }
    s
}

#[test]
fn corpus_units() {
    insta::assert_snapshot!("units_2000", render(&Miner::new(corpus())));
}

#[test]
fn corpus_units_small_budget() {
    insta::assert_snapshot!(
        "units_300",
        render(&Miner::new(corpus()).with_budget(Budget::chars(300)))
    );
}

#[test]
fn corpus_cover_chunks() {
    let miner = common::miner(400);
    let mut s = String::new();
    for path in ["rust/lexer.rs", "python/kvstore/store.py"] {
        let text = std::fs::read_to_string(corpus().join(path)).expect("read");
        for c in miner.cover_text(path, &text).expect("cover") {
            let first = c.text.trim_start().lines().next().unwrap_or("");
            let _ = writeln!(
                s,
                "{path} L{}-{} {} chars: {first}",
                c.start_line, c.end_line, c.size
            );
        }
    }
    insta::assert_snapshot!("cover_400", s);
}

#[test]
fn corpus_invariants_at_many_budgets() {
    for path in [
        "rust/lexer.rs",
        "rust/cache.rs",
        "python/kvstore/store.py",
        "python/kvstore/__init__.py",
    ] {
        let text = std::fs::read_to_string(corpus().join(path)).expect("read");
        for max in [1, 7, 40, 100, 250, 600, 2000, 100_000] {
            let m = common::miner(max);
            common::check_cover(&m, path, &text, max);
            common::check_units(&m, path, &text, max);
        }
    }
}

#[test]
fn shebang_file_is_python() {
    let mined = Miner::new(corpus()).mine(&NoProgress).expect("mine");
    let kv = mined
        .files
        .iter()
        .find(|f| f.path == "python/bin/kv")
        .expect("kv mined");
    assert_eq!(kv.language, "python");
    assert!(kv.units.iter().any(|u| u.symbol == "python.bin.kv.main"));
}
