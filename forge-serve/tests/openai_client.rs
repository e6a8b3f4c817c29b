//! The official `openai` Python client (PyPI, `cargo xtask peers` installs it
//! in `.forge/peers/openai-venv`) against the server: model listing, chat
//! (plain and streamed), completions, Forge's `citations` and `retrieval`
//! extensions, and its typed errors for 404/400. Skipped with a message when
//! the peer is missing, unless FORGE_REQUIRE_PEERS=1.

mod common;

use common::{MODEL_ID, config, fixture, peers_dir, skip_or_fail, start};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_client_talks_to_the_server() {
    let python = peers_dir().join("openai-venv/bin/python");
    if !python.is_file() {
        skip_or_fail(&format!(
            "{} missing: the openai client is not installed (cargo xtask peers)",
            python.display()
        ));
        return;
    }
    let (server, _) = start(config().with_repo(&fixture().repo).with_top_k(2)).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .arg(&url)
            .arg(MODEL_ID)
            .output()
    })
    .await
    .expect("task")
    .expect("python runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openai client failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json from the script");
    eprintln!("openai {}", v["openai_version"]);
    assert_eq!(v["models"], serde_json::json!([MODEL_ID]));
    let chat = &v["chat"];
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["role"], "assistant");
    let u = &chat["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(
            u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0)
        )
    );
    let cits = chat["citations"]
        .as_array()
        .expect("citations through the client");
    assert_eq!(cits[0]["path"], "wire/src/parser.rs");
    assert_eq!(cits[0]["start_line"], 3);
    // The streamed text the client reassembles equals the plain answer.
    assert_eq!(v["stream"]["content"], chat["content"]);
    assert_eq!(
        v["stream"]["finish"],
        serde_json::json!([chat["finish_reason"]])
    );
    assert_eq!(v["stream"]["completion_tokens"], u["completion_tokens"]);
    assert_eq!(v["completion"]["object"], "text_completion");
    assert_eq!(v["no_rag_citations"], serde_json::json!([]));
    assert_eq!(
        v["errors"]["unknown_model"],
        serde_json::json!([404, "model_not_found"])
    );
    assert_eq!(
        v["errors"]["bad_temperature"],
        serde_json::json!([400, "invalid_temperature"])
    );
    server.shutdown().await;
}
