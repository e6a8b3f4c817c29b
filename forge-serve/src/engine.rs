//! Generation engines behind the HTTP layer, and admission control.
//!
//! A request is admitted only while fewer than `workers + queue` requests are
//! in flight (waiting or running); otherwise it is refused (429) before any
//! work. An admitted request becomes a [`Job`] that carries its admission
//! [`Permit`] (released when the job ends, not when the client leaves), a
//! deadline, and the sending half of an event channel. The job ends early
//! when the channel's receiver is gone (the client disconnected or the
//! handler timed out): the engine checks between tokens.
//!
//! - **Local**: `workers` OS threads, each owning a model (the CPU engine
//!   `CpuModel`, or the MLX `Model` — MLX is not thread-safe, so MLX runs on
//!   exactly one thread that loads, owns and drives the model) and pulling
//!   jobs from one queue. Tokenization and the chat template run on the
//!   worker too.
//! - **Forward**: the same jobs sent to an OpenAI-compatible server
//!   (llama.cpp `llama-server`, Ollama `/v1`) with `stream: true`; at most
//!   `workers` upstream requests at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use forge_model::{
    CausalLm, ChatMessage, FinishReason, GenerateOptions, Generator, LoadOptions, ModelSource,
    Tokenizer,
};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{Backend, Forward, ServeConfig};
use crate::error::{Error, Result};

/// Counts requests in flight against a limit.
#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: AtomicUsize,
    limit: usize,
    pub(crate) refused: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

/// One admitted request; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Admission>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            limit,
            refused: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        })
    }

    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        let mut cur = self.in_flight.load(Ordering::Acquire);
        loop {
            if cur >= self.limit {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Permit(Arc::clone(self))),
                Err(now) => cur = now,
            }
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

/// What to generate from.
#[derive(Debug, Clone)]
pub(crate) enum Prompt {
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text (completions, FIM).
    Text(String),
}

/// Sampling settings of one request (OpenAI names).
#[derive(Debug, Clone)]
pub(crate) struct Sampling {
    pub(crate) max_tokens: usize,
    pub(crate) temperature: f32,
    pub(crate) top_p: f32,
    pub(crate) seed: u64,
    pub(crate) stop: Vec<String>,
    pub(crate) ignore_eos: bool,
}

impl Sampling {
    fn options(&self) -> GenerateOptions {
        GenerateOptions::new()
            .with_max_tokens(self.max_tokens)
            .with_temperature(self.temperature)
            .with_top_p(self.top_p)
            .with_seed(self.seed)
            .with_stop_strings(self.stop.clone())
            .with_stop_at_eos(!self.ignore_eos)
    }
}

/// Progress of a job, in order: `Started`, any number of `Delta`, then
/// `Done`; or `Failed` at any point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Started {
        prompt_tokens: usize,
        /// DLP-LoRA: the adapters fused for this request, with weights.
        adapters: Vec<(String, f32)>,
    },
    Delta(String),
    Done {
        finish_reason: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Failed {
        status: u16,
        code: &'static str,
        message: String,
    },
}

/// One admitted generation request.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) prompt: Prompt,
    pub(crate) sampling: Sampling,
    pub(crate) deadline: Instant,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) admission: Arc<Admission>,
    /// The admission slot, released just before the last event is sent, so
    /// a client that reads its answer sees the slot free.
    pub(crate) permit: Mutex<Option<Permit>>,
}

impl Job {
    fn send(&self, e: Event) -> bool {
        self.events.send(e).is_ok()
    }

    fn gone(&self) -> bool {
        self.events.is_closed()
    }

