//! The HTTP layer (axum on tokio): routes, authentication, request checks,
//! retrieval, and the OpenAI response shapes (JSON and server-sent events).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use forge_miner::FimConfig;
use forge_model::ChatMessage;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::api::{
    ChatRequest, Citations, Common, CompletionRequest, Content, ErrorBody, ErrorDetail, FimRequest,
    PromptField, Usage,
};
use crate::config::ServeConfig;
use crate::engine::{Admission, Engine, Event, Job, ModelInfo, Prompt, Sampling};
use crate::error::{Error, Result};
use crate::index::{Hit, RepoIndex};
use crate::prompt::{
    Citation, check_repo_path, documents_then, fim_prompt, fim_query, fit, raft_user_turn,
};

struct AppState {
    config: ServeConfig,
    model_id: String,
    created: u64,
    engine: Engine,
    info: ModelInfo,
    admission: Arc<Admission>,
    index: Option<Arc<RepoIndex>>,
    next_id: AtomicU64,
}

/// An HTTP error in OpenAI's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    param: Option<String>,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        Self {
            status,
            kind,
            code,
            param: None,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn param(mut self, p: &str) -> Self {
        self.param = Some(p.to_string());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

/// A running server: its address, and how to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The bound address (the real port when the configuration asked for 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets open ones finish, and stops the
    /// generation workers.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops (it stops on [`ServerHandle::shutdown`]
    /// or when the listener fails).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// What `start` found before serving: the model's engine and the index.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartReport {
    /// The bound address.
    pub addr: SocketAddr,
    /// The model id clients use.
    pub model_id: String,
    /// The engine.
    pub engine: String,
    /// The index refresh at start, when retrieval is on.
    pub index: Option<crate::index::RefreshReport>,
}

/// Loads the model (or checks the forward URL's form), opens and refreshes
/// the index, binds the address and serves in the background.
pub async fn start(config: ServeConfig) -> Result<(ServerHandle, StartReport)> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| Error::Bind {
            addr: config.addr.to_string(),
            message: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| Error::Bind {
        addr: config.addr.to_string(),
        message: e.to_string(),
    })?;
    let (index, index_report) = match (&config.repo, config.index_path()) {
        (Some(repo), Some(dir)) => {
            let repo = repo.clone();
            let (ix, report) = tokio::task::spawn_blocking(move || RepoIndex::open(repo, dir))
                .await
                .map_err(|e| Error::Engine(format!("index task: {e}")))??;
            (Some(Arc::new(ix)), Some(report))
        }
        _ => (None, None),
    };
    let (engine, info) = Engine::start(&config).await?;
    let model_id = config.served_model_id();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let admission = Admission::new(info.workers + config.queue);
    let report = StartReport {
        addr,
        model_id: model_id.clone(),
        engine: info.engine.clone(),
        index: index_report,
    };
    let state = Arc::new(AppState {
        model_id,
        created,
        engine,
        info,
        admission,
        index,
        next_id: AtomicU64::new(1),
        config,
    });
    let poller = spawn_poller(&state);
    let app = router(Arc::clone(&state));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = served {
            eprintln!("forge serve: {e}");
        }
        if let Some(p) = poller {
            p.abort();
        }
        let st = Arc::clone(&state);
        let _ = tokio::task::spawn_blocking(move || st.engine.shutdown()).await;
    });
    Ok((
        ServerHandle {
            addr,
            shutdown: Some(tx),
            task,
        },
        report,
    ))
}

