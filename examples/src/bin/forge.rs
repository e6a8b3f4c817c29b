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
    /// Inspect GGUF files
    Gguf {
        #[command(subcommand)]
        command: GgufCommand,
    },
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { seed } => Demo::new().with_seed(seed).run().map(|r| print!("{r}")),
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