    fn release(&self) {
        drop(
            self.permit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    fn fail(&self, status: u16, code: &'static str, message: impl Into<String>) {
        self.release();
        self.send(Event::Failed {
            status,
            code,
            message: message.into(),
        });
    }
}

/// Facts about the served model.
#[derive(Debug, Clone)]
pub(crate) struct ModelInfo {
    /// Longest sequence (prompt + generation), tokens; `None`: unknown
    /// (forwarding; the upstream server checks).
    pub(crate) context_len: Option<usize>,
    /// Which engine runs it, for `/health`.
    pub(crate) engine: String,
    /// Jobs that run at once (MLX: 1 whatever the configuration says).
    pub(crate) workers: usize,
}

/// The engine of a running server.
#[derive(Debug)]
pub(crate) enum Engine {
    Local {
        queue: Mutex<Option<mpsc::Sender<Job>>>,
        workers: Mutex<Vec<JoinHandle<()>>>,
    },
    Forward {
        client: reqwest::Client,
        forward: Forward,
        slots: Arc<tokio::sync::Semaphore>,
    },
}

fn resolve_backend(config: &ServeConfig, source: &ModelSource) -> Backend {
    match config.backend {
        Backend::Auto => {
            if matches!(source, ModelSource::HfDir(_)) || config.adapter.is_some() {
                Backend::Mlx
            } else {
                Backend::Cpu
            }
        }
        b => b,
    }
}

/// Loads an adapter folder onto the MLX model and fuses it (PEFT layout when
/// `adapter_model.safetensors` is there, else mlx-lm's `adapters.safetensors`).
fn fuse_adapter(model: forge_model::Model, dir: &std::path::Path) -> Result<forge_model::Model> {
    let peft = if dir.join(forge_peft::PEFT_WEIGHTS).is_file() {
        forge_peft::PeftModel::load_peft(model, dir)?
    } else if dir.join(forge_peft::MLX_LM_WEIGHTS).is_file() {
        forge_peft::PeftModel::load_mlx_lm(model, dir)?
    } else {
        return Err(Error::config(
            "adapter",
            format!(
                "{}: no {} or {} to load",
                dir.display(),
                forge_peft::PEFT_WEIGHTS,
                forge_peft::MLX_LM_WEIGHTS
            ),
        ));
    };
    Ok(peft.merged_model()?)
}

type Loaded = std::result::Result<ModelInfo, String>;

impl Engine {
    /// Starts the engine the configuration asks for; local models are loaded
    /// (on their worker threads) before this returns.
    pub(crate) async fn start(config: &ServeConfig) -> Result<(Self, ModelInfo)> {
        if let Some(forward) = &config.forward {
            let client = reqwest::Client::builder()
                .build()
                .map_err(|e| Error::Engine(format!("http client: {e}")))?;
            let info = ModelInfo {
                context_len: None,
                engine: format!("forward to {}", forward.url),
                workers: config.workers,
            };
            return Ok((
                Self::Forward {
                    client,
                    forward: forward.clone(),
                    slots: Arc::new(tokio::sync::Semaphore::new(config.workers)),
                },
                info,
            ));
        }
        let source = ModelSource::parse(&config.model);
        let backend = resolve_backend(config, &source);
        if backend == Backend::Cpu && config.adapter.is_some() {
            return Err(Error::config(
                "backend",
                "the CPU engine runs GGUF files as stored; adapters need --backend mlx (or \
                 export the fused model to GGUF first)",
            ));
        }
        let workers = if backend == Backend::Mlx {
            1
        } else {
            config.workers
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        let mut ready = Vec::new();
        for w in 0..workers {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Loaded>();
            let rx = Arc::clone(&rx);
            let source = source.clone();
            let adapter = config.adapter.clone();
            let handle = std::thread::Builder::new()
                .name(format!("forge-serve-worker-{w}"))
                .spawn(move || worker_main(backend, source, adapter, rx, ready_tx))
                .map_err(|e| Error::Engine(format!("spawning a worker: {e}")))?;
            handles.push(handle);
            ready.push(ready_rx);
        }
        let mut info = None;
        let mut failure = None;
        for r in ready {
            match r.await {
                Ok(Ok(i)) => info = Some(i),
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some("a worker stopped while loading".into()),
            }
        }
        let engine = Self::Local {
            queue: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
        };
        match (failure, info) {
            (None, Some(mut info)) => {
                info.workers = workers;
                Ok((engine, info))
            }
            (f, _) => {
                engine.shutdown();
                Err(Error::Engine(f.unwrap_or_else(|| "no worker".into())))
            }
        }
    }

    /// Queues `job`; a job that cannot be queued fails its event channel.
    pub(crate) fn submit(&self, job: Job) {
        match self {
            Self::Local { queue, .. } => {
                let guard = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match guard.as_ref() {
                    Some(tx) => {
                        if let Err(mpsc::SendError(job)) = tx.send(job) {
                            job.fail(503, "engine_stopped", "the generation workers stopped");
                        }
                    }
                    None => job.fail(503, "engine_stopped", "the server is shutting down"),
                }
            }
            Self::Forward {
                client,
                forward,
                slots,
            } => {
                let (client, forward, slots) = (client.clone(), forward.clone(), Arc::clone(slots));
                tokio::spawn(async move { forward_job(client, forward, slots, job).await });
            }
        }
    }

    /// Stops the workers after the jobs already queued.
    pub(crate) fn shutdown(&self) {
        if let Self::Local { queue, workers } = self {
            queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            let handles: Vec<_> = workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .drain(..)
                .collect();
            for h in handles {
                let _ = h.join();
            }
        }
    }
}

fn worker_main(
    backend: Backend,
    source: ModelSource,
    adapter: Option<PathBuf>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    ready: tokio::sync::oneshot::Sender<Loaded>,
) {
    match backend {
        Backend::Mlx => {
            let loaded = (|| -> Result<(MlxModel, Tokenizer)> {
                let mut loaded = forge_model::load(&source, &LoadOptions::new())?;
                let tokenizer = loaded.tokenizer.take().ok_or_else(|| {
                    Error::config("model", "the model has no tokenizer (tokenizer.json)")
                })?;
                let model = match &adapter {
                    Some(dir) if dir.join(forge_peft::DLP_CONFIG).is_file() => {
                        MlxModel::Dlp(Box::new(forge_peft::DlpLora::load(loaded.model, dir)?))
                    }
                    Some(dir) => MlxModel::Fused(Box::new(fuse_adapter(loaded.model, dir)?)),
                    None => MlxModel::Fused(Box::new(loaded.model)),
                };
                Ok((model, tokenizer))
            })();
            match loaded {
                Ok((model, tokenizer)) => {
                    let engine = match (&adapter, &model) {
                        (Some(a), MlxModel::Dlp(d)) => format!(
                            "mlx, DLP-LoRA {} ({} adapters, top_p {})",
                            a.display(),
                            d.library().len(),
                            d.top_p()
                        ),
                        (Some(a), _) => format!("mlx, adapter {} fused", a.display()),
                        (None, _) => "mlx".into(),
                    };
                    let info = ModelInfo {
                        context_len: Some(model.config().max_position_embeddings),
                        engine,
                        workers: 1,
                    };
                    mlx_loop(model, tokenizer, info, rx, ready);
                }
                Err(e) => {
                    let _ = ready.send(Err(e.to_string()));
                }
            }
        }
        Backend::Cpu | Backend::Auto => match forge_model::load_cpu(&source) {
            Ok((model, tokenizer)) => {
                let info = ModelInfo {
                    context_len: Some(model.config().max_position_embeddings),
                    engine: "cpu".into(),
                    workers: 0,
                };
                worker_loop(model, tokenizer, info, rx, ready);
            }
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
            }
        },
    }
}

/// The MLX worker's model: adapters fused once, or DLP-LoRA fusing per
/// request (Zhang et al. 2024, arXiv:2410.01497: the plugin picks adapters by
/// top-p over its task probabilities for the prompt; forge-peft fuses them
/// with sentence-level weights).
enum MlxModel {
    Fused(Box<forge_model::Model>),
    Dlp(Box<forge_peft::DlpLora>),
}

impl MlxModel {
    fn config(&self) -> &forge_model::ModelConfig {
        match self {
            Self::Fused(m) => m.config(),
            Self::Dlp(d) => d.base().config(),
        }
    }
}

fn mlx_loop(
    model: MlxModel,
    tokenizer: Tokenizer,
    info: ModelInfo,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    ready: tokio::sync::oneshot::Sender<Loaded>,
) {
    match model {
        MlxModel::Fused(m) => worker_loop(*m, tokenizer, info, rx, ready),
        MlxModel::Dlp(dlp) => {
            let context_len = info.context_len;
            let _ = ready.send(Ok(info));
            loop {
                let job = {
                    let guard = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    guard.recv()
                };
                let Ok(job) = job else {
                    return;
                };
                let Some(ids) = prepare(&tokenizer, context_len, &job) else {
                    continue;
                };
                let (mut fused, selection) = match dlp.fused_for(&ids) {
                    Ok(x) => x,
                    Err(e) => {
                        job.fail(500, "adapter_fusion_failed", e.to_string());
                        continue;
                    }
                };
                let names = dlp.library().names();
                let adapters = selection
                    .weights
                    .iter()
                    .map(|&(k, w)| {
                        let name = names
                            .get(k)
                            .map_or_else(|| k.to_string(), |n| (*n).to_string());
                        (name, w)
                    })
                    .collect();
                generate_job(&mut fused, &tokenizer, &ids, adapters, job);
            }
        }
    }
}

fn worker_loop<M: CausalLm>(
    mut model: M,
    tokenizer: Tokenizer,
    info: ModelInfo,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    ready: tokio::sync::oneshot::Sender<Loaded>,
) {
    let context_len = info.context_len;
    let _ = ready.send(Ok(info));
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.recv()
        };
        let Ok(job) = job else {
            return;
        };
        run_local(&mut model, &tokenizer, context_len, job);
    }
}