fn spawn_poller(state: &Arc<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    let index = state.index.clone()?;
    if state.config.poll_ms == 0 {
        return None;
    }
    let every = Duration::from_millis(state.config.poll_ms);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let ix = Arc::clone(&index);
            match tokio::task::spawn_blocking(move || ix.refresh()).await {
                Ok(Ok(r)) if r.mined > 0 || r.removed > 0 => eprintln!(
                    "forge serve: index refreshed: {} files mined, {} removed, {} units",
                    r.mined, r.removed, r.units
                ),
                Ok(Err(e)) => eprintln!("forge serve: index refresh failed: {e}"),
                _ => {}
            }
        }
    }))
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    let v1 = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model_by_id))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/fim/completions", post(fim))
        .route("/v1/index/refresh", post(refresh))
        .route("/v1/index/search", get(search))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_route", "no such route")
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn keys_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| keys_equal(g.trim().as_bytes(), key.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "missing or wrong API key: send `Authorization: Bearer <key>`",
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    let a = &s.admission;
    let index = s.index.as_ref().map(
        |ix| json!({"root": ix.root(), "dir": ix.dir(), "files": ix.files(), "units": ix.len()}),
    );
    axum::Json(json!({
        "status": "ok",
        "model": s.model_id,
        "engine": s.info.engine,
        "context_length": s.info.context_len,
        "in_flight": a.in_flight(),
        "capacity": a.limit(),
        "completed": a.completed.load(Ordering::Relaxed),
        "refused": a.refused.load(Ordering::Relaxed),
        "cancelled": a.cancelled.load(Ordering::Relaxed),
        "timed_out": a.timed_out.load(Ordering::Relaxed),
        "index": index,
    }))
    .into_response()
}

fn model_object(s: &AppState) -> Value {
    json!({"id": s.model_id, "object": "model", "created": s.created, "owned_by": "forge"})
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(json!({"object": "list", "data": [model_object(&s)]})).into_response()
}

async fn model_by_id(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if id == s.model_id {
        axum::Json(model_object(&s)).into_response()
    } else {
        unknown_model(&s, &id).into_response()
    }
}

fn unknown_model(s: &AppState, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!(
            "the model `{id}` does not exist; this server serves `{}`",
            s.model_id
        ),
    )
    .param("model")
}

/// Parses a JSON body; errors name the line, column and field.
fn parse_body<T: DeserializeOwned>(
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<T> {
    let bytes = body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "unreadable_body"
        };
        ApiError::new(status, code, e.body_text())
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON"
            }
            _ => "invalid request",
        };
        ApiError::bad("invalid_json", format!("{what}: {e}"))
    })
}

fn check_json_content_type(headers: &HeaderMap) -> ApiResult<()> {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(()),
        Some(ct) if ct.starts_with("application/json") => Ok(()),
        Some(ct) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {ct:?}; send application/json"),
        )),
    }
}

struct Checked {
    sampling: Sampling,
    stream: bool,
    include_usage: bool,
    retrieval: Option<bool>,
    top_k: usize,
}

fn check_common(s: &AppState, c: &Common) -> ApiResult<Checked> {
    match c.model.as_deref() {
        None | Some("") => {
            return Err(ApiError::bad("missing_model", "`model` is required").param("model"));
        }
        Some(m) if m != s.model_id => return Err(unknown_model(s, m)),
        Some(_) => {}
    }
    if let Some(n) = c.n
        && n != 1
    {
        return Err(
            ApiError::bad("unsupported_n", format!("`n` is {n}; only 1 is served")).param("n"),
        );
    }
    let limit = s.config.max_tokens_limit;
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => s.config.default_max_tokens,
        Some(0) => {
            return Err(ApiError::bad(
                "invalid_max_tokens",
                "`max_tokens` is 0, expected at least 1",
            )
            .param("max_tokens"));
        }
        Some(n) if n > limit as u64 => {
            return Err(ApiError::bad(
                "invalid_max_tokens",
                format!("`max_tokens` is {n}; this server allows at most {limit}"),
            )
            .param("max_tokens"));
        }
        Some(n) => n as usize,
    };
    let temperature = c.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad(
            "invalid_temperature",
            format!("`temperature` is {temperature}, expected a number in [0, 2]"),
        )
        .param("temperature"));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad(
            "invalid_top_p",
            format!("`top_p` is {top_p}, expected a number in (0, 1]"),
        )
        .param("top_p"));
    }
    let stop = c
        .stop
        .clone()
        .map(crate::api::Stop::into_vec)
        .unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(|x| x.is_empty() || x.len() > 256) {
        return Err(ApiError::bad(
            "invalid_stop",
            "`stop` takes at most 4 non-empty strings of at most 256 bytes",
        )
        .param("stop"));
    }
    let top_k = c.retrieval_top_k.unwrap_or(s.config.top_k);
    if top_k > 32 {
        return Err(ApiError::bad(
            "invalid_retrieval_top_k",
            format!("`retrieval_top_k` is {top_k}, at most 32"),
        )
        .param("retrieval_top_k"));
    }
    if c.retrieval == Some(true) && s.index.is_none() {
        return Err(ApiError::bad(
            "retrieval_unavailable",
            "`retrieval` is true but the server has no repository (start it with --repo)",
        )
        .param("retrieval"));
    }
    Ok(Checked {
        sampling: Sampling {
            max_tokens,
            temperature,
            top_p,
            seed: c.seed.unwrap_or(0),
            stop,
            ignore_eos: c.ignore_eos,
        },
        stream: c.stream,
        include_usage: c.stream_options.as_ref().is_some_and(|o| o.include_usage),
        retrieval: c.retrieval,
        top_k,
    })
}

