//! A load generator for `forge serve` (or any OpenAI-compatible server), run
//! as a second process on loopback: `--requests` requests from
//! `--concurrency` concurrent clients, stopped after `--max-seconds`. Prints
//! throughput, latency percentiles (all answered requests, and the accepted
//! ones), time to first token for streams, and the status codes (429 is the
//! server's overload answer).
//!
//! ```sh
//! forge serve --model default --repo . --workers 1 --queue 8 &
//! cargo run --release -p forge-serve --example loadgen -- --url http://127.0.0.1:8088 \
//!     --model SmolLM2-135M-Instruct.Q4_1 --requests 64 --concurrency 4 --max-tokens 32
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[derive(Parser, Clone)]
struct Args {
    /// Server base URL
    #[arg(long, default_value = "http://127.0.0.1:8088")]
    url: String,
    /// Model id (default: the first of GET /v1/models)
    #[arg(long)]
    model: Option<String>,
    /// Requests in total
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Concurrent clients
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Stop sending after this many seconds
    #[arg(long, default_value_t = 300.0)]
    max_seconds: f64,
    /// Tokens per request
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// chat | completions | fim
    #[arg(long, default_value = "chat")]
    endpoint: String,
    /// Send "retrieval": false
    #[arg(long)]
    no_retrieval: bool,
    /// Stream (server-sent events) and measure time to first token
    #[arg(long)]
    stream: bool,
    /// Bearer key
    #[arg(long)]
    api_key: Option<String>,
}

const QUESTIONS: &[&str] = &[
    "What does parse_header do?",
    "Where is the BM25 index built?",
    "How is generate_ids called?",
    "Which function writes a file atomically?",
    "What does the CPU engine cache?",
    "How are RAFT distractors chosen?",
    "Where are GGUF tensor names mapped to Hugging Face names?",
    "What does quantize return for Q4_0?",
];

#[derive(Debug)]
struct Outcome {
    status: u16,
    latency: Duration,
    first_token: Option<Duration>,
    completion_tokens: usize,
}

fn body(args: &Args, model: &str, i: usize) -> (String, Value) {
    let q = QUESTIONS[i % QUESTIONS.len()];
    let mut b = match args.endpoint.as_str() {
        "completions" => json!({"model": model, "prompt": format!("// {q}\nfn "), }),
        "fim" => json!({"model": model, "path": "forge-serve/src/index.rs",
            "prefix": format!("// {q}\npub fn answer() -> usize {{\n    "), "suffix": "\n}\n"}),
        _ => json!({"model": model, "messages": [{"role": "user", "content": q}]}),
    };
    b["max_tokens"] = json!(args.max_tokens);
    b["temperature"] = json!(0);
    b["stream"] = json!(args.stream);
    if args.stream {
        b["stream_options"] = json!({"include_usage": true});
    }
    if args.no_retrieval {
        b["retrieval"] = json!(false);
    }
    let path = match args.endpoint.as_str() {
        "completions" => "/v1/completions",
        "fim" => "/v1/fim/completions",
        _ => "/v1/chat/completions",
    };
    (format!("{}{path}", args.url.trim_end_matches('/')), b)
}

async fn one(client: &reqwest::Client, args: &Args, model: &str, i: usize) -> Outcome {
    let (url, b) = body(args, model, i);
    let t0 = Instant::now();
    let mut req = client.post(&url).json(&b);
    if let Some(k) = &args.api_key {
        req = req.bearer_auth(k);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(_) => {
            return Outcome {
                status: 0,
                latency: t0.elapsed(),
                first_token: None,
                completion_tokens: 0,
            };
        }
    };
    let status = resp.status().as_u16();
    let mut first_token = None;
    let mut completion_tokens = 0;
    if status == 200 && args.stream {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let ev: String = buf.drain(..end + 2).collect();
                let Some(data) = ev.trim().strip_prefix("data:") else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                let text = v
                    .pointer("/choices/0/delta/content")
                    .or_else(|| v.pointer("/choices/0/text"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if first_token.is_none() && !text.is_empty() {
                    first_token = Some(t0.elapsed());
                }
                if let Some(n) = v
                    .pointer("/usage/completion_tokens")
                    .and_then(Value::as_u64)
                {
                    completion_tokens = n as usize;
                }
            }
        }
    } else {
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        completion_tokens = v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
    }
    Outcome {
        status,
        latency: t0.elapsed(),
        first_token,
        completion_tokens,
    }
}

fn pct(sorted: &[Duration], p: f64) -> String {
    if sorted.is_empty() {
        return "–".into();
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    format!(
        "{:.0}",
        sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.requests == 0 {
        bail!("--requests and --concurrency must be at least 1");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            let v: Value = client
                .get(format!("{}/v1/models", args.url.trim_end_matches('/')))
                .send()
                .await
                .with_context(|| format!("{}: is the server running?", args.url))?
                .json()
                .await?;
            v.pointer("/data/0/id")
                .and_then(Value::as_str)
                .context("no model in /v1/models")?
                .to_string()
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.max_seconds);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, args, model, next) = (
            client.clone(),
            args.clone(),
            model.clone(),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= args.requests || Instant::now() >= deadline {
                    return out;
                }
                out.push(one(&client, &args, &model, i).await);
            }
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.extend(t.await?);
    }
    let wall = started.elapsed();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for o in &outcomes {
        *statuses.entry(o.status).or_default() += 1;
    }
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    let mut lat_ok: Vec<Duration> = ok.iter().map(|o| o.latency).collect();
    lat_ok.sort();
    let mut lat_refused: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.status == 429)
        .map(|o| o.latency)
        .collect();
    lat_refused.sort();
    let mut ttft: Vec<Duration> = ok.iter().filter_map(|o| o.first_token).collect();
    ttft.sort();
    let tokens: usize = ok.iter().map(|o| o.completion_tokens).sum();
    let secs = wall.as_secs_f64();
    println!(
        "endpoint {} stream {} retrieval {} concurrency {} max_tokens {}: {} requests in {:.2} s",
        args.endpoint,
        args.stream,
        !args.no_retrieval,
        args.concurrency,
        args.max_tokens,
        outcomes.len(),
        secs
    );
    println!(
        "| clients | sent | 200 | 429 | other | req/s (200) | tok/s | p50 ms | p90 ms | p99 ms | max ms | TTFT p50 ms | 429 p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let other: usize = statuses
        .iter()
        .filter(|(s, _)| **s != 200 && **s != 429)
        .map(|(_, n)| n)
        .sum();
    println!(
        "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} |",
        args.concurrency,
        outcomes.len(),
        ok.len(),
        statuses.get(&429).copied().unwrap_or(0),
        other,
        ok.len() as f64 / secs,
        tokens as f64 / secs,
        pct(&lat_ok, 50.0),
        pct(&lat_ok, 90.0),
        pct(&lat_ok, 99.0),
        pct(&lat_ok, 100.0),
        pct(&ttft, 50.0),
        pct(&lat_refused, 50.0),
    );
    if other > 0 {
        eprintln!("status codes: {statuses:?}");
    }
    Ok(())
}
