//! The `forge` command line. It parses arguments and calls forge-core; nothing
//! else lives here.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use forge_core::demo::Demo;
use forge_core::gguf::{self, GgufFile};

#[derive(Parser)]
#[command(
    name = "forge",
    version,
    about = "Fine-tune a small open LLM on your codebase and ship it to llama.cpp/Ollama"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the main job on the embedded default (as far as it is built)
    Demo {
        /// Seed for every random input
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Generate text with a model (GGUF file, Hugging Face folder or `default`)
    Generate(GenerateArgs),
    /// Mine a repository into semantic units and training datasets
    Mine(MineArgs),
    /// Inspect GGUF files
    Gguf {
        #[command(subcommand)]
        command: GgufCommand,
    },
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// A GGUF file, a Hugging Face folder, or `default` (SmolLM2-135M-Instruct)
    #[arg(long, default_value = "default")]
    model: String,
    /// The prompt (with --chat: the user message)
    #[arg(long)]
    prompt: String,
    /// Tokens to generate (0: none, e.g. with --top-logprobs)
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy)
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep the K most probable tokens (0: off)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling mass (1: off)
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Wrap the prompt as a user message in the model's chat template
    #[arg(long)]
    chat: bool,
    /// Print the K most probable next tokens after the prompt
    #[arg(long)]
    top_logprobs: Option<usize>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct MineArgs {
    /// The repository (or any folder) to mine
    repo: std::path::PathBuf,
    /// Output folder for the dataset splits and the dataset card
    #[arg(long)]
    out: std::path::PathBuf,
    /// alpaca-json | alpaca | sharegpt | text | completions | messages | forge
    #[arg(long, default_value = "messages")]
    format: String,
    /// Also write every mined unit with its metadata as JSONL
    #[arg(long)]
    units: Option<std::path::PathBuf>,
    /// Comma-separated tasks: completion,fim,explain,doc_to_code,raft (or "all")
    #[arg(long, default_value = "all")]
    tasks: String,
    /// Unit budget in characters (in tokens with --tokenizer)
    #[arg(long, default_value_t = 2000)]
    budget: usize,
    /// A tokenizer.json to count the budget in tokens
    #[arg(long)]
    tokenizer: Option<std::path::PathBuf>,
    /// Only files changed since this git revision
    #[arg(long)]
    since: Option<String>,
    /// Seed for every random choice (RAFT, splits)
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Draws the miner's progress on stderr.
struct MineBar(indicatif::ProgressBar);

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

fn mine(args: MineArgs) -> forge_core::Result<()> {
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

#[derive(Subcommand)]
enum GgufCommand {
    /// Print the header, metadata and tensor table of a GGUF file (like gguf-py's gguf-dump)
    Dump {
        /// The GGUF file
        file: PathBuf,
        /// Emit a JSON document for scripts instead of text
        #[arg(long)]
        json: bool,
    },
}

/// Prints `text`; a closed pipe (`forge gguf dump x | head`) is not an error.
fn print_all(text: &str) -> forge_core::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(forge_core::Error::from(gguf::Error::Write(e)))
        }
        _ => Ok(()),
    }
}

fn generate(args: GenerateArgs) -> forge_core::Result<()> {
    use forge_core::model::{
        self as m, ChatMessage, GenerateOptions, Generator, LoadOptions, ModelSource,
    };
    let mut loaded = m::load(&ModelSource::parse(&args.model), &LoadOptions::new())?;
    let tokenizer = loaded.tokenizer.take().ok_or_else(|| {
        m::Error::Unsupported(format!("{}: the model has no tokenizer", args.model))
    })?;
    let mut generator = Generator::new(&mut loaded.model, &tokenizer);
    let ids = if args.chat {
        generator.chat_prompt_ids(&[ChatMessage::new("user", args.prompt.as_str())])?
    } else {
        tokenizer.encode(&args.prompt, true)?
    };
    let mut out = std::io::stdout().lock();
    let mut emit = |text: &str| -> forge_core::Result<()> {
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(forge_core::Error::from(gguf::Error::Write(e)))
            }
            _ => Ok(()),
        }
    };
    if let Some(k) = args.top_logprobs {
        let top = generator.next_token_top_k(&ids, k)?;
        if args.json {
            let doc = serde_json::json!({
                "model": args.model,
                "prompt_tokens": ids.len(),
                "top_logprobs": top,
            });
            emit(&format!("{doc}\n"))?;
        } else {
            for t in &top {
                emit(&format!("{:>8}  {:.6}  {:?}\n", t.id, t.prob, t.text))?;
            }
        }
    }
    if args.max_tokens == 0 {
        return Ok(());
    }
    let options = GenerateOptions::new()
        .with_max_tokens(args.max_tokens)
        .with_temperature(args.temperature)
        .with_top_k(args.top_k)
        .with_top_p(args.top_p)
        .with_seed(args.seed);
    let mut stream = generator.stream_ids(&ids, &options)?;
    let mut text = String::new();
    for delta in stream.by_ref() {
        let delta = delta?;
        if args.json {
            text.push_str(&delta);
        } else {
            emit(&delta)?;
        }
    }
    if args.json {
        let doc = serde_json::json!({
            "model": args.model,
            "text": text,
            "tokens": stream.tokens(),
            "finish_reason": format!("{:?}", stream.finish_reason()),
        });
        emit(&format!("{doc}\n"))?;
    } else {
        emit("\n")?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { seed } => Demo::new().with_seed(seed).run().map(|r| print!("{r}")),
        Command::Generate(args) => generate(args),
        Command::Mine(args) => mine(args),
        Command::Gguf {
            command: GgufCommand::Dump { file, json },
        } => GgufFile::open(&file)
            .map_err(forge_core::Error::from)
            .and_then(|f| {
                print_all(&if json {
                    gguf::dump::to_json(&f)
                } else {
                    gguf::dump::to_text(&f)
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