fn check_prompt_size(s: &AppState, chars: usize, what: &str) -> ApiResult<()> {
    let max = s.config.max_prompt_chars;
    if chars > max {
        return Err(ApiError::bad(
            "prompt_too_long",
            format!("{what} is {chars} characters; this server accepts at most {max}"),
        ));
    }
    Ok(())
}

fn retrieve(s: &AppState, query: &str, k: usize) -> Vec<Hit> {
    match &s.index {
        Some(ix) if k > 0 => fit(ix.search(query, k), s.config.max_context_chars),
        _ => Vec::new(),
    }
}

/// Which response shape to produce.
#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Text,
    Fim,
}

impl Shape {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Text, _) => "text_completion",
            (Shape::Fim, _) => "fim.completion",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
            Shape::Fim => "fim",
        }
    }
}

async fn chat(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_json_content_type(&headers)?;
    let req: ChatRequest = parse_body(body)?;
    let checked = check_common(&s, &req.common)?;
    if req.messages.is_empty() {
        return Err(ApiError::bad("invalid_messages", "`messages` is empty").param("messages"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    let mut chars = 0;
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::bad(
                    "invalid_role",
                    format!(
                        "`messages[{i}].role` is {other:?}, expected system, developer, user or \
                         assistant"
                    ),
                )
                .param(&format!("messages[{i}].role")));
            }
        };
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::bad(
                                "unsupported_content",
                                format!(
                                    "`messages[{i}].content[{j}]` is of type {kind:?}; only \
                                     text parts are served"
                                ),
                            ));
                        }
                    }
                }
                text
            }
        };
        chars += content.chars().count();
        messages.push(ChatMessage::new(role, content));
    }
    check_prompt_size(&s, chars, "`messages`")?;
    let mut hits = Vec::new();
    if checked.retrieval.unwrap_or(true)
        && let Some(last) = messages.iter_mut().rev().find(|m| m.role == "user")
    {
        hits = retrieve(&s, &last.content, checked.top_k);
        if !hits.is_empty() {
            last.content = raft_user_turn(&hits, &last.content);
        }
    }
    let citations: Citations = hits.iter().map(Citation::of).collect();
    generate(s, Prompt::Chat(messages), checked, citations, Shape::Chat).await
}