fn run_local<M: CausalLm>(
    model: &mut M,
    tokenizer: &Tokenizer,
    context_len: Option<usize>,
    job: Job,
) {
    if let Some(ids) = prepare(tokenizer, context_len, &job) {
        generate_job(model, tokenizer, &ids, Vec::new(), job);
    }
}

/// The prompt's token ids, or `None` after failing (or dropping) the job.
fn prepare(tokenizer: &Tokenizer, context_len: Option<usize>, job: &Job) -> Option<Vec<u32>> {
    if job.gone() {
        job.admission.cancelled.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if Instant::now() >= job.deadline {
        job.fail(504, "timeout", "the request timed out while queued");
        return None;
    }
    let ids = match &job.prompt {
        Prompt::Chat(messages) => tokenizer
            .apply_chat_template(messages, true)
            .and_then(|text| tokenizer.encode(&text, false)),
        Prompt::Text(text) => tokenizer.encode(text, true),
    };
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => {
            job.fail(400, "invalid_prompt", e.to_string());
            return None;
        }
    };
    if ids.is_empty() {
        job.fail(400, "invalid_prompt", "the prompt has no tokens");
        return None;
    }
    if let Some(ctx) = context_len
        && ids.len() + job.sampling.max_tokens > ctx
    {
        job.fail(
            400,
            "context_length_exceeded",
            format!(
                "the prompt is {} tokens and max_tokens is {}; the model's context is {ctx} \
                 tokens",
                ids.len(),
                job.sampling.max_tokens
            ),
        );
        return None;
    }
    Some(ids)
}

