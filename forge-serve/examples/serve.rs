//! The server from the library, without the rest of the `forge` CLI (what
//! `forge serve` runs; this builds in a fraction of the time, for the load
//! test in docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p forge-serve --example serve -- --model default --repo . \
//!     --addr 127.0.0.1:8088 --workers 1 --queue 8
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use forge_serve::{ServeConfig, serve_blocking};

#[derive(Parser)]
struct Args {
    /// A GGUF file, a Hugging Face folder, or `default`
    #[arg(long, default_value = "default")]
    model: String,
    /// Repository to retrieve from (none: no retrieval)
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Listen address (loopback)
    #[arg(long, default_value = "127.0.0.1:8088")]
    addr: SocketAddr,
    /// Generation workers (CPU engine)
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Requests allowed to wait; more get 429
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Per-request time limit, seconds
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn main() -> forge_serve::Result<()> {
    let args = Args::parse();
    let mut config = ServeConfig::new(args.model)
        .with_addr(args.addr)
        .with_workers(args.workers)
        .with_queue(args.queue)
        .with_timeout(Duration::from_secs(args.timeout));
    if let Some(repo) = args.repo {
        config = config.with_repo(repo);
    }
    serve_blocking(config, |r| {
        eprintln!("serving {} ({}) at http://{}", r.model_id, r.engine, r.addr);
        if let Some(ix) = &r.index {
            eprintln!(
                "index: {} files, {} units, {} ms",
                ix.files, ix.units, ix.millis
            );
        }
    })
}