async fn completions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_json_content_type(&headers)?;
    let req: CompletionRequest = parse_body(body)?;
    let checked = check_common(&s, &req.common)?;
    let prompt = match req.prompt {
        PromptField::One(p) => p,
        PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptField::Many(v) => {
            return Err(ApiError::bad(
                "unsupported_prompt",
                format!(
                    "`prompt` is a list of {} strings; send one prompt per request",
                    v.len()
                ),
            )
            .param("prompt"));
        }
    };
    if req.echo {
        return Err(ApiError::bad("unsupported_echo", "`echo` is not served").param("echo"));
    }
    check_prompt_size(&s, prompt.chars().count(), "`prompt`")?;
    if let Some(suffix) = req.suffix.filter(|x| !x.is_empty()) {
        // OpenAI's `suffix` is fill-in-the-middle: the prompt is the prefix.
        let hits = if checked.retrieval.unwrap_or(false) {
            retrieve(&s, &fim_query(&prompt, &suffix, 40), checked.top_k)
        } else {
            Vec::new()
        };
        let text = fim_prompt(&hits, &prompt, &suffix, &FimConfig::default());
        let citations = hits.iter().map(Citation::of).collect();
        return generate(s, Prompt::Text(text), checked, citations, Shape::Text).await;
    }
    let hits = if checked.retrieval.unwrap_or(false) {
        retrieve(&s, &prompt, checked.top_k)
    } else {
        Vec::new()
    };
    let text = documents_then(&hits, &prompt);
    let citations = hits.iter().map(Citation::of).collect();
    generate(s, Prompt::Text(text), checked, citations, Shape::Text).await
}

async fn fim(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_json_content_type(&headers)?;
    let req: FimRequest = parse_body(body)?;
    let checked = check_common(&s, &req.common)?;
    let path = match &req.path {
        Some(p) => {
            Some(check_repo_path(p).map_err(|m| ApiError::bad("invalid_path", m).param("path"))?)
        }
        None => None,
    };
    check_prompt_size(
        &s,
        req.prefix.chars().count() + req.suffix.chars().count(),
        "`prefix` + `suffix`",
    )?;
    let mut hits = Vec::new();
    if checked.retrieval.unwrap_or(true)
        && let Some(ix) = &s.index
    {
        let query = fim_query(&req.prefix, &req.suffix, 40);
        let found = match &path {
            Some(p) => ix.search_neighbours(p, &query, checked.top_k),
            None => ix.search(&query, checked.top_k),
        };
        hits = fit(found, s.config.max_context_chars);
    }
    let text = fim_prompt(&hits, &req.prefix, &req.suffix, &FimConfig::default());
    let citations = hits.iter().map(Citation::of).collect();
    generate(s, Prompt::Text(text), checked, citations, Shape::Fim).await
}

async fn refresh(State(s): State<Arc<AppState>>) -> ApiResult<Response> {
    let Some(ix) = s.index.clone() else {
        return Err(ApiError::bad(
            "retrieval_unavailable",
            "the server has no repository (start it with --repo)",
        ));
    };
    let report = tokio::task::spawn_blocking(move || ix.refresh())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "refresh_failed",
                e.to_string(),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "refresh_failed",
                e.to_string(),
            )
        })?;
    Ok(axum::Json(report).into_response())
}

#[derive(serde::Deserialize)]
struct SearchQuery {
    q: String,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    path: Option<String>,
}

async fn search(
    State(s): State<Arc<AppState>>,
    query: std::result::Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad("invalid_query", e.body_text()))?;
    let Some(ix) = &s.index else {
        return Err(ApiError::bad(
            "retrieval_unavailable",
            "the server has no repository (start it with --repo)",
        ));
    };
    let k = q.k.unwrap_or(s.config.top_k).min(100);
    let hits = match &q.path {
        Some(p) => {
            let p =
                check_repo_path(p).map_err(|m| ApiError::bad("invalid_path", m).param("path"))?;
            ix.search_neighbours(&p, &q.q, k)
        }
        None => ix.search(&q.q, k),
    };
    let citations: Citations = hits.iter().map(Citation::of).collect();
    Ok(axum::Json(json!({"citations": citations})).into_response())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn failed(s: &AppState, status: u16, code: &'static str, message: String) -> ApiError {
    if status == 504 {
        s.admission.timed_out.fetch_add(1, Ordering::Relaxed);
    }
    ApiError::new(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        code,
        message,
    )
}

