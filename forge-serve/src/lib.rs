#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod api;
mod config;
mod engine;
mod error;
mod index;
mod prompt;
mod server;

pub use config::{Backend, Forward, ServeConfig};
pub use error::{Error, Result};
pub use index::{FileState, Hit, RefreshReport, RepoIndex};
pub use prompt::{
    Citation, check_repo_path, documents_then, fim_prompt, fim_query, raft_user_turn,
};
pub use server::{ServerHandle, StartReport, start};

/// Runs the server until Ctrl-C (SIGINT) on a multi-threaded tokio runtime:
/// what `forge serve` calls. `on_start` sees the bound address, the model and
/// the index before the first request is accepted.
pub fn serve_blocking(config: ServeConfig, on_start: impl FnOnce(&StartReport)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("forge-serve-http")
        .build()
        .map_err(|e| Error::Engine(format!("tokio runtime: {e}")))?;
    runtime.block_on(async move {
        let (handle, report) = start(config).await?;
        on_start(&report);
        // Ctrl-C stops it; an error of the signal handler too (there would
        // be no other way to stop it cleanly).
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("forge serve: shutting down");
        handle.shutdown().await;
        Ok(())
    })
}
