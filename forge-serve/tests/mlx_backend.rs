//! The MLX backend: one worker thread loads, owns and drives the MLX model
//! (MLX is not thread-safe), with forge-peft adapters fused. The same tiny
//! model in F32 gives the same greedy text on the MLX model and on the CPU
//! engine (their logits agree to 1e-4, forge-model's tests).
//!
//! MLX is not thread-safe: `cargo xtask test` runs this crate with
//! `--test-threads=1`.

mod common;

use common::{client, config, fixture, start};
use forge_core::model::{LoadOptions, ModelSource, load};
use forge_core::peft::{DlpLora, LoraLibrary, Method, PeftConfig, PeftModel, Plugin, PluginConfig};
use forge_serve::Backend;
use serde_json::{Value, json};

async fn greedy_text(url: &str, model: &str) -> String {
    let v: Value = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say something about packets."}],
            "max_tokens": 12,
            "temperature": 0,
            "retrieval": false,
        }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlx_backend_with_a_fused_adapter() {
    let f = fixture();
    let (cpu, _) = start(config()).await;
    let cpu_text = greedy_text(&cpu.url(), common::MODEL_ID).await;
    cpu.shutdown().await;

    let hf = f.hf.to_string_lossy().into_owned();
    let mlx_cfg = forge_serve::ServeConfig::new(hf.clone())
        .with_addr("127.0.0.1:0".parse().expect("addr"))
        .with_backend(Backend::Mlx)
        .with_workers(4)
        .with_model_id("tiny-mlx");
    let (mlx, report) = start(mlx_cfg.clone()).await;
    assert_eq!(report.engine, "mlx");
    let health: Value = client()
        .get(format!("{}/health", mlx.url()))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    // MLX runs on one worker whatever --workers says: capacity = 1 + queue.
    assert_eq!(health["capacity"], 1 + 16);
    let mlx_text = greedy_text(&mlx.url(), "tiny-mlx").await;
    mlx.shutdown().await;
    assert_eq!(mlx_text, cpu_text);

    // A freshly initialised LoRA (B = 0) fused into the model changes nothing.
    let adapter = f.root.join("lora");
    {
        let loaded = load(
            &ModelSource::HfDir(f.hf.clone()),
            &LoadOptions::new().with_tokenizer(false),
        )
        .expect("load");
        let peft = PeftModel::new(
            loaded.model,
            PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["all-linear"]),
        )
        .expect("peft");
        peft.save_peft(&adapter, "tiny").expect("save adapter");
    }
    let (fused, report) = start(mlx_cfg.clone().with_adapter(&adapter)).await;
    assert!(report.engine.starts_with("mlx, adapter ") && report.engine.ends_with(" fused"));
    assert_eq!(greedy_text(&fused.url(), "tiny-mlx").await, cpu_text);
    fused.shutdown().await;

    // DLP-LoRA: the plugin picks among two library adapters per request; the
    // response names them with their fusion weights (summing to 1).
    let dlp_dir = f.root.join("dlp");
    {
        let base = || {
            load(
                &ModelSource::HfDir(f.hf.clone()),
                &LoadOptions::new().with_tokenizer(false),
            )
            .expect("load")
            .model
        };
        let mut library = LoraLibrary::new();
        for (name, seed) in [("packets", 1), ("checksums", 2)] {
            let peft = PeftModel::new(
                base(),
                PeftConfig::new(Method::Lora, 2, 4.0)
                    .with_targets(["q_proj", "v_proj"])
                    .with_seed(seed),
            )
            .expect("peft");
            library = library.with_adapter(name, &peft).expect("library");
        }
        let plugin = Plugin::new(
            PluginConfig::new(64, ["packets", "checksums"])
                .with_hidden([16])
                .with_seed(3),
        )
        .expect("plugin");
        DlpLora::new(base(), library, plugin, 0.9)
            .expect("dlp")
            .save(&dlp_dir)
            .expect("save dlp");
    }
    let (dlp, report) = start(mlx_cfg.clone().with_adapter(&dlp_dir)).await;
    assert!(
        report.engine.contains("DLP-LoRA") && report.engine.contains("2 adapters"),
        "{}",
        report.engine
    );
    let v: Value = client()
        .post(format!("{}/v1/chat/completions", dlp.url()))
        .json(&json!({
            "model": "tiny-mlx",
            "messages": [{"role": "user", "content": "Say something about packets."}],
            "max_tokens": 12,
            "temperature": 0,
        }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let chosen = v["adapters"].as_array().expect("adapters");
    assert!(!chosen.is_empty() && chosen.len() <= 2);
    let total: f64 = chosen.iter().filter_map(|a| a["weight"].as_f64()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{chosen:?}");
    assert!(
        chosen
            .iter()
            .all(|a| ["packets", "checksums"].contains(&a["name"].as_str().unwrap_or("")))
    );
    // Freshly initialised LoRAs (B = 0): the fused weights are the base's.
    assert_eq!(
        v["choices"][0]["message"]["content"].as_str(),
        Some(cpu_text.as_str())
    );
    dlp.shutdown().await;

    // Adapters need the MLX backend; a missing adapter folder is named.
    let err = forge_serve::start(config().with_backend(Backend::Cpu).with_adapter(&adapter))
        .await
        .expect_err("cpu + adapter");
    assert!(err.to_string().contains("--backend mlx"), "{err}");
    let err = forge_serve::start(
        forge_serve::ServeConfig::new(hf)
            .with_addr("127.0.0.1:0".parse().expect("addr"))
            .with_adapter(f.root.join("no-such-adapter")),
    )
    .await
    .expect_err("missing adapter");
    assert!(err.to_string().contains("no-such-adapter"), "{err}");
}
