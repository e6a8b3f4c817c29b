//! `forge eval`: CodeBLEU, perplexity, repository reconstruction, pass@k and the validation
//! report with its deployment gate.

mod passk;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use forge_core::judge::{
    CodeBleu, CodeBleuScore, EvalResults, Gate, Lang, PerplexityOptions, ReconstructOptions,
    Report, TaskScore, Weights,
};

#[derive(clap::Subcommand)]
pub(crate) enum EvalCommand {
    /// CodeBLEU of a candidate file against a reference file (score first, then the four
    /// components)
    Codebleu(CodebleuArgs),
    /// Perplexity and mean token loss of a model (with or without adapters) on a dataset,
    /// masked as in training
    Perplexity(PerplexityArgs),
    /// Regenerate the bodies of recently changed functions from signature + docstring and
    /// score exact match, edit similarity and CodeBLEU
    Reconstruct(ReconstructArgs),
    /// Run HumanEval-style samples in the sandbox and report pass@k
    Passk(passk::PasskArgs),
    /// Compare a candidate's results with a baseline's, apply the gate, write
    /// report.{json,md,html}; exits with an error when the gate fails
    Report(ReportArgs),
}

#[derive(clap::Args)]
pub(crate) struct CodebleuArgs {
    /// python | rust
    #[arg(long)]
    lang: String,
    /// The reference code
    #[arg(long)]
    reference: PathBuf,
    /// The candidate code
    #[arg(long)]
    candidate: PathBuf,
    /// Reproduce PyPI codebleu==0.7.0 exactly, quirks included
    #[arg(long)]
    compat: bool,
    /// Weights of ngram, weighted ngram, syntax, dataflow
    #[arg(long, value_delimiter = ',', num_args = 4, default_values_t = [0.25, 0.25, 0.25, 0.25])]
    weights: Vec<f64>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    /// A GGUF file, a Hugging Face folder, or `default` (SmolLM2-135M-Instruct)
    #[arg(long, default_value = "default")]
    model: String,
    /// Adapter folder (PEFT or mlx-lm layout)
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Merge the metrics (and per-task scores) into this results JSON for `forge eval report`
    #[arg(long)]
    results: Option<PathBuf>,
    /// Label of the results (default: the model and adapter)
    #[arg(long)]
    label: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

impl ModelArgs {
    fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| match &self.adapter {
            Some(a) => format!("{} + {}", self.model, a.display()),
            None => self.model.clone(),
        })
    }
}

#[derive(clap::Args)]
pub(crate) struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Held-out data (JSONL in any format forge train reads)
    #[arg(long)]
    data: PathBuf,
    /// Take prompt style, masking, packing and length from this run file's [data] section
    #[arg(long)]
    run: Option<PathBuf>,
    /// chat | plain
    #[arg(long)]
    prompt_style: Option<String>,
    /// Count the prompt tokens in the loss too
    #[arg(long)]
    no_mask_prompt: bool,
    /// Pack examples into full rows
    #[arg(long)]
    packing: bool,
    /// Longest sequence
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// Sequences per forward pass
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
}

#[derive(clap::Args)]
pub(crate) struct ReconstructArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The repository
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Held-out units: those of the files changed since this git revision
    #[arg(long, default_value = "HEAD~1")]
    since: String,
    /// Most tokens per generated body
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Evaluate at most this many units (in the miner's order)
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    /// The candidate's results JSON
    #[arg(long)]
    candidate: PathBuf,
    /// The baseline's results JSON
    #[arg(long)]
    baseline: PathBuf,
    /// Gate TOML ([[rule]] metric/min/max/max_regression/max_relative_regression); default:
    /// CodeBLEU no more than 0.01 below the baseline, perplexity at most 1% worse
    #[arg(long)]
    gate: Option<PathBuf>,
    /// Output folder for report.json, report.md and report.html
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn run(cmd: EvalCommand) -> anyhow::Result<()> {
    match cmd {
        EvalCommand::Codebleu(a) => codebleu(a),
        EvalCommand::Perplexity(a) => perplexity(a),
        EvalCommand::Reconstruct(a) => reconstruct(a),
        EvalCommand::Passk(a) => passk::run(a),
        EvalCommand::Report(a) => report(a),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn codebleu(a: CodebleuArgs) -> anyhow::Result<()> {
    let lang: Lang = a.lang.parse()?;
    let [ngram, weighted_ngram, syntax, dataflow] = a.weights[..] else {
        bail!("--weights takes four numbers");
    };
    let s = CodeBleu::new(lang)
        .with_weights(Weights {
            ngram,
            weighted_ngram,
            syntax,
            dataflow,
        })?
        .with_compat(a.compat)
        .score(&read(&a.reference)?, &read(&a.candidate)?);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print_codebleu(&s);
    }
    Ok(())
}

fn print_codebleu(s: &CodeBleuScore) {
    println!("codebleu: {:.6}", s.codebleu);
    println!("ngram_match: {:.6}", s.ngram_match);
    println!("weighted_ngram_match: {:.6}", s.weighted_ngram_match);
    println!("syntax_match: {:.6}", s.syntax_match);
    println!("dataflow_match: {:.6}", s.dataflow_match);
    if let Some(w) = &s.warning {
        println!("warning: {w}");
    }
}

fn bar(len: u64, what: &str) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{elapsed}}<{{eta}}"
        ))
        .context("progress style")?,
    );
    Ok(bar)
}