fn generate_job<M: CausalLm>(
    model: &mut M,
    tokenizer: &Tokenizer,
    ids: &[u32],
    adapters: Vec<(String, f32)>,
    job: Job,
) {
    let prompt_tokens = ids.len();
    if !job.send(Event::Started {
        prompt_tokens,
        adapters,
    }) {
        job.admission.cancelled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut generator = Generator::new(model, tokenizer);
    let mut stream = match generator.stream_ids(ids, &job.sampling.options()) {
        Ok(s) => s,
        Err(e) => return job.fail(400, "invalid_request", e.to_string()),
    };
    for delta in stream.by_ref() {
        match delta {
            Ok(text) => {
                if job.gone() || !job.send(Event::Delta(text)) {
                    job.admission.cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if Instant::now() >= job.deadline {
                    return job.fail(504, "timeout", "the request timed out while generating");
                }
            }
            Err(e) => return job.fail(500, "generation_failed", e.to_string()),
        }
    }
    let finish_reason = match stream.finish_reason() {
        Some(FinishReason::MaxTokens) => "length",
        _ => "stop",
    };
    let completion_tokens = stream.tokens().len();
    job.admission.completed.fetch_add(1, Ordering::Relaxed);
    job.release();
    job.send(Event::Done {
        finish_reason,
        prompt_tokens,
        completion_tokens,
    });
}

/// Sends a job upstream and translates the server-sent events back.
async fn forward_job(
    client: reqwest::Client,
    forward: Forward,
    slots: Arc<tokio::sync::Semaphore>,
    job: Job,
) {
    let Ok(_slot) = slots.acquire().await else {
        return job.fail(503, "engine_stopped", "the server is shutting down");
    };
    if job.gone() {
        job.admission.cancelled.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let s = &job.sampling;
    let mut body = serde_json::json!({
        "model": forward.model,
        "max_tokens": s.max_tokens,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "seed": s.seed,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !s.stop.is_empty() {
        body["stop"] = serde_json::json!(s.stop);
    }
    if s.ignore_eos {
        body["ignore_eos"] = serde_json::json!(true);
    }
    let endpoint = match &job.prompt {
        Prompt::Chat(messages) => {
            body["messages"] = serde_json::json!(
                messages
                    .iter()
                    .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
                    .collect::<Vec<_>>()
            );
            "chat/completions"
        }
        Prompt::Text(text) => {
            body["prompt"] = serde_json::json!(text);
            "completions"
        }
    };
    let url = format!("{}/v1/{endpoint}", forward.url.trim_end_matches('/'));
    let mut req = client.post(&url).json(&body);
    if let Some(key) = &forward.api_key {
        req = req.bearer_auth(key);
    }
    let remaining = job.deadline.saturating_duration_since(Instant::now());
    let resp = match tokio::time::timeout(remaining, req.send()).await {
        Err(_) => {
            return job.fail(504, "timeout", format!("{url}: no answer in time"));
        }
        Ok(Err(e)) => return job.fail(502, "upstream_unreachable", format!("{url}: {e}")),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let code = status.as_u16();
        let (status, code_name) = if status.is_client_error() {
            (code, "upstream_rejected")
        } else {
            (502, "upstream_error")
        };
        return job.fail(
            status,
            code_name,
            format!(
                "{url}: HTTP {code}: {}",
                text.chars().take(500).collect::<String>()
            ),
        );
    }
    let mut started = false;
    let mut usage = (0usize, 0usize);
    let mut finish = "stop";
    let mut deltas = 0usize;
    let mut buf = String::new();
    let mut bytes = resp.bytes_stream();
    loop {
        let remaining = job.deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(remaining, bytes.next()).await {
            Err(_) => {
                return job.fail(504, "timeout", "the request timed out while generating");
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return job.fail(502, "upstream_error", format!("{url}: {e}")),
            Ok(Some(Ok(c))) => c,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim();
                if data == "[DONE]" {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                    return job.fail(
                        502,
                        "upstream_error",
                        format!(
                            "{url}: an event is not JSON: {}",
                            data.chars().take(200).collect::<String>()
                        ),
                    );
                };
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                    let n = |k: &str| u.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                    usage = (n("prompt_tokens") as usize, n("completion_tokens") as usize);
                }
                let Some(choice) = v.pointer("/choices/0") else {
                    continue;
                };
                if !started {
                    started = true;
                    if !job.send(Event::Started {
                        prompt_tokens: 0,
                        adapters: Vec::new(),
                    }) {
                        job.admission.cancelled.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                let text = choice
                    .pointer("/delta/content")
                    .or_else(|| choice.get("text"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("");
                if !text.is_empty() {
                    deltas += 1;
                    if !job.send(Event::Delta(text.to_string())) {
                        job.admission.cancelled.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                if let Some(f) = choice
                    .get("finish_reason")
                    .and_then(serde_json::Value::as_str)
                {
                    finish = if f == "length" { "length" } else { "stop" };
                }
            }
        }
    }
    if !started
        && !job.send(Event::Started {
            prompt_tokens: 0,
            adapters: Vec::new(),
        })
    {
        return;
    }
    job.admission.completed.fetch_add(1, Ordering::Relaxed);
    job.release();
    job.send(Event::Done {
        finish_reason: finish,
        prompt_tokens: usage.0,
        completion_tokens: if usage.1 > 0 { usage.1 } else { deltas },
    });
}
