//! `forge run`: the whole pipeline (mine → dataset → train → judge → export →
//! deploy) on a project, with progress bars, `--json` output and exit codes.

use std::path::PathBuf;
use std::sync::Arc;

use forge_core::peft::StepMetrics;
use forge_core::pipeline::{Observer, RunOptions, RunReport, RunStatus, StageOutcome};

/// Exit status: the gate refused the model (it was not deployed).
pub(crate) const EXIT_REJECTED: u8 = 3;
/// Exit status: another pipeline of the project holds the lock.
pub(crate) const EXIT_LOCKED: u8 = 4;
/// Exit status: training diverged.
pub(crate) const EXIT_DIVERGED: u8 = 5;

#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 deployed (or already active), 1 error, 2 usage, \
    3 the judge's gate refused the model, 4 another pipeline runs, 5 training diverged."
)]
pub(crate) struct RunArgs {
    /// The project: a folder with forge.toml, or the file
    #[arg(default_value = ".")]
    pub(crate) project: PathBuf,
    /// Continue the latest unfinished run (training resumes from its checkpoint)
    #[arg(long)]
    pub(crate) resume: bool,
    /// Print the run report as JSON on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

/// An error that ends the process with a given status.
#[derive(Debug)]
pub(crate) struct Exit(pub(crate) u8, pub(crate) String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// The exit status for an error of any subcommand.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(Exit(code, _)) = err.downcast_ref::<Exit>() {
        return *code;
    }
    match err.downcast_ref::<forge_core::Error>() {
        Some(forge_core::Error::Locked { .. }) => EXIT_LOCKED,
        Some(forge_core::Error::Peft(forge_core::peft::Error::Diverged { .. })) => EXIT_DIVERGED,
        _ => 1,
    }
}

/// Draws the pipeline's progress on stderr.
pub(crate) struct Bars {
    bar: indicatif::ProgressBar,
}

impl Bars {
    pub(crate) fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Self { bar }
    }
}

impl Observer for Bars {
    fn stage_started(&self, stage: &str) {
        self.bar.reset();
        self.bar.set_prefix(stage.to_string());
        self.bar.set_length(0);
        self.bar.set_message("");
    }
    fn stage_done(&self, stage: &str, outcome: &StageOutcome, seconds: f64) {
        let line = match outcome {
            StageOutcome::Ran => format!("{stage:>8} done in {seconds:.1} s"),
            StageOutcome::Reused(from) => format!("{stage:>8} unchanged, reused from run {from}"),
        };
        self.bar.println(line);
    }
    fn train_step(&self, m: &StepMetrics) {
        self.bar.set_length(m.steps as u64);
        self.bar.set_position(m.step as u64);
        let val = m
            .val_loss
            .map(|v| format!(" val {v:.3}"))
            .unwrap_or_default();
        self.bar.set_message(format!(
            "loss {:.3}{val} {:.0} tok/s",
            m.loss, m.tokens_per_s
        ));
    }
    fn progress(&self, _stage: &str, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }
    fn message(&self, text: &str) {
        self.bar.println(text);
    }
}

/// Maps a finished run to the process result.
pub(crate) fn finish(report: &RunReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    match report.status {
        RunStatus::Rejected => Err(Exit(
            EXIT_REJECTED,
            format!(
                "run {}: the judge's gate refused the model; the active model is unchanged",
                report.run_id
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let forge = forge_core::Forge::open(&args.project)?;
    let bars = Arc::new(Bars::new());
    let options = RunOptions::new()
        .with_resume(args.resume)
        .with_observer(bars.clone());
    let report = forge.run(options);
    bars.bar.finish_and_clear();
    finish(&report?, args.json)
}
