//! Mines a repository and prints units/s, throughput and the report.
//!
//! `cargo run --release -p forge-miner --example mine_repo -- [REPO] [OUT]`
//! (defaults: the workspace root, a temporary directory). Measure peak memory
//! with `/usr/bin/time -v`.

use std::time::Instant;

use forge_miner::{Miner, NoProgress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let repo = args
        .next()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/..").to_string());
    let out = args.next().map_or_else(
        || std::env::temp_dir().join(format!("forge-mine-{}", std::process::id())),
        Into::into,
    );
    let miner = Miner::new(&repo).with_units_file(out.join("units.jsonl"));

    let t = Instant::now();
    let mined = miner.mine(&NoProgress)?;
    let mine_s = t.elapsed().as_secs_f64();
    let units = mined.units().count();
    let bytes = mined.bytes();
    println!(
        "mine (walk + read + parse + extract + size): {} files, {} bytes, {units} units in {mine_s:.3} s = {:.0} units/s, {:.2} MB/s",
        mined.files.len(),
        bytes,
        units as f64 / mine_s,
        bytes as f64 / mine_s / 1e6
    );

    let t = Instant::now();
    let report = miner.run(&out, &NoProgress)?;
    println!(
        "full run (mine + datasets + write): {:.3} s",
        t.elapsed().as_secs_f64()
    );
    println!("{report}");
    println!("per task: {:?}", report.card.per_task);
    println!("output: {}", out.display());
    Ok(())
}
