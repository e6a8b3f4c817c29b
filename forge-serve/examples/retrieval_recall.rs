//! Retrieval quality of the serving index: recall@k of the oracle unit for
//! the questions forge-miner's RAFT builder writes for a repository (by
//! default this workspace), on the held-out `test` split (files the training
//! split never saw), plus the mean reciprocal rank.
//!
//! The query is what a client sends: the question alone. RAFT's distractor
//! mining also added the unit's name and signature to the query; that
//! variant (an upper bound: it knows the answer's name) is printed too.
//!
//! ```sh
//! cargo run --release -p forge-serve --example retrieval_recall -- [--repo PATH] [--split test|valid|train|all]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use forge_miner::{Format, Miner, NoProgress, Split, Task};
use forge_serve::RepoIndex;

#[derive(Parser)]
struct Args {
    /// Repository to evaluate on (default: this workspace)
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Which split's questions: test (held-out), valid, train or all
    #[arg(long, default_value = "test")]
    split: String,
    /// Seed of the dataset build (forge mine's default: 42)
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const KS: [usize; 5] = [1, 3, 4, 5, 10];

#[derive(Default)]
struct Tally {
    n: usize,
    hits: [usize; KS.len()],
    rr: f64,
}

impl Tally {
    fn add(&mut self, rank: Option<usize>) {
        self.n += 1;
        if let Some(r) = rank {
            for (i, &k) in KS.iter().enumerate() {
                if r < k {
                    self.hits[i] += 1;
                }
            }
            self.rr += 1.0 / (r as f64 + 1.0);
        }
    }

    fn row(&self, name: &str) -> String {
        let n = self.n.max(1) as f64;
        let cells: Vec<String> = self
            .hits
            .iter()
            .map(|&h| format!("{:.3}", h as f64 / n))
            .collect();
        format!(
            "| {name} | {} | {} | {:.3} |",
            self.n,
            cells.join(" | "),
            self.rr / n
        )
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let repo = args
        .repo
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let repo = repo
        .canonicalize()
        .with_context(|| format!("{}", repo.display()))?;
    let splits: Vec<Split> = match args.split.as_str() {
        "test" => vec![Split::Test],
        "valid" => vec![Split::Valid],
        "train" => vec![Split::Train],
        "all" => vec![Split::Train, Split::Valid, Split::Test],
        other => bail!("--split {other:?}, expected test, valid, train or all"),
    };
    let miner = Miner::new(&repo)
        .with_tasks("raft".parse()?)
        .with_format(Format::Forge)
        .with_seed(args.seed);
    let started = std::time::Instant::now();
    let mined = miner.mine(&NoProgress)?;
    let dataset = miner.build_dataset(&mined, &NoProgress)?;
    let index_dir = std::env::temp_dir().join(format!("forge-recall-{}", std::process::id()));
    let (index, report) = RepoIndex::open(&repo, &index_dir)?;
    eprintln!(
        "mined {} files, {} RAFT records, index {} units ({} ms)",
        mined.files.len(),
        dataset.splits.values().map(Vec::len).sum::<usize>(),
        report.units,
        started.elapsed().as_millis()
    );
    let kmax = *KS.last().unwrap_or(&10);
    let mut by_template: BTreeMap<String, Tally> = BTreeMap::new();
    let mut all = Tally::default();
    let mut upper = Tally::default();
    let mut missing = 0;
    for split in splits {
        for r in dataset.splits.get(&split).into_iter().flatten() {
            if r.task != Task::Raft {
                continue;
            }
            let (Some(q), Some(oracle)) = (r.meta.get("question"), r.meta.get("oracle")) else {
                continue;
            };
            let Some(unit) = index.unit(oracle) else {
                missing += 1;
                continue;
            };
            let hits = index.search(q, kmax);
            let rank = hits.iter().position(|h| &h.unit.id == oracle);
            all.add(rank);
            by_template
                .entry(r.meta.get("template").cloned().unwrap_or_default())
                .or_default()
                .add(rank);
            // RAFT's own distractor query: question + name + signature.
            let q2 = format!("{q} {} {}", unit.name, unit.signature);
            upper.add(
                index
                    .search(&q2, kmax)
                    .iter()
                    .position(|h| &h.unit.id == oracle),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&index_dir);
    let ks: Vec<String> = KS.iter().map(|k| format!("R@{k}")).collect();
    println!("| questions | n | {} | MRR@{kmax} |", ks.join(" | "));
    println!("|---|---|{}---|", "---|".repeat(KS.len()));
    println!("{}", all.row("all (question only: what a client sends)"));
    for (t, tally) in &by_template {
        println!("{}", tally.row(&format!("template `{t}`")));
    }
    println!(
        "{}",
        upper.row("all, query + unit name + signature (RAFT's distractor query; knows the answer)")
    );
    if missing > 0 {
        eprintln!("{missing} oracle units were not in the serving index (id mismatch)");
    }
    Ok(())
}
