//! `forge train`: fine-tune adapters from a TOML run file.

#[derive(clap::Args)]
pub(crate) struct TrainArgs {
    /// Model: `default`, a `.gguf` file or a Hugging Face folder (overrides `model` in the config)
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Training data: a JSONL file, or a folder with train.jsonl (and valid.jsonl)
    #[arg(long)]
    pub(crate) data: Option<std::path::PathBuf>,
    /// The TOML run file (see docs/crates/forge-peft.md for every key)
    #[arg(long)]
    pub(crate) config: Option<std::path::PathBuf>,
    /// Run directory: metrics.jsonl, checkpoints/, adapters/ (PEFT), mlx-lm/
    #[arg(long)]
    pub(crate) out: Option<std::path::PathBuf>,
    /// Start over even if the run directory has a checkpoint
    #[arg(long)]
    pub(crate) no_resume: bool,
}

pub(crate) fn run(args: TrainArgs) -> forge_core::Result<()> {
    use forge_core::train::{TrainJob, run};
    let mut job = TrainJob::new().with_resume(!args.no_resume);
    if let Some(c) = args.config {
        job = job.with_config(c);
    }
    if let Some(m) = args.model {
        job = job.with_model(m);
    }
    if let Some(d) = args.data {
        job = job.with_data(d);
    }
    if let Some(o) = args.out {
        job = job.with_out(o);
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("train [{bar:40}] {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let summary = run(&job, move |m| {
        b.set_length(m.steps as u64);
        b.set_position(m.step as u64);
        let val = m
            .val_loss
            .map(|v| format!(" val {v:.3}"))
            .unwrap_or_default();
        b.set_message(format!(
            "loss {:.3}{val} {:.0} tok/s",
            m.loss, m.tokens_per_s
        ));
    })?;
    bar.finish_and_clear();
    print!("{summary}");
    Ok(())
}
