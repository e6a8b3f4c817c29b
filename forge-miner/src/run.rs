//! [`Miner::run`]: mine, build the dataset, write it with its card.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::card::{Card, MineReport, histogram};
use crate::dataset::{Record, Split, Task, write_records};
use crate::error::{Error, Result};
use crate::hash::{fnv1a, fnv1a_fields, mix64};
use crate::miner::{Mined, Miner};
use crate::progress::{Progress, Stage};
use crate::unit::Unit;

/// A built dataset: records per split and its card.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Records of each split.
    pub splits: BTreeMap<Split, Vec<Record>>,
    /// Counts and settings.
    pub card: Card,
}

/// Assigns whole files to splits: files sorted by `mix64(seed ⊕ fnv1a(path))`,
/// the first ⌈n·test⌉ to test, the next ⌈n·valid⌉ to valid, the rest to train
/// (at least one file per split once there are three files).
pub(crate) fn split_files(
    paths: &BTreeSet<&str>,
    seed: u64,
    valid: f64,
    test: f64,
) -> BTreeMap<String, Split> {
    let mut order: Vec<(u64, &str)> = paths
        .iter()
        .map(|p| (mix64(seed ^ fnv1a(p.as_bytes())), *p))
        .collect();
    order.sort();
    let n = order.len();
    let count = |frac: f64| -> usize {
        if frac <= 0.0 || n < 3 {
            0
        } else {
            ((n as f64 * frac).ceil() as usize).max(1)
        }
    };
    let n_test = count(test);
    let n_valid = count(valid).min(n.saturating_sub(n_test + 1));
    order
        .into_iter()
        .enumerate()
        .map(|(i, (_, p))| {
            let s = if i < n_test {
                Split::Test
            } else if i < n_test + n_valid {
                Split::Valid
            } else {
                Split::Train
            };
            (p.to_string(), s)
        })
        .collect()
}

impl Miner {
    /// Builds the dataset of mined units (no files written).
    pub fn build_dataset(&self, mined: &Mined, progress: &dyn Progress) -> Result<Dataset> {
        let cfg = &self.config().dataset;
        cfg.validate()?;
        let units: Vec<&Unit> = mined.units().collect();
        progress.start(Stage::Build, units.len() as u64);

        // Unit deduplication: exact (whitespace-normalised), then MinHash.
        let mut seen = HashSet::new();
        let mut exact = 0;
        let mut kept: Vec<&Unit> = Vec::with_capacity(units.len());
        for u in &units {
            let norm = u.text.split_whitespace().collect::<Vec<_>>().join(" ");
            if cfg.dedup_exact && !seen.insert(fnv1a(norm.as_bytes())) {
                exact += 1;
                continue;
            }
            kept.push(u);
        }
        let mut near = 0;
        if cfg.dedup_near {
            let texts: Vec<&str> = kept.iter().map(|u| u.text.as_str()).collect();
            let dup = crate::minhash::near_duplicates(&texts, cfg.near_threshold);
            near = dup.iter().filter(|d| **d).count();
            kept = kept
                .into_iter()
                .zip(dup)
                .filter_map(|(u, d)| (!d).then_some(u))
                .collect();
        }

        let mut records: Vec<Record> = kept
            .par_iter()
            .flat_map_iter(|u| {
                let r = crate::tasks::unit_records(u, cfg);
                progress.advance(1);
                r
            })
            .collect();
        if cfg.tasks.contains(Task::Raft) {
            let registry = self.registry();
            let sep = |lang: &str| registry.by_name(lang).map_or("::", |l| l.separator());
            records.extend(crate::raft::build(&kept, cfg, self.teacher(), &sep));
        }
        progress.finish(Stage::Build);

        // Record deduplication and the token-length filter.
        let mut seen = HashSet::new();
        let before = records.len();
        records.retain(|r| {
            seen.insert(fnv1a_fields(&[
                r.instruction.as_bytes(),
                r.input.as_bytes(),
                r.output.as_bytes(),
            ]))
        });
        let records_duplicate = before - records.len();
        let tokenizer = self.tokenizer();
        let tokens: Vec<usize> = records
            .par_iter()
            .map(|r| {
                let text = format!("{}{}", r.prompt(), r.output);
                match tokenizer {
                    Some(t) => t
                        .encode(text.as_str(), false)
                        .map_or_else(|_| text.chars().count().div_ceil(4), |e| e.len()),
                    None => text.chars().count().div_ceil(4),
                }
            })
            .collect();
        let (mut too_short, mut too_long) = (0, 0);
        let mut kept_tokens = Vec::with_capacity(records.len());
        let mut kept_records = Vec::with_capacity(records.len());
        for (r, t) in records.into_iter().zip(tokens) {
            if t < cfg.min_tokens {
                too_short += 1;
            } else if t > cfg.max_tokens {
                too_long += 1;
            } else {
                kept_tokens.push(t);
                kept_records.push(r);
            }
        }

        // Split by file: every unit of a file lands in the same split.
        let paths: BTreeSet<&str> = mined.files.iter().map(|f| f.path.as_str()).collect();
        let assignment = split_files(&paths, cfg.seed, cfg.valid_fraction, cfg.test_fraction);
        let mut splits: BTreeMap<Split, Vec<Record>> =
            Split::ALL.iter().map(|s| (*s, Vec::new())).collect();
        let mut per_task: BTreeMap<Task, BTreeMap<Split, usize>> = BTreeMap::new();
        for r in kept_records {
            let s = assignment
                .get(&r.source.path)
                .copied()
                .unwrap_or(Split::Train);
            *per_task.entry(r.task).or_default().entry(s).or_insert(0) += 1;
            splits.entry(s).or_default().push(r);
        }
        let mut files = BTreeMap::new();
        for s in assignment.values() {
            *files.entry(*s).or_insert(0) += 1;
        }
        let card = Card {
            format: cfg.format.as_str().to_string(),
            teacher: self.teacher().name().to_string(),
            budget: format!("{} {}", self.budget().max(), self.budget().unit_name()),
            token_counter: if tokenizer.is_some() {
                "tokenizer".into()
            } else {
                "chars/4".into()
            },
            units: units.len(),
            units_duplicate_exact: exact,
            units_duplicate_near: near,
            records_duplicate,
            records_too_short: too_short,
            records_too_long: too_long,
            files,
            records: splits.iter().map(|(s, v)| (*s, v.len())).collect(),
            per_task,
            tokens_total: kept_tokens.iter().sum(),
            tokens_max: kept_tokens.iter().copied().max().unwrap_or(0),
            token_histogram: histogram(&kept_tokens),
            config: cfg.clone(),
        };
        Ok(Dataset { splits, card })
    }

