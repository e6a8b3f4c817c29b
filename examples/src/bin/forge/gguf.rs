//! `forge gguf`: inspect GGUF files.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use forge_core::gguf::{self, GgufFile};

#[derive(Subcommand)]
pub(crate) enum GgufCommand {
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

/// Runs a `forge gguf` subcommand.
pub(crate) fn run(command: GgufCommand) -> forge_core::Result<()> {
    match command {
        GgufCommand::Dump { file, json } => {
            let f = GgufFile::open(&file)?;
            print_all(&if json {
                gguf::dump::to_json(&f)
            } else {
                gguf::dump::to_text(&f)
            })
        }
    }
}
