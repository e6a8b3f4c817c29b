//! Mining this repository: counts, determinism, dataset properties.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use forge_miner::{
    BEGIN_QUOTE, END_QUOTE, Format, Miner, NoProgress, Record, Split, Task, UnitKind,
    dataset::read_records,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("forge-miner-repo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn mines_this_repository_deterministically() {
    let miner = Miner::new(workspace());
    let a = miner.mine(&NoProgress).expect("mine");
    let b = miner.mine(&NoProgress).expect("mine");
    let units: Vec<_> = a.units().collect();
    assert!(a.files.len() >= 30, "files {}", a.files.len());
    assert!(units.len() >= 300, "units {}", units.len());
    assert_eq!(units, b.units().collect::<Vec<_>>(), "two runs differ");
    // Metadata sanity.
    for u in &units {
        let src = std::fs::read_to_string(workspace().join(&u.path)).expect("read");
        assert_eq!(&src[u.start_byte..u.end_byte], u.text, "{}", u.symbol);
        assert!(u.start_line <= u.end_line);
        assert_eq!(u.hash.len(), 16);
    }
    let miner_units: Vec<_> = units
        .iter()
        .filter(|u| u.path.starts_with("forge-miner/src/"))
        .collect();
    assert!(
        miner_units
            .iter()
            .any(|u| u.symbol == "forge_miner::miner::Miner::run"
                || u.symbol == "forge_miner::run::Miner::run")
    );
    assert!(
        miner_units
            .iter()
            .any(|u| u.kind == UnitKind::Trait && u.name == "Language")
    );
}

#[test]
fn datasets_are_split_by_file_and_reproducible() {
    let root = workspace().join("forge-miner");
    let (o1, o2) = (out_dir("a"), out_dir("b"));
    let miner = Miner::new(&root).with_format(Format::Forge).with_seed(7);
    let r1 = miner
        .clone()
        .with_units_file(o1.join("units.jsonl"))
        .run(&o1, &NoProgress)
        .expect("run");
    miner.run(&o2, &NoProgress).expect("run");
    for s in Split::ALL {
        let f = Format::Forge.file_name(s);
        let a = std::fs::read(o1.join(&f)).expect("read");
        assert_eq!(
            a,
            std::fs::read(o2.join(&f)).expect("read"),
            "{f} differs between runs"
        );
    }
    assert_eq!(
        std::fs::read(o1.join("card.json")).expect("card"),
        std::fs::read(o2.join("card.json")).expect("card")
    );
    assert!(o1.join("card.md").exists());
    let units = std::fs::read_to_string(o1.join("units.jsonl")).expect("units");
    assert_eq!(units.lines().count(), r1.units);

    let mut split_of: BTreeMap<String, Split> = BTreeMap::new();
    let mut tasks = HashSet::new();
    for s in Split::ALL {
        let recs: Vec<Record> = read_records(&o1.join(Format::Forge.file_name(s))).expect("read");
        assert!(!recs.is_empty(), "{s:?} is empty");
        for r in recs {
            tasks.insert(r.task);
            let prev = split_of.insert(r.source.path.clone(), s);
            assert!(
                prev.is_none_or(|p| p == s),
                "{} in two splits",
                r.source.path
            );
            if r.task == Task::Raft {
                check_raft(&r);
            }
        }
    }
    assert_eq!(tasks.len(), Task::ALL.len(), "{tasks:?}");
    assert_eq!(
        r1.card.total_records(),
        r1.card
            .per_task
            .values()
            .flat_map(|m| m.values())
            .sum::<usize>()
    );
    let _ = std::fs::remove_dir_all(&o1);
    let _ = std::fs::remove_dir_all(&o2);
}

fn check_raft(r: &Record) {
    let quote = r
        .output
        .split(BEGIN_QUOTE)
        .nth(1)
        .and_then(|s| s.split(END_QUOTE).next())
        .expect("quoted");
    assert!(r.output.contains("##Answer:"));
    let distractors = r.meta["distractors"]
        .split(',')
        .filter(|d| !d.is_empty())
        .count();
    if r.meta["oracle_in_context"] == "true" {
        assert_eq!(distractors, 4, "k = 4 distractors beside the oracle");
        // The quote is verbatim text of a document in the context.
        assert!(r.input.contains(quote), "quote not in context: {quote}");
    } else {
        assert_eq!(distractors, 5, "k + 1 distractors without the oracle");
    }
}

#[test]
fn raft_oracle_rate_is_near_p() {
    let root = workspace().join("forge-miner");
    let miner = Miner::new(&root).with_tasks("raft".parse().expect("tasks"));
    let mined = miner.mine(&NoProgress).expect("mine");
    let ds = miner.build_dataset(&mined, &NoProgress).expect("build");
    let all: Vec<&Record> = ds.splits.values().flatten().collect();
    assert!(all.len() >= 50, "{}", all.len());
    let kept = all
        .iter()
        .filter(|r| r.meta["oracle_in_context"] == "true")
        .count();
    let rate = kept as f64 / all.len() as f64;
    assert!((0.65..=0.95).contains(&rate), "oracle rate {rate}");
}