    /// Mines the repository, builds the dataset and writes it to `out_dir`:
    /// one file per split in the configured format (`train.jsonl`, `valid.jsonl`,
    /// `test.jsonl`), `card.json`, `card.md`, and the units file when set.
    /// Every file is written atomically.
    pub fn run(&self, out_dir: impl AsRef<Path>, progress: &dyn Progress) -> Result<MineReport> {
        let out_dir = out_dir.as_ref();
        self.config().dataset.validate()?;
        let mined = self.mine(progress)?;
        let dataset = self.build_dataset(&mined, progress)?;
        let format = self.config().dataset.format;
        progress.start(Stage::Write, 5);
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let mut written: Vec<PathBuf> = Vec::new();
        for (split, records) in &dataset.splits {
            let path = out_dir.join(format.file_name(*split));
            write_records(&path, format, records)?;
            written.push(path);
            progress.advance(1);
        }
        let card_json = out_dir.join("card.json");
        let json = serde_json::to_string_pretty(&dataset.card).map_err(|e| Error::Json {
            path: card_json.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        crate::fsio::write_string(&card_json, &(json + "\n"))?;
        written.push(card_json);
        let card_md = out_dir.join("card.md");
        crate::fsio::write_string(&card_md, &dataset.card.to_markdown())?;
        written.push(card_md);
        progress.advance(1);
        if let Some(path) = self.units_file() {
            write_units(path, mined.units())?;
            written.push(path.to_path_buf());
        }
        progress.finish(Stage::Write);
        Ok(MineReport {
            files_seen: mined.files_seen,
            files_mined: mined.files.len(),
            bytes_mined: mined.bytes(),
            units: mined.units().count(),
            units_split: mined
                .units()
                .filter(|u| u.part.is_some_and(|p| p.index == 0))
                .count(),
            skipped: mined.skip_summary(),
            skipped_files: mined.skipped.clone(),
            diagnostics: mined.diagnostics().cloned().collect(),
            card: dataset.card,
            written,
        })
    }
}

/// Writes every unit's metadata (no text) as JSONL, atomically.
pub fn write_units<'a>(path: &Path, units: impl Iterator<Item = &'a Unit>) -> Result<()> {
    let rows: Vec<_> = units.map(Unit::row).collect();
    crate::fsio::write_atomic(path, |w| {
        for r in &rows {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_files_whole_and_fills_every_split() {
        let names: Vec<String> = (0..20).map(|i| format!("f{i}.rs")).collect();
        let paths: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let a = split_files(&paths, 1, 0.1, 0.1);
        assert_eq!(a.len(), 20);
        let count = |s| a.values().filter(|v| **v == s).count();
        assert_eq!(count(Split::Test), 2);
        assert_eq!(count(Split::Valid), 2);
        assert_eq!(count(Split::Train), 16);
        assert_eq!(a, split_files(&paths, 1, 0.1, 0.1));
    }
}