/// Merges `update` into the results file at `path` (created if missing): metrics overwrite,
/// tasks with the same id merge their scores.
fn merge_results(path: &Path, update: EvalResults) -> anyhow::Result<()> {
    let mut r = if path.exists() {
        EvalResults::from_file(path)?
    } else {
        EvalResults::new(update.label.clone())
    };
    r.metrics.extend(update.metrics);
    for t in update.tasks {
        match r.tasks.iter_mut().find(|x| x.id == t.id) {
            Some(x) => x.scores.extend(t.scores),
            None => r.tasks.push(TaskScore {
                id: t.id,
                scores: t.scores,
            }),
        }
    }
    r.write(path)?;
    eprintln!("results: {}", path.display());
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> anyhow::Result<()> {
    let mut opts = match &a.run {
        Some(run) => {
            let cfg = forge_core::peft::RunFile::from_file(run)?
                .resolve(run.parent().unwrap_or_else(|| Path::new(".")))?;
            PerplexityOptions::from_data_config(&cfg.data)
        }
        None => PerplexityOptions::default(),
    };
    if let Some(style) = &a.prompt_style {
        opts = opts.with_prompt_style(match style.as_str() {
            "chat" => forge_core::peft::PromptStyle::Chat,
            "plain" => forge_core::peft::PromptStyle::Plain,
            other => bail!("--prompt-style {other:?}: expected chat or plain"),
        });
    }
    if a.no_mask_prompt {
        opts = opts.with_mask_prompt(false);
    }
    if a.packing {
        opts = opts.with_packing(true);
    }
    if let Some(n) = a.max_seq_len {
        opts = opts.with_max_seq_len(n);
    }
    opts = opts.with_batch_size(a.batch_size);
    let (mut model, tok) =
        forge_core::judge::load_for_eval(&a.model.model, a.model.adapter.as_deref())?;
    let pb = bar(0, "batches")?;
    let p = forge_core::judge::perplexity(&mut model, &tok, &a.data, &opts, &mut |done, total| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    })?;
    pb.finish_and_clear();
    if a.model.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        println!("perplexity: {:.6}", p.perplexity);
        println!("mean_loss: {:.6}", p.mean_loss);
        println!("tokens: {}", p.tokens);
        println!("sequences: {}", p.sequences);
    }
    if let Some(path) = &a.model.results {
        merge_results(
            path,
            EvalResults::new(a.model.label())
                .with_metric("perplexity", p.perplexity)
                .with_metric("mean_loss", p.mean_loss),
        )?;
    }
    Ok(())
}

fn reconstruct(a: ReconstructArgs) -> anyhow::Result<()> {
    let mut units = forge_core::judge::held_out_since(&a.repo, &a.since)?;
    if let Some(n) = a.limit {
        units.truncate(n);
    }
    if units.is_empty() {
        bail!(
            "no held-out unit: no Python or Rust function with a body changed in {} since {}",
            a.repo.display(),
            a.since
        );
    }
    let (model, tok) =
        forge_core::judge::load_for_eval(&a.model.model, a.model.adapter.as_deref())?;
    let mut model = model.into_model()?;
    let pb = bar(units.len() as u64, "units")?;
    let generated = forge_core::judge::generate_bodies(
        &mut model,
        &tok,
        &units,
        &ReconstructOptions {
            max_tokens: a.max_tokens,
            seed: 0,
        },
        &mut |done, _| pb.set_position(done as u64),
    )?;
    pb.finish_and_clear();
    let r = forge_core::judge::score_units(&units, &generated)?;
    if a.model.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "units: {}  exact_match: {:.4}  edit_similarity: {:.4}  codebleu: {:.4}",
            r.units.len(),
            r.exact_match,
            r.edit_similarity,
            r.codebleu
        );
        for u in &r.units {
            println!(
                "  {:<50} exact {}  edit {:.3}  codebleu {:.3}",
                format!("{} {}", u.path, u.symbol),
                u8::from(u.exact_match),
                u.edit_similarity,
                u.codebleu.codebleu
            );
        }
    }
    if let Some(path) = &a.model.results {
        merge_results(path, r.to_results(a.model.label()))?;
    }
    Ok(())
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    let candidate = EvalResults::from_file(&a.candidate)?;
    let baseline = EvalResults::from_file(&a.baseline)?;
    let gate = match &a.gate {
        Some(p) => Gate::from_file(p)?,
        None => Gate::default_rules(),
    };
    let r = Report::new(&candidate, &baseline, &gate);
    let paths = r.write(&a.out)?;
    for p in &paths {
        println!("wrote {}", p.display());
    }
    if r.verdict.passed {
        println!("gate: PASS");
        Ok(())
    } else {
        let reasons: Vec<&str> = r.verdict.reasons().collect();
        bail!("gate: FAIL\n  {}", reasons.join("\n  "))
    }
}
