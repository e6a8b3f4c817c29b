//! The dataset card (JSON + markdown) and the run report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetConfig, Split, Task};
use crate::extract::Diagnostic;
use crate::walk::{Skip, SkipSummary};

/// One bucket of the token histogram: `lo ≤ tokens < hi` (`hi` absent: no bound).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Inclusive lower bound.
    pub lo: usize,
    /// Exclusive upper bound.
    pub hi: Option<usize>,
    /// Records in the bucket.
    pub count: usize,
}

/// Token-count histogram with power-of-two buckets from 16 to 8192.
pub(crate) fn histogram(counts: &[usize]) -> Vec<Bucket> {
    let mut edges = vec![0usize];
    let mut e = 16;
    while e <= 8192 {
        edges.push(e);
        e *= 2;
    }
    let mut buckets: Vec<Bucket> = edges
        .iter()
        .enumerate()
        .map(|(i, &lo)| Bucket {
            lo,
            hi: edges.get(i + 1).copied(),
            count: 0,
        })
        .collect();
    for &c in counts {
        let i = edges.partition_point(|&lo| lo <= c) - 1;
        buckets[i].count += 1;
    }
    buckets
}

/// Counts and settings of a built dataset, written beside it as `card.json` and `card.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    /// The format of the split files.
    pub format: String,
    /// The teacher that wrote RAFT questions.
    pub teacher: String,
    /// The size budget of units (`2000 chars`).
    pub budget: String,
    /// How tokens were counted (`tokenizer` or `chars/4`).
    pub token_counter: String,
    /// Units mined.
    pub units: usize,
    /// Units dropped as exact duplicates (whitespace-normalised).
    pub units_duplicate_exact: usize,
    /// Units dropped as MinHash near-duplicates.
    pub units_duplicate_near: usize,
    /// Records dropped as exact duplicates.
    pub records_duplicate: usize,
    /// Records dropped for having fewer than `min_tokens` tokens.
    pub records_too_short: usize,
    /// Records dropped for having more than `max_tokens` tokens.
    pub records_too_long: usize,
    /// Source files per split.
    pub files: BTreeMap<Split, usize>,
    /// Records per split.
    pub records: BTreeMap<Split, usize>,
    /// Records per task and split.
    pub per_task: BTreeMap<Task, BTreeMap<Split, usize>>,
    /// Total tokens of the kept records.
    pub tokens_total: usize,
    /// Largest record.
    pub tokens_max: usize,
    /// Token histogram of the kept records.
    pub token_histogram: Vec<Bucket>,
    /// The dataset configuration.
    pub config: DatasetConfig,
}

impl Card {
    /// Records over all splits.
    pub fn total_records(&self) -> usize {
        self.records.values().sum()
    }

    /// The markdown card.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Dataset card\n");
        let _ = writeln!(
            s,
            "Built by forge-miner: format `{}`, seed {}, unit budget {}, tokens counted by {}, RAFT teacher `{}`.\n",
            self.format, self.config.seed, self.budget, self.token_counter, self.teacher
        );
        let _ = writeln!(s, "## Splits (by file)\n");
        let _ = writeln!(s, "| split | files | records |\n|---|---:|---:|");
        for sp in Split::ALL {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                sp.as_str(),
                self.files.get(&sp).copied().unwrap_or(0),
                self.records.get(&sp).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(s, "\n## Tasks\n");
        let _ = writeln!(s, "| task | train | valid | test |\n|---|---:|---:|---:|");
        for (t, per) in &self.per_task {
            let g = |sp| per.get(&sp).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.as_str(),
                g(Split::Train),
                g(Split::Valid),
                g(Split::Test)
            );
        }
        let _ = writeln!(s, "\n## Filtering\n");
        let _ = writeln!(
            s,
            "- units: {} mined, {} exact and {} near duplicates dropped (MinHash, Jaccard ≥ {})",
            self.units,
            self.units_duplicate_exact,
            self.units_duplicate_near,
            self.config.near_threshold
        );
        let _ = writeln!(
            s,
            "- records: {} duplicates, {} shorter than {} tokens, {} longer than {} tokens dropped",
            self.records_duplicate,
            self.records_too_short,
            self.config.min_tokens,
            self.records_too_long,
            self.config.max_tokens
        );
        let _ = writeln!(
            s,
            "- tokens: {} in total, largest record {}",
            self.tokens_total, self.tokens_max
        );
        let _ = writeln!(s, "\n## Token histogram\n");
        let _ = writeln!(s, "| tokens | records |\n|---|---:|");
        for b in self.token_histogram.iter().filter(|b| b.count > 0) {
            let hi = b.hi.map_or("∞".to_string(), |h| h.to_string());
            let _ = writeln!(s, "| {}–{} | {} |", b.lo, hi, b.count);
        }
        s
    }
}

/// What [`crate::Miner::run`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MineReport {
    /// Files the walk listed.
    pub files_seen: usize,
    /// Files parsed and extracted.
    pub files_mined: usize,
    /// Bytes of source mined.
    pub bytes_mined: usize,
    /// Units (pieces of split units counted separately).
    pub units: usize,
    /// Units that cAST sizing split into pieces.
    pub units_split: usize,
    /// Skipped files per reason.
    pub skipped: SkipSummary,
    /// Every skipped file.
    pub skipped_files: Vec<Skip>,
    /// Diagnostics of mined files.
    pub diagnostics: Vec<Diagnostic>,
    /// The dataset card.
    pub card: Card,
    /// Files written.
    pub written: Vec<PathBuf>,
}

impl std::fmt::Display for MineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "mined {} of {} files ({} bytes): {} units ({} split by the budget)",
            self.files_mined, self.files_seen, self.bytes_mined, self.units, self.units_split
        )?;
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            writeln!(f, "skipped: {}", parts.join(", "))?;
        }
        if !self.diagnostics.is_empty() {
            writeln!(f, "diagnostics: {}", self.diagnostics.len())?;
        }
        let per: Vec<String> = Split::ALL
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s.as_str(),
                    self.card.records.get(s).copied().unwrap_or(0)
                )
            })
            .collect();
        write!(
            f,
            "records: {} ({})",
            self.card.total_records(),
            per.join(", ")
        )
    }
}
