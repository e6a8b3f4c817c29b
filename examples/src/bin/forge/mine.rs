//! `forge mine`: a repository into semantic units and datasets.

#[derive(clap::Args)]
pub(crate) struct MineArgs {
    /// The repository (or any folder) to mine
    pub(crate) repo: std::path::PathBuf,
    /// Output folder for the dataset splits and the dataset card
    #[arg(long)]
    pub(crate) out: std::path::PathBuf,
    /// alpaca-json | alpaca | sharegpt | text | completions | messages | forge
    #[arg(long, default_value = "messages")]
    pub(crate) format: String,
    /// Also write every mined unit with its metadata as JSONL
    #[arg(long)]
    pub(crate) units: Option<std::path::PathBuf>,
    /// Comma-separated tasks: completion,fim,explain,doc_to_code,raft (or "all")
    #[arg(long, default_value = "all")]
    pub(crate) tasks: String,
    /// Unit budget in characters (in tokens with --tokenizer)
    #[arg(long, default_value_t = 2000)]
    pub(crate) budget: usize,
    /// A tokenizer.json to count the budget in tokens
    #[arg(long)]
    pub(crate) tokenizer: Option<std::path::PathBuf>,
    /// Only files changed since this git revision
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Seed for every random choice (RAFT, splits)
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
}

/// Draws the miner's progress on stderr.
pub(crate) struct MineBar(indicatif::ProgressBar);

impl forge_core::miner::Progress for MineBar {
    fn start(&self, stage: forge_core::miner::Stage, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(stage.label());
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

pub(crate) fn run(args: MineArgs) -> forge_core::Result<()> {
    use forge_core::miner::{Budget, Error, Format, Miner, TaskSet, Tokenizer};
    let mut miner = Miner::new(&args.repo)
        .with_format(args.format.parse::<Format>()?)
        .with_tasks(args.tasks.parse::<TaskSet>()?)
        .with_seed(args.seed)
        .with_budget(Budget::chars(args.budget));
    if let Some(path) = &args.tokenizer {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        miner = miner.with_budget(Budget::tokens(tokenizer, args.budget));
    }
    if let Some(rev) = args.since {
        miner = miner.with_since(rev);
    }
    if let Some(units) = args.units {
        miner = miner.with_units_file(units);
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = miner.run(&args.out, &MineBar(bar.clone()))?;
    bar.finish_and_clear();
    println!("{report}");
    Ok(())
}