/// Admits the request, queues the job, waits for it to start (or fail), and
/// answers with JSON or an event stream.
async fn generate(
    s: Arc<AppState>,
    prompt: Prompt,
    checked: Checked,
    citations: Citations,
    shape: Shape,
) -> ApiResult<Response> {
    let Some(permit) = s.admission.try_admit() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            format!(
                "the server is busy ({} requests in flight, the limit); retry later",
                s.admission.limit()
            ),
        ));
    };
    let deadline = Instant::now() + s.config.timeout();
    let (tx, mut rx) = unbounded_channel();
    s.engine.submit(Job {
        prompt,
        sampling: checked.sampling,
        deadline,
        events: tx,
        admission: Arc::clone(&s.admission),
        permit: std::sync::Mutex::new(Some(permit)),
    });
    let id = format!(
        "{}-{}",
        shape.id_prefix(),
        s.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let timeout_error = || {
        s.admission.timed_out.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no result within {} ms", s.config.timeout_ms),
        )
    };
    let first = tokio::time::timeout_at(deadline.into(), rx.recv()).await;
    let (prompt_tokens, adapters) = match first {
        Err(_) => return Err(timeout_error()),
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "engine_stopped",
                "the generation workers stopped",
            ));
        }
        Ok(Some(Event::Failed {
            status,
            code,
            message,
        })) => return Err(failed(&s, status, code, message)),
        Ok(Some(Event::Started {
            prompt_tokens,
            adapters,
        })) => (prompt_tokens, adapters),
        Ok(Some(other)) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "engine_protocol",
                format!("unexpected first event {other:?}"),
            ));
        }
    };
    let meta = Meta {
        id,
        created: now_secs(),
        model: s.model_id.clone(),
        shape,
        citations,
        include_usage: checked.include_usage,
        prompt_tokens,
        adapters,
    };
    if checked.stream {
        return Ok(stream_response(
            meta,
            rx,
            deadline,
            Arc::clone(&s.admission),
        ));
    }
    let mut text = String::new();
    loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Err(_) => return Err(timeout_error()),
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "engine_stopped",
                    "the generation workers stopped",
                ));
            }
            Ok(Some(Event::Delta(d))) => text.push_str(&d),
            Ok(Some(Event::Failed {
                status,
                code,
                message,
            })) => return Err(failed(&s, status, code, message)),
            Ok(Some(Event::Started { .. })) => {}
            Ok(Some(Event::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            })) => {
                let p = if prompt_tokens > 0 {
                    prompt_tokens
                } else {
                    meta.prompt_tokens
                };
                return Ok(axum::Json(meta.full(
                    &text,
                    finish_reason,
                    Usage::new(p, completion_tokens),
                ))
                .into_response());
            }
        }
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    shape: Shape,
    citations: Citations,
    include_usage: bool,
    prompt_tokens: usize,
    /// DLP-LoRA's choice for this request (empty otherwise).
    adapters: Vec<(String, f32)>,
}

impl Meta {
    fn adapters_json(&self) -> Value {
        json!(
            self.adapters
                .iter()
                .map(|(name, weight)| json!({"name": name, "weight": weight}))
                .collect::<Vec<_>>()
        )
    }

