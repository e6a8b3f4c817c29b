//! The `forge` command line. It parses arguments and calls forge-core; nothing
//! else lives here. One module per subcommand.

mod eval;
mod export;
mod generate;
mod gguf;
mod mine;
mod train;

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
    /// Inspect GGUF files
    Gguf {
        #[command(subcommand)]
        command: gguf::GgufCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
