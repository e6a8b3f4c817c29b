//! The `forge` command line. It parses arguments and calls forge-core; nothing
//! else lives here.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { seed } => Demo::new().with_seed(seed).run().map(|r| print!("{r}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
