//! `forge serve`: a local OpenAI-compatible server with retrieval over the
//! repository (forge-serve).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use forge_serve::{Backend, Forward, ServeConfig};

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// A GGUF file, a Hugging Face folder, or `default` (SmolLM2-135M-Instruct)
    #[arg(long, default_value = "default")]
    pub(crate) model: String,
    /// Adapters (PEFT or mlx-lm layout) fused into the model (MLX backend)
    #[arg(long)]
    pub(crate) adapter: Option<PathBuf>,
    /// The repository to retrieve from (omit with --no-retrieval)
    #[arg(long, default_value = ".")]
    pub(crate) repo: PathBuf,
    /// Serve without a retrieval index
    #[arg(long)]
    pub(crate) no_retrieval: bool,
    /// Where the index persists (default: <repo>/.forge/serve/index)
    #[arg(long)]
    pub(crate) index_dir: Option<PathBuf>,
    /// Listen address; a non-loopback one needs --allow-remote and an API key
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub(crate) addr: SocketAddr,
    /// Allow a non-loopback --addr
    #[arg(long)]
    pub(crate) allow_remote: bool,
    /// Require `Authorization: Bearer KEY` on /v1/* (or set FORGE_SERVE_API_KEY)
    #[arg(long)]
    pub(crate) api_key: Option<String>,
    /// The model name clients use (default: the model file or folder name)
    #[arg(long)]
    pub(crate) model_id: Option<String>,
    /// auto | cpu | mlx (auto: the CPU engine for GGUF files without adapters)
    #[arg(long, default_value = "auto")]
    pub(crate) backend: String,
    /// Generation workers (CPU engine; MLX always uses one)
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
    /// Requests that may wait for a worker; more get 429
    #[arg(long, default_value_t = 16)]
    pub(crate) queue: usize,
    /// Per-request time limit in seconds (queueing + generation)
    #[arg(long, default_value_t = 120.0)]
    pub(crate) timeout: f64,
    /// Documents retrieved per request
    #[arg(long, default_value_t = 4)]
    pub(crate) top_k: usize,
    /// Re-scan the repository for changes every SECONDS (0: only on POST /v1/index/refresh)
    #[arg(long, default_value_t = 0.0)]
    pub(crate) poll: f64,
    /// Forward generation to an OpenAI-compatible server (llama.cpp, Ollama), e.g. http://127.0.0.1:11434
    #[arg(long)]
    pub(crate) forward: Option<String>,
    /// The model name sent to the --forward server
    #[arg(long, default_value = "forge")]
    pub(crate) forward_model: String,
}

fn seconds(name: &'static str, s: f64) -> forge_serve::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| forge_serve::Error::Config {
        name,
        message: format!("{s}, expected a non-negative number of seconds"),
    })
}

pub(crate) fn run(args: ServeArgs) -> forge_serve::Result<()> {
    let mut config = ServeConfig::new(args.model)
        .with_backend(args.backend.parse::<Backend>()?)
        .with_addr(args.addr)
        .with_allow_remote(args.allow_remote)
        .with_workers(args.workers)
        .with_queue(args.queue)
        .with_timeout(seconds("timeout", args.timeout)?)
        .with_top_k(args.top_k)
        .with_poll(seconds("poll", args.poll)?);
    if !args.no_retrieval {
        config = config.with_repo(args.repo);
    }
    if let Some(dir) = args.index_dir {
        config = config.with_index_dir(dir);
    }
    if let Some(a) = args.adapter {
        config = config.with_adapter(a);
    }
    if let Some(k) = args
        .api_key
        .or_else(|| std::env::var("FORGE_SERVE_API_KEY").ok())
    {
        config = config.with_api_key(k);
    }
    if let Some(id) = args.model_id {
        config = config.with_model_id(id);
    }
    if let Some(url) = args.forward {
        config = config.with_forward(Forward {
            url,
            model: args.forward_model,
            api_key: std::env::var("FORGE_FORWARD_API_KEY").ok(),
        });
    }
    forge_serve::serve_blocking(config, |r| {
        if let Some(ix) = &r.index {
            eprintln!(
                "forge serve: index: {} files, {} units ({} mined, {} ms){}",
                ix.files,
                ix.units,
                ix.mined,
                ix.millis,
                ix.discarded
                    .as_ref()
                    .map(|d| format!("; rebuilt: {d}"))
                    .unwrap_or_default()
            );
        }
        eprintln!(
            "forge serve: {} ({}) at http://{}/v1",
            r.model_id, r.engine, r.addr
        );
    })
}