    fn full(&self, text: &str, finish_reason: &str, usage: Usage) -> Value {
        let choice = match self.shape {
            Shape::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": null,
            }),
            Shape::Text | Shape::Fim => json!({
                "index": 0,
                "text": text,
                "finish_reason": finish_reason,
                "logprobs": null,
            }),
        };
        let mut v = json!({
            "id": self.id,
            "object": self.shape.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
            "citations": self.citations,
        });
        if !self.adapters.is_empty() {
            v["adapters"] = self.adapters_json();
        }
        v
    }

    fn chunk(&self, delta: Option<&str>, role: bool, finish_reason: Option<&str>) -> Value {
        let choice = match self.shape {
            Shape::Chat => {
                let mut d = serde_json::Map::new();
                if role {
                    d.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = delta {
                    d.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": d, "finish_reason": finish_reason, "logprobs": null})
            }
            Shape::Text | Shape::Fim => json!({
                "index": 0,
                "text": delta.unwrap_or(""),
                "finish_reason": finish_reason,
                "logprobs": null,
            }),
        };
        json!({
            "id": self.id,
            "object": self.shape.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }
}

fn sse_json(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// The event stream: a first chunk (chat: the role; with the citations),
/// one chunk per text delta, a last chunk with the finish reason, the usage
/// chunk when asked (`stream_options.include_usage`), then `[DONE]`. A
/// failure after the start is an `{"error": …}` event, then `[DONE]`.
/// Dropping the stream (client gone) drops the receiver, which stops the job.
fn stream_response(
    meta: Meta,
    rx: UnboundedReceiver<Event>,
    deadline: Instant,
    admission: Arc<Admission>,
) -> Response {
    enum Phase {
        First,
        Body,
        Done,
    }
    let state = (meta, rx, Phase::First);
    let stream = futures_util::stream::unfold(state, move |(meta, mut rx, phase)| {
        let admission = Arc::clone(&admission);
        async move {
            match phase {
                Phase::Done => None,
                Phase::First => {
                    let mut first = meta.chunk(
                        if matches!(meta.shape, Shape::Chat) {
                            Some("")
                        } else {
                            None
                        },
                        true,
                        None,
                    );
                    first["citations"] = json!(meta.citations);
                    if !meta.adapters.is_empty() {
                        first["adapters"] = meta.adapters_json();
                    }
                    Some((
                        vec![Ok::<_, Infallible>(sse_json(&first))],
                        (meta, rx, Phase::Body),
                    ))
                }
                Phase::Body => {
                    let next = tokio::time::timeout_at(deadline.into(), rx.recv()).await;
                    let events = match next {
                        Ok(Some(Event::Delta(d))) => {
                            return Some((
                                vec![Ok(sse_json(&meta.chunk(Some(&d), false, None)))],
                                (meta, rx, Phase::Body),
                            ));
                        }
                        Ok(Some(Event::Started { .. })) => Vec::new(),
                        Ok(Some(Event::Done {
                            finish_reason,
                            prompt_tokens,
                            completion_tokens,
                        })) => {
                            let mut out =
                                vec![Ok(sse_json(&meta.chunk(None, false, Some(finish_reason))))];
                            if meta.include_usage {
                                let p = if prompt_tokens > 0 {
                                    prompt_tokens
                                } else {
                                    meta.prompt_tokens
                                };
                                let mut u = json!({
                                    "id": meta.id, "object": meta.shape.object(true),
                                    "created": meta.created, "model": meta.model, "choices": [],
                                });
                                u["usage"] = json!(Usage::new(p, completion_tokens));
                                out.push(Ok(sse_json(&u)));
                            }
                            out.push(Ok(SseEvent::default().data("[DONE]")));
                            return Some((out, (meta, rx, Phase::Done)));
                        }
                        Ok(Some(Event::Failed {
                            status,
                            code,
                            message,
                        })) => {
                            if status == 504 {
                                admission.timed_out.fetch_add(1, Ordering::Relaxed);
                            }
                            let e = json!({"error": {"message": message, "type": "server_error", "code": code, "status": status}});
                            vec![Ok(sse_json(&e)), Ok(SseEvent::default().data("[DONE]"))]
                        }
                        Ok(None) => {
                            let e = json!({"error": {"message": "the generation workers stopped", "type": "server_error", "code": "engine_stopped"}});
                            vec![Ok(sse_json(&e)), Ok(SseEvent::default().data("[DONE]"))]
                        }
                        Err(_) => {
                            admission.timed_out.fetch_add(1, Ordering::Relaxed);
                            let e = json!({"error": {"message": "the request timed out while generating", "type": "server_error", "code": "timeout"}});
                            vec![Ok(sse_json(&e)), Ok(SseEvent::default().data("[DONE]"))]
                        }
                    };
                    if events.is_empty() {
                        return Some((events, (meta, rx, Phase::Body)));
                    }
                    Some((events, (meta, rx, Phase::Done)))
                }
            }
        }
    });
    let flat = futures_util::StreamExt::flat_map(stream, futures_util::stream::iter);
    Sse::new(flat)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
