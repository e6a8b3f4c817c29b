//! Server configuration: a serde struct (so a run directory can keep it as
//! JSON) with `with_*` builders, validated once by [`ServeConfig::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which engine runs the model in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The CPU engine for GGUF files without adapters, else MLX.
    #[default]
    Auto,
    /// forge-model's CPU engine (`CpuModel`): GGUF weights in their stored
    /// types; thread-safe, one model copy per worker.
    Cpu,
    /// The MLX model (any source, adapters fused); MLX is not thread-safe, so
    /// it always runs on exactly one worker thread.
    Mlx,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "mlx" => Ok(Self::Mlx),
            other => Err(Error::config(
                "backend",
                format!("{other:?}, expected auto, cpu or mlx"),
            )),
        }
    }
}

/// Forward generation to an OpenAI-compatible server (llama.cpp's
/// `llama-server`, Ollama's `/v1` API) that runs the exported GGUF; retrieval
/// stays in Forge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// Base URL, e.g. `http://127.0.0.1:8080` (llama.cpp) or
    /// `http://127.0.0.1:11434` (Ollama); `/v1/...` is appended.
    pub url: String,
    /// The model name sent upstream (Ollama needs it; llama.cpp ignores it).
    pub model: String,
    /// Bearer key for the upstream server, if it wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// Everything `forge serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServeConfig {
    /// Model source: a GGUF file, a Hugging Face folder or `default`
    /// (forge-model's `ModelSource::parse`). Unused when forwarding.
    pub model: String,
    /// The model name clients use (`model` in requests, `/v1/models`);
    /// default: the source's file or folder name.
    pub model_id: Option<String>,
    /// Adapter folder (PEFT or mlx-lm layout), fused into the MLX model.
    pub adapter: Option<PathBuf>,
    /// Engine selection.
    pub backend: Backend,
    /// The repository retrieval runs over; `None`: no retrieval.
    pub repo: Option<PathBuf>,
    /// Where the index persists; default `<repo>/.forge/serve/index`.
    pub index_dir: Option<PathBuf>,
    /// Listen address; loopback unless `allow_remote`.
    pub addr: SocketAddr,
    /// Allow a non-loopback address (then `api_key` is required).
    pub allow_remote: bool,
    /// Required `Authorization: Bearer …` key for `/v1/*` when set.
    pub api_key: Option<String>,
    /// Generation workers (MLX: always 1).
    pub workers: usize,
    /// Requests allowed to wait for a worker; more are refused with 429.
    pub queue: usize,
    /// Per-request time limit (queueing + generation), milliseconds.
    pub timeout_ms: u64,
    /// Largest request body, bytes (413 above).
    pub max_body_bytes: usize,
    /// Largest prompt before tokenization, characters (400 above).
    pub max_prompt_chars: usize,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Documents retrieved per request by default.
    pub top_k: usize,
    /// Characters of retrieved documents at most (the best ones first).
    pub max_context_chars: usize,
    /// Re-scan the repository for changed files every this many
    /// milliseconds (0: only at start and on `POST /v1/index/refresh`).
    pub poll_ms: u64,
    /// Forward generation instead of running a model here.
    pub forward: Option<Forward>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model: "default".into(),
            model_id: None,
            adapter: None,
            backend: Backend::Auto,
            repo: None,
            index_dir: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 8088)),
            allow_remote: false,
            api_key: None,
            workers: 1,
            queue: 16,
            timeout_ms: 120_000,
            max_body_bytes: 1 << 20,
            max_prompt_chars: 256 * 1024,
            max_tokens_limit: 4096,
            default_max_tokens: 256,
            top_k: 4,
            max_context_chars: 8000,
            poll_ms: 0,
            forward: None,
        }
    }
}

impl ServeConfig {
    /// Serve `model` (see [`ServeConfig::model`]) with the defaults:
    /// `127.0.0.1:8088`, one worker, a queue of 16, 120 s per request.
    #[must_use]
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// The name clients use for the model.
    #[must_use]
    pub fn with_model_id(mut self, id: impl Into<String>) -> Self {
        self.model_id = Some(id.into());
        self
    }

    /// Adapters to fuse (MLX backend).
    #[must_use]
    pub fn with_adapter(mut self, dir: impl Into<PathBuf>) -> Self {
        self.adapter = Some(dir.into());
        self
    }

