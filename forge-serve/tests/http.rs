//! The server over real HTTP: a tiny seeded random llama (exported to GGUF,
//! run by the CPU engine) served on an ephemeral loopback port, a reqwest
//! client, and a small repository to retrieve from. Responses are parsed
//! into the OpenAI shapes below (required fields, exact `object` names);
//! streaming equals non-streaming for greedy decoding; citations are checked
//! against the files' lines; bad input is a 4xx with OpenAI's error body and
//! the server keeps serving.

mod common;

use std::time::{Duration, Instant};

use common::{MODEL_ID, client, config, fixture, repo_copy, sse_data, start};
use forge_serve::{Citation, Forward, ServeConfig};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
struct ChatChoice {
    index: u32,
    message: ChatMessage,
    finish_reason: String,
}

#[derive(Debug, Deserialize)]
struct ChatCompletion {
    id: String,
    object: String,
    created: u64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: Usage,
    citations: Vec<Citation>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    index: u32,
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatChunk {
    id: String,
    object: String,
    model: String,
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    citations: Option<Vec<Citation>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct TextChoice {
    text: String,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TextCompletion {
    object: String,
    model: String,
    choices: Vec<TextChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    citations: Option<Vec<Citation>>,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: String,
    code: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

/// Two documents per request: the CPU engine runs unoptimised in test
/// builds, and prefill cost grows with the square of the prompt.
fn rag_config() -> ServeConfig {
    config().with_repo(&fixture().repo).with_top_k(2)
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    client().post(url).json(body).send().await.expect("request")
}

async fn error_of(resp: reqwest::Response, status: u16) -> ErrorDetail {
    assert_eq!(resp.status().as_u16(), status);
    let text = resp.text().await.expect("body");
    let body: ErrorBody = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(!body.error.message.is_empty());
    body.error
}

/// The file's lines `start..=end` (1-based).
fn lines(path: &std::path::Path, start: usize, end: usize) -> String {
    let text = std::fs::read_to_string(path).expect("read cited file");
    text.lines()
        .skip(start - 1)
        .take(end + 1 - start)
        .collect::<Vec<_>>()
        .join("\n")
}

fn chat_body(question: &str, stream: bool) -> Value {
    json!({
        "model": MODEL_ID,
        "messages": [
            {"role": "system", "content": "You answer questions about the codebase."},
            {"role": "user", "content": question},
        ],
        "max_tokens": 24,
        "temperature": 0,
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_health() {
    let (server, report) = start(rag_config()).await;
    assert_eq!(report.model_id, MODEL_ID);
    assert_eq!(report.engine, "cpu");
    let models: Value = client()
        .get(format!("{}/v1/models", server.url()))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], MODEL_ID);
    assert_eq!(models["data"][0]["object"], "model");
    let one = client()
        .get(format!("{}/v1/models/{MODEL_ID}", server.url()))
        .send()
        .await
        .expect("model");
    assert_eq!(one.status(), 200);
    let missing = client()
        .get(format!("{}/v1/models/gpt-4o", server.url()))
        .send()
        .await
        .expect("model");
    assert_eq!(error_of(missing, 404).await.code, "model_not_found");
    let health: Value = client()
        .get(format!("{}/health", server.url()))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["context_length"], 4096);
    // 4 fixture files; eligible units: parse_header, split_packet,
    // crc32_update, Checksum, feed, make_packet, render_table, mean_latency,
    // packet_checksum.
    assert_eq!(health["index"]["files"], 4);
    assert_eq!(health["index"]["units"], 9);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_parses_as_openai_and_cites_real_lines() {
    let (server, _) = start(rag_config()).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let resp = post(
        &url,
        &chat_body("What does parse_header do with the magic number?", false),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let c: ChatCompletion = resp.json().await.expect("chat.completion");
    assert!(c.id.starts_with("chatcmpl-"));
    assert_eq!(c.object, "chat.completion");
    assert!(c.created > 1_600_000_000);
    assert_eq!(c.model, MODEL_ID);
    assert_eq!(c.choices.len(), 1);
    assert_eq!(c.choices[0].index, 0);
    assert_eq!(c.choices[0].message.role, "assistant");
    assert!(["stop", "length"].contains(&c.choices[0].finish_reason.as_str()));
    assert!(c.usage.completion_tokens <= 24);
    assert_eq!(
        c.usage.total_tokens,
        c.usage.prompt_tokens + c.usage.completion_tokens
    );
    // The best document is the function asked about; every citation points
    // at the unit's real lines in the file.
    assert!(!c.citations.is_empty());
    assert_eq!(c.citations[0].path, "wire/src/parser.rs");
    assert_eq!(c.citations[0].symbol, "wire::parser::parse_header");
    for cit in &c.citations {
        let text = lines(
            &fixture().repo.join(&cit.path),
            cit.start_line,
            cit.end_line,
        );
        let name = cit.symbol.rsplit("::").next().expect("name");
        let name = name.rsplit('.').next().expect("name");
        assert!(
            text.contains(name),
            "{cit:?} lines do not hold {name}: {text}"
        );
        assert!(cit.score > 0.0);
    }
    let first = &c.citations[0];
    assert_eq!((first.start_line, first.end_line), (3, 11));
    let text = lines(&fixture().repo.join("wire/src/parser.rs"), 3, 11);
    assert!(text.starts_with("/// Parses the header") && text.ends_with('}'));

    // The prompt holds the RAFT documents: more prompt tokens than without.
    let mut off = chat_body("What does parse_header do with the magic number?", false);
    off["retrieval"] = json!(false);
    let c_off: ChatCompletion = post(&url, &off).await.json().await.expect("json");
    assert!(c_off.citations.is_empty());
    let doc_bytes = text.len();
    assert!(
        c.usage.prompt_tokens >= c_off.usage.prompt_tokens + doc_bytes,
        "{} vs {} + {doc_bytes}",
        c.usage.prompt_tokens,
        c_off.usage.prompt_tokens
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_equals_non_streaming() {
    let (server, _) = start(rag_config()).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let q = "How is crc32_update called?";
    let full: ChatCompletion = post(&url, &chat_body(q, false))
        .await
        .json()
        .await
        .expect("json");
    let mut body = chat_body(q, true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&url, &body).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let data = sse_data(&resp.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<ChatChunk> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c.object == "chat.completion.chunk" && c.model == MODEL_ID)
    );
    assert!(chunks.windows(2).all(|w| w[0].id == w[1].id));
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    assert_eq!(chunks[0].citations.as_ref(), Some(&full.citations));
    let text: String = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.delta.content.clone())
        .collect();
    assert_eq!(text, full.choices[0].message.content);
    let finish: Vec<&str> = chunks
        .iter()
        .flat_map(|c| c.choices.iter())
        .filter_map(|c| c.finish_reason.as_deref())
        .collect();
    assert_eq!(finish, vec![full.choices[0].finish_reason.as_str()]);
    assert!(chunks.iter().flat_map(|c| &c.choices).all(|c| c.index == 0));
    let usage = chunks
        .last()
        .and_then(|c| c.usage.as_ref())
        .expect("usage chunk");
    assert_eq!(usage.completion_tokens, full.usage.completion_tokens);
    assert_eq!(usage.prompt_tokens, full.usage.prompt_tokens);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_fill_in_the_middle() {
    let (server, _) = start(rag_config()).await;
    let url = format!("{}/v1/completions", server.url());
    let body =
        json!({"model": MODEL_ID, "prompt": "fn main() {", "max_tokens": 16, "temperature": 0});
    let full: TextCompletion = post(&url, &body).await.json().await.expect("json");
    assert_eq!(full.object, "text_completion");
    assert_eq!(full.model, MODEL_ID);
    assert!(matches!(
        full.choices[0].finish_reason.as_deref(),
        Some("stop" | "length")
    ));
    assert!(
        full.citations.as_ref().is_some_and(Vec::is_empty),
        "completions retrieve only on request"
    );
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let data = sse_data(&post(&url, &sbody).await.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<TextCompletion>(d).expect("chunk"))
        .flat_map(|c| c.choices.into_iter().map(|x| x.text))
        .collect();
    assert_eq!(streamed, full.choices[0].text);
    let mut rbody = body.clone();
    rbody["retrieval"] = json!(true);
    rbody["prompt"] = json!("// render_table of rows");
    let with: TextCompletion = post(&url, &rbody).await.json().await.expect("json");
    assert_eq!(
        with.citations.as_ref().expect("citations")[0].symbol,
        "tools.report.render_table"
    );

    // FIM: neighbours of wire/src/parser.rs are wire/src/ and wire/tests/
    // (same parent), never the file itself, never tools/ (whose
    // packet_checksum matches the query well).
    let fim_url = format!("{}/v1/fim/completions", server.url());
    let fim = json!({
        "model": MODEL_ID, "path": "wire/src/parser.rs", "max_tokens": 8, "temperature": 0,
        "prefix": "pub fn checksum_of(packet: &[u8]) -> u32 {\n    let (header, payload) = split_packet(packet)?;\n    crc32_update(0, ",
        "suffix": ")\n}\n",
    });
    let resp = post(&fim_url, &fim).await;
    assert_eq!(resp.status(), 200);
    let out: TextCompletion = resp.json().await.expect("json");
    assert_eq!(out.object, "fim.completion");
    let cits = out.citations.expect("citations");
    assert_eq!(cits[0].symbol, "wire::checksum::crc32_update");
    assert!(
        cits.iter()
            .all(|c| c.path != "wire/src/parser.rs" && !c.path.starts_with("tools/"))
    );
    let everywhere: Value = client()
        .get(format!(
            "{}/v1/index/search?q=checksum%20packet%20crc32_update%20header%20payload&k=9",
            server.url()
        ))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let paths: Vec<&str> = everywhere["citations"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"tools/report.py") && paths.contains(&"wire/src/parser.rs"),
        "{paths:?}"
    );
    assert!(out.usage.expect("usage").completion_tokens <= 8);
    for bad in ["../../etc/passwd", "/etc/passwd", "src/../../x.rs", "a\\b"] {
        let mut b = fim.clone();
        b["path"] = json!(bad);
        let e = error_of(post(&fim_url, &b).await, 400).await;
        assert_eq!(e.code, "invalid_path", "{bad}");
    }
    // OpenAI's `suffix` on /v1/completions is fill-in-the-middle too.
    let mut b = body.clone();
    b["suffix"] = json!("\n}");
    assert_eq!(post(&url, &b).await.status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_the_server_keeps_running() {
    let cfg = rag_config()
        .with_max_prompt_chars(20_000)
        .with_max_body_bytes(64 * 1024);
    let (server, _) = start(cfg).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let raw = |body: &'static str| {
        client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let e = error_of(
        raw("{\"model\": \"tiny\", \"messages\": [")
            .await
            .expect("send"),
        400,
    )
    .await;
    assert_eq!(e.code, "invalid_json");
    assert_eq!(e.kind, "invalid_request_error");
    assert!(
        e.message.contains("malformed JSON") && e.message.contains("line 1"),
        "{}",
        e.message
    );
    let e = error_of(
        raw("{\"model\": \"tiny\", \"messages\": \"hi\"}")
            .await
            .expect("send"),
        400,
    )
    .await;
    assert!(e.message.contains("invalid request"), "{}", e.message);
    let e = error_of(raw("[1, 2]").await.expect("send"), 400).await;
    assert_eq!(e.code, "invalid_json");

    let mut b = chat_body("hi", false);
    b["model"] = json!("gpt-4o");
    let e = error_of(post(&url, &b).await, 404).await;
    assert_eq!(e.code, "model_not_found");
    assert!(e.message.contains("gpt-4o") && e.message.contains(MODEL_ID));
    let mut b = chat_body("hi", false);
    b.as_object_mut().expect("obj").remove("model");
    assert_eq!(
        error_of(post(&url, &b).await, 400).await.code,
        "missing_model"
    );

    let huge = "x".repeat(30_000);
    let e = error_of(post(&url, &chat_body(&huge, false)).await, 400).await;
    assert_eq!(e.code, "prompt_too_long");
    let e = error_of(
        post(&url, &chat_body(&"y".repeat(70_000), false)).await,
        413,
    )
    .await;
    assert_eq!(e.code, "request_too_large");
    // Fits the character limit but not the context: 15,000 byte tokens.
    let mut b = chat_body(&"z ".repeat(7_500), false);
    b["retrieval"] = json!(false);
    let e = error_of(post(&url, &b).await, 400).await;
    assert_eq!(e.code, "context_length_exceeded");
    assert!(e.message.contains("4096"), "{}", e.message);

    for (field, value, code) in [
        ("max_tokens", json!(0), "invalid_max_tokens"),
        ("max_tokens", json!(1_000_000), "invalid_max_tokens"),
        ("temperature", json!(7.5), "invalid_temperature"),
        ("top_p", json!(0), "invalid_top_p"),
        ("n", json!(3), "unsupported_n"),
        ("retrieval_top_k", json!(1000), "invalid_retrieval_top_k"),
        ("messages", json!([]), "invalid_messages"),
        (
            "messages",
            json!([{"role": "wizard", "content": "x"}]),
            "invalid_role",
        ),
        (
            "messages",
            json!([{"role": "user", "content": [{"type": "image_url"}]}]),
            "unsupported_content",
        ),
    ] {
        let mut b = chat_body("hi", false);
        b[field] = value;
        assert_eq!(
            error_of(post(&url, &b).await, 400).await.code,
            code,
            "{field}"
        );
    }
    let e = error_of(
        client()
            .post(&url)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .expect("send"),
        415,
    )
    .await;
    assert_eq!(e.code, "unsupported_media_type");
    let e = error_of(
        client()
            .get(format!("{}/v2/nothing", server.url()))
            .send()
            .await
            .expect("send"),
        404,
    )
    .await;
    assert_eq!(e.code, "unknown_route");
    let e = error_of(
        client()
            .get(format!(
                "{}/v1/index/search?q=x&path=../secret",
                server.url()
            ))
            .send()
            .await
            .expect("send"),
        400,
    )
    .await;
    assert_eq!(e.code, "invalid_path");

    // Still serving.
    let ok = post(&url, &chat_body("What does split_packet return?", false)).await;
    assert_eq!(ok.status(), 200);
    let health: Value = client()
        .get(format!("{}/health", server.url()))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["in_flight"], 0);
    server.shutdown().await;
}

fn long_body(max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": MODEL_ID,
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "ignore_eos": true,
        "temperature": 0.8,
        "seed": 3,
        "stream": stream,
    })
}

async fn health(url: &str) -> Value {
    client()
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gives_429_and_recovers() {
    let (server, _) = start(config().with_workers(1).with_queue(1)).await;
    let url = format!("{}/v1/completions", server.url());
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&url, &long_body(1500, false)).await })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for s in sends {
        let resp = s.await.expect("task");
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(resp.headers()["retry-after"], "1");
                assert_eq!(error_of(resp, 429).await.code, "queue_full");
                refused += 1;
            }
            other => panic!("status {other}: {}", resp.text().await.unwrap_or_default()),
        }
    }
    assert_eq!(ok + refused, 8);
    assert!(refused >= 1, "no request was refused");
    assert!(ok >= 2 && ok <= 8 - refused, "ok {ok}");
    let h = health(&server.url()).await;
    assert_eq!(h["refused"], refused);
    assert_eq!(h["in_flight"], 0);
    assert_eq!(post(&url, &long_body(4, false)).await.status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_generation() {
    let (server, _) = start(config()).await;
    let url = format!("{}/v1/completions", server.url());
    let mut resp = post(&url, &long_body(3500, true)).await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.expect("chunk").expect("some");
    assert!(String::from_utf8_lossy(&first).starts_with("data:"));
    drop(resp);
    let t = Instant::now();
    loop {
        let h = health(&server.url()).await;
        if h["cancelled"] == 1 && h["in_flight"] == 0 {
            assert_eq!(h["completed"], 0);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "not cancelled: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_give_504() {
    let (server, _) = start(config().with_timeout(Duration::from_millis(150))).await;
    let url = format!("{}/v1/completions", server.url());
    let e = error_of(post(&url, &long_body(3500, false)).await, 504).await;
    assert_eq!(e.code, "timeout");
    let t = Instant::now();
    while health(&server.url()).await["in_flight"] != 0 {
        assert!(t.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(health(&server.url()).await["timed_out"].as_u64() >= Some(1));
    // A stream that started ends with an error event, then [DONE].
    let resp = post(&url, &long_body(3500, true)).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.expect("body"));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&data[data.len() - 2]).expect("error event");
    assert_eq!(err["error"]["code"], "timeout");
    assert!(health(&server.url()).await["timed_out"].as_u64() >= Some(2));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_updates_incrementally_and_persists() {
    let repo = repo_copy("incremental");
    let (server, report) = start(config().with_repo(&repo)).await;
    let first = report.index.expect("index report");
    assert_eq!((first.files, first.mined, first.units), (4, 4, 9));
    assert!(repo.join(".forge/serve/index/units.jsonl").is_file());
    let search = |q: &str| {
        let url = format!("{}/v1/index/search?q={q}&k=3", server.url());
        async move {
            let v: Value = client()
                .get(url)
                .send()
                .await
                .expect("search")
                .json()
                .await
                .expect("json");
            serde_json::from_value::<Vec<Citation>>(v["citations"].clone()).expect("citations")
        }
    };
    let refresh = || {
        let url = format!("{}/v1/index/refresh", server.url());
        async move {
            let v: Value = client()
                .post(url)
                .send()
                .await
                .expect("refresh")
                .json()
                .await
                .expect("json");
            v
        }
    };
    assert!(search("zebra_quartz").await.is_empty());
    std::fs::write(
        repo.join("wire/src/fresh.rs"),
        "\n\n/// Sums zebra quartz values.\npub fn zebra_quartz_sum(v: &[u64]) -> u64 {\n    v.iter().sum()\n}\n",
    )
    .expect("write");
    let r = refresh().await;
    assert_eq!(
        (
            r["files"].as_u64(),
            r["mined"].as_u64(),
            r["units"].as_u64()
        ),
        (Some(5), Some(1), Some(10))
    );
    let hits = search("zebra_quartz").await;
    assert_eq!(hits[0].path, "wire/src/fresh.rs");
    assert_eq!((hits[0].start_line, hits[0].end_line), (3, 6));
    // Same bytes, new mtime: re-read, not re-mined.
    let text = std::fs::read(repo.join("wire/src/parser.rs")).expect("read");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(repo.join("wire/src/parser.rs"), &text).expect("rewrite");
    let r = refresh().await;
    assert_eq!(
        (r["rehashed"].as_u64(), r["mined"].as_u64()),
        (Some(1), Some(0))
    );
    // An edit moves the unit; the citation follows it.
    std::fs::write(repo.join("wire/src/fresh.rs"), "/// Sums zebra quartz values.\npub fn zebra_quartz_sum(v: &[u64]) -> u64 {\n    v.iter().sum()\n}\n").expect("edit");
    refresh().await;
    let hits = search("zebra_quartz").await;
    assert_eq!((hits[0].start_line, hits[0].end_line), (1, 4));
    std::fs::remove_file(repo.join("tools/report.py")).expect("rm");
    let r = refresh().await;
    assert_eq!(
        (r["removed"].as_u64(), r["units"].as_u64()),
        (Some(1), Some(7))
    );
    assert!(search("render_table").await.is_empty());
    server.shutdown().await;

    // Restart: the persisted index is current, nothing is mined again.
    let (server, report) = start(config().with_repo(&repo)).await;
    let r = report.index.expect("index");
    assert_eq!((r.mined, r.units, r.discarded), (0, 7, None));
    server.shutdown().await;

    // A damaged index is rebuilt, and the report names the file and line.
    let units = repo.join(".forge/serve/index/units.jsonl");
    let mut text = std::fs::read_to_string(&units).expect("units");
    text.insert_str(text.find('\n').expect("line") + 1, "{not json\n");
    std::fs::write(&units, text).expect("damage");
    let (server, report) = start(config().with_repo(&repo)).await;
    let r = report.index.expect("index");
    let why = r.discarded.expect("discarded");
    assert!(why.contains("units.jsonl: line 2"), "{why}");
    assert_eq!((r.mined, r.units), (4, 7));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_picks_up_changes() {
    let repo = repo_copy("polling");
    let (server, _) = start(
        config()
            .with_repo(&repo)
            .with_poll(Duration::from_millis(100)),
    )
    .await;
    std::fs::write(
        repo.join("wire/src/polled.rs"),
        "/// Polled.\npub fn walrus_polled() {}\n",
    )
    .expect("write");
    let t = Instant::now();
    loop {
        let v: Value = client()
            .get(format!("{}/v1/index/search?q=walrus_polled", server.url()))
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
        if v["citations"][0]["path"] == "wire/src/polled.rs" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_and_remote_binding() {
    let remote: std::net::SocketAddr = "0.0.0.0:0".parse().expect("addr");
    let err = forge_serve::start(config().with_addr(remote))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("--allow-remote"), "{err}");
    let err = forge_serve::start(config().with_addr(remote).with_allow_remote(true))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("API key"), "{err}");

    let (server, _) = start(config().with_api_key("s3cret")).await;
    let url = format!("{}/v1/models", server.url());
    let e = error_of(client().get(&url).send().await.expect("send"), 401).await;
    assert_eq!(e.code, "invalid_api_key");
    let e = error_of(
        client()
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .expect("send"),
        401,
    )
    .await;
    assert_eq!(e.kind, "authentication_error");
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth("s3cret")
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(format!("{}/health", server.url()))
            .send()
            .await
            .expect("send")
            .status(),
        200
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_keeps_retrieval_here() {
    // The upstream is another server speaking the OpenAI format (as
    // llama.cpp's llama-server and Ollama's /v1 do), without a repository.
    let (upstream, _) = start(config().with_model_id("upstream-model")).await;
    let front_cfg = ServeConfig::new("unused")
        .with_addr("127.0.0.1:0".parse().expect("addr"))
        .with_repo(&fixture().repo)
        .with_top_k(2)
        .with_model_id("front")
        .with_forward(Forward {
            url: upstream.url(),
            model: "upstream-model".into(),
            api_key: None,
        });
    let (front, report) = start(front_cfg).await;
    assert!(report.engine.starts_with("forward to http://127.0.0.1:"));
    let q = "What does split_packet return?";
    let mut body = chat_body(q, false);
    body["model"] = json!("front");
    let via: ChatCompletion = post(&format!("{}/v1/chat/completions", front.url()), &body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(via.citations[0].symbol, "wire::parser::split_packet");
    // What the upstream generates for the same retrieval-augmented turn.
    let turn = forge_serve::raft_user_turn(
        &forge_serve::RepoIndex::open(&fixture().repo, fixture().root.join("fwd-index"))
            .expect("index")
            .0
            .search(q, 2),
        q,
    );
    let mut direct = chat_body(q, false);
    direct["model"] = json!("upstream-model");
    direct["messages"][1]["content"] = json!(turn);
    let direct: ChatCompletion = post(&format!("{}/v1/chat/completions", upstream.url()), &direct)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        via.choices[0].message.content,
        direct.choices[0].message.content
    );
    assert_eq!(via.usage.completion_tokens, direct.usage.completion_tokens);
    // Streaming through the forwarder gives the same text.
    body["stream"] = json!(true);
    let data = sse_data(
        &post(&format!("{}/v1/chat/completions", front.url()), &body)
            .await
            .text()
            .await
            .expect("body"),
    );
    let streamed: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<ChatChunk>(d).expect("chunk"))
        .flat_map(|c| c.choices.into_iter().filter_map(|x| x.delta.content))
        .collect();
    assert_eq!(streamed, direct.choices[0].message.content);
    upstream.shutdown().await;
    // Upstream gone: a clear 502, and the front keeps running.
    let e = error_of(
        post(&format!("{}/v1/chat/completions", front.url()), &{
            let mut b = body.clone();
            b["stream"] = json!(false);
            b
        })
        .await,
        502,
    )
    .await;
    assert_eq!(e.code, "upstream_unreachable");
    assert_eq!(health(&front.url()).await["status"], "ok");
    front.shutdown().await;
}
