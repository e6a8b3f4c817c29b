//! The `forge` command line. It parses arguments and calls forge-core; nothing
//! else lives here. One module per subcommand.

mod eval;
mod export;
mod generate;
mod gguf;
mod init;
mod mine;
mod rollback;
mod run;
mod serve;
mod status;
mod train;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use forge_core::demo::Demo;

#[derive(Parser)]
#[command(
    name = "forge",
    version,
    about = "Fine-tune a small open LLM on your codebase and ship it to llama.cpp/Ollama"
)]
struct Cli {
    /// Log what happens (-v info, -vv debug, -vvv trace) on stderr
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Where MLX computes: the GPU when one is present, else the CPU
    /// (`auto`, the default, also reads FORGE_DEVICE); `cpu` or `gpu` to force
    #[arg(long, global = true, default_value = "auto")]
    device: String,
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
    Generate(generate::GenerateArgs),
    /// Mine a repository into semantic units and training datasets
    Mine(mine::MineArgs),
    /// Export a model (with adapters fused, or an adapter alone) to GGUF for llama.cpp and Ollama
    Export(export::ExportArgs),
    /// Fine-tune adapters (LoRA, PiSSA, DoRA, CLoQ, ...) from a TOML run file
    Train(train::TrainArgs),
    /// Evaluate models: CodeBLEU, perplexity, repository reconstruction, pass@k, report + gate
    Eval {
        #[command(subcommand)]
        command: eval::EvalCommand,
    },
    /// Write a commented default forge.toml
    Init(init::InitArgs),
    /// Run the pipeline: mine, dataset, train, judge, export, deploy (stages whose inputs did not change are reused)
    Run(run::RunArgs),
    /// Poll git and run the pipeline when enough files changed or a matching tag appears
    Watch(watch::WatchArgs),
    /// Show the active model, the registry, the deployment log and the runs
    Status(status::StatusArgs),
    /// Make an earlier model active again
    Rollback(rollback::RollbackArgs),
    /// Serve the model over an OpenAI-compatible HTTP API, with retrieval over the repository
    Serve(serve::ServeArgs),
    /// Inspect GGUF files
    Gguf {
        #[command(subcommand)]
        command: gguf::GgufCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    if matches!(
        cli.command,
        Command::Train(_) | Command::Run(_) | Command::Watch(_) | Command::Demo { .. }
    ) {
        // Commands that train: direct CUDA launches (MLX's CUDA graphs cost
        // a training step more host time than they save); generation and
        // serving keep MLX's default.
        forge_core::mlx::prefer_direct_cuda_launches();
    }
    let device = cli
        .device
        .parse::<forge_core::mlx::DeviceChoice>()
        .and_then(forge_core::mlx::select_device);
    if let Err(e) = device {
        eprintln!("error: --device: {e}");
        return ExitCode::from(2);
    }
    let result: anyhow::Result<()> = match cli.command {
        Command::Demo { seed } => Demo::new()
            .with_seed(seed)
            .run()
            .map(|r| print!("{r}"))
            .map_err(Into::into),
        Command::Generate(args) => generate::run(args).map_err(Into::into),
        Command::Mine(args) => mine::run(args).map_err(Into::into),
        Command::Export(args) => export::run(args).map_err(Into::into),
        Command::Train(args) => train::run(args).map_err(Into::into),
        Command::Eval { command } => eval::run(command),
        Command::Gguf { command } => gguf::run(command).map_err(Into::into),
        Command::Serve(args) => serve::run(args).map_err(Into::into),
        Command::Init(args) => init::run(args).map_err(Into::into),
        Command::Run(args) => run::run(args),
        Command::Watch(args) => watch::run(args),
        Command::Status(args) => status::run(args),
        Command::Rollback(args) => rollback::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(run::exit_code(&err))
        }
    }
}
