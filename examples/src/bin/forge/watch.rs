//! `forge watch`: poll git and run the pipeline when enough changed.

use std::sync::Arc;

use forge_core::pipeline::RunOptions;
use forge_core::watch::{PollOutcome, Watcher};

#[derive(clap::Args)]
#[command(
    after_help = "Runs the pipeline when at least watch.min_changed_files selected files \
    changed since the last trained commit, or a new tag matches watch.tag_pattern. The judge's gate \
    decides deployment; a failed or refused run never replaces the active model."
)]
pub(crate) struct WatchArgs {
    /// The project: a folder with forge.toml, or the file
    #[arg(default_value = ".")]
    pub(crate) project: std::path::PathBuf,
    /// Poll this many times, then exit (default: forever)
    #[arg(long)]
    pub(crate) polls: Option<usize>,
    /// Seconds between polls (overrides watch.interval_s)
    #[arg(long)]
    pub(crate) interval: Option<u64>,
    /// One JSON object per poll on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: WatchArgs) -> anyhow::Result<()> {
    let mut forge = forge_core::Forge::open(&args.project)?;
    if let Some(s) = args.interval {
        let mut cfg = forge.config().clone();
        cfg.watch.interval_s = s.max(1);
        forge = forge_core::Forge::from_config(cfg);
    }
    let bars = Arc::new(super::run::Bars::new());
    let watcher = Watcher::new(forge, RunOptions::new().with_observer(bars));
    watcher.run(args.polls, |outcome| {
        if args.json {
            println!("{}", serde_json::to_string(outcome).unwrap_or_default());
            return;
        }
        match outcome {
            PollOutcome::Started { commit } => println!("watching from {commit}"),
            PollOutcome::Unchanged { .. } => {}
            PollOutcome::Below {
                commit,
                changed,
                threshold,
            } => println!("{commit}: {changed} of {threshold} changed files, waiting"),
            PollOutcome::Ran { trigger, report } => print!("{trigger}\n{report}"),
            PollOutcome::Failed { trigger, error } => {
                eprintln!("{trigger}\nrun failed (active model unchanged): {error}");
            }
            PollOutcome::Busy { pid } => println!("another pipeline runs (pid {pid}); next poll"),
        }
    })?;
    Ok(())
}