    /// The engine.
    #[must_use]
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Retrieve from the repository at `root`.
    #[must_use]
    pub fn with_repo(mut self, root: impl Into<PathBuf>) -> Self {
        self.repo = Some(root.into());
        self
    }

    /// Persist the index in `dir` instead of `<repo>/.forge/serve/index`.
    #[must_use]
    pub fn with_index_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.index_dir = Some(dir.into());
        self
    }

    /// The listen address (port 0: an ephemeral port).
    #[must_use]
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Allow a non-loopback address.
    #[must_use]
    pub fn with_allow_remote(mut self, allow: bool) -> Self {
        self.allow_remote = allow;
        self
    }

    /// Require this Bearer key.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Generation workers.
    #[must_use]
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Waiting requests allowed.
    #[must_use]
    pub fn with_queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Per-request time limit.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = timeout.as_millis().min(u128::from(u64::MAX)) as u64;
        self
    }

    /// Largest request body in bytes.
    #[must_use]
    pub fn with_max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Largest prompt in characters.
    #[must_use]
    pub fn with_max_prompt_chars(mut self, n: usize) -> Self {
        self.max_prompt_chars = n;
        self
    }

    /// Largest `max_tokens`.
    #[must_use]
    pub fn with_max_tokens_limit(mut self, n: usize) -> Self {
        self.max_tokens_limit = n;
        self
    }

    /// Documents retrieved per request by default.
    #[must_use]
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// Poll the repository for changes every `every` (zero: never).
    #[must_use]
    pub fn with_poll(mut self, every: Duration) -> Self {
        self.poll_ms = every.as_millis().min(u128::from(u64::MAX)) as u64;
        self
    }

    /// Forward generation to an OpenAI-compatible server.
    #[must_use]
    pub fn with_forward(mut self, forward: Forward) -> Self {
        self.forward = Some(forward);
        self
    }

    /// The model name clients use.
    pub fn served_model_id(&self) -> String {
        if let Some(id) = &self.model_id {
            return id.clone();
        }
        if let Some(f) = &self.forward {
            return f.model.clone();
        }
        let path = std::path::Path::new(&self.model);
        let name = path
            .file_name()
            .map_or_else(|| self.model.clone(), |n| n.to_string_lossy().into_owned());
        name.strip_suffix(".gguf")
            .map_or(name.clone(), str::to_string)
    }

    /// The index folder, when retrieval is on.
    pub fn index_path(&self) -> Option<PathBuf> {
        match (&self.index_dir, &self.repo) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(r)) => Some(r.join(".forge").join("serve").join("index")),
            (None, None) => None,
        }
    }

    /// Checks the values that cannot be used as they are.
    pub fn validate(&self) -> Result<()> {
        if !self.addr.ip().is_loopback() {
            if !self.allow_remote {
                return Err(Error::config(
                    "addr",
                    format!(
                        "{} is not a loopback address; serving beyond this machine needs \
                         --allow-remote and an API key",
                        self.addr
                    ),
                ));
            }
            if self.api_key.as_deref().is_none_or(str::is_empty) {
                return Err(Error::config(
                    "api_key",
                    format!(
                        "a non-loopback address ({}) needs an API key (--api-key or \
                         FORGE_SERVE_API_KEY)",
                        self.addr
                    ),
                ));
            }
        }
        if self.workers == 0 {
            return Err(Error::config("workers", "0, expected at least 1"));
        }
        if self.timeout_ms == 0 {
            return Err(Error::config("timeout", "0, expected a positive duration"));
        }
        if self.max_tokens_limit == 0 || self.default_max_tokens == 0 {
            return Err(Error::config("max_tokens", "0, expected at least 1"));
        }
        if self.default_max_tokens > self.max_tokens_limit {
            return Err(Error::config(
                "default_max_tokens",
                format!(
                    "{} is above max_tokens_limit ({})",
                    self.default_max_tokens, self.max_tokens_limit
                ),
            ));
        }
        if let Some(f) = &self.forward
            && !(f.url.starts_with("http://") || f.url.starts_with("https://"))
        {
            return Err(Error::config(
                "forward",
                format!("{:?}, expected an http:// URL", f.url),
            ));
        }
        if self.forward.is_some() && self.adapter.is_some() {
            return Err(Error::config(
                "adapter",
                "adapters apply to a local model; with --forward load them in the upstream \
                 server (a GGUF LoRA from `forge export --adapter DIR --lora`)",
            ));
        }
        Ok(())
    }

    /// The per-request time limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}
