//! Mining throughput (MB/s of source: parse + extract + cAST sizing) against
//! `text_splitter::CodeSplitter` at the same character budget, on the same files,
//! in the same run. Groups `mine_rust` and `mine_python`; Forge's functions start
//! with `forge` (`forge`: units with metadata; `forge-cover`: cover-mode chunks),
//! the peer is `text-splitter`. `cargo xtask bench` turns them into ratio tables.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use forge_miner::{Budget, Miner};
use text_splitter::CodeSplitter;

const BUDGET: usize = 2000;

/// Source files of this workspace with extension `ext` (skipping target dirs).
fn files(ext: &str) -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "fuzz" {
                    stack.push(p);
                }
            } else if name.ends_with(ext)
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                out.push((rel(&root, &p), text));
            }
        }
    }
    out.sort();
    out
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

fn bench_lang(c: &mut Criterion, group: &str, ext: &str, lang: tree_sitter::Language) {
    let files = files(ext);
    let bytes: usize = files.iter().map(|(_, t)| t.len()).sum();
    let miner = Miner::new(".").with_budget(Budget::chars(BUDGET));
    let splitter = CodeSplitter::new(lang, BUDGET).expect("grammar");
    eprintln!("{group}: {} files, {bytes} bytes", files.len());

    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(20);
    g.bench_with_input(BenchmarkId::new("forge", BUDGET), &files, |b, files| {
        b.iter(|| {
            let mut n = 0;
            for (path, text) in files {
                n += miner.mine_text(path, text).map_or(0, |f| f.units.len());
            }
            black_box(n)
        });
    });
    g.bench_with_input(
        BenchmarkId::new("forge-cover", BUDGET),
        &files,
        |b, files| {
            b.iter(|| {
                let mut n = 0;
                for (path, text) in files {
                    n += miner.cover_text(path, text).map_or(0, |c| c.len());
                }
                black_box(n)
            });
        },
    );
    g.bench_with_input(
        BenchmarkId::new("text-splitter", BUDGET),
        &files,
        |b, files| {
            b.iter(|| {
                let mut n = 0;
                for (_, text) in files {
                    n += splitter.chunks(text).count();
                }
                black_box(n)
            });
        },
    );
    g.finish();
}

fn mine(c: &mut Criterion) {
    bench_lang(c, "mine_rust", ".rs", tree_sitter_rust::LANGUAGE.into());
    bench_lang(c, "mine_python", ".py", tree_sitter_python::LANGUAGE.into());
}

criterion_group!(benches, mine);
criterion_main!(benches);
