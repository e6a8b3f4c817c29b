//! `cargo xtask test | demo | bench`.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::peers::{self, PeersArgs};
use crate::setup::{self, SetupArgs};
use crate::{bench_report, util};

#[derive(Args, Debug)]
pub(crate) struct TestArgs {
    #[command(flatten)]
    setup: SetupArgs,
    /// Skip the MLX setup (it must have run before)
    #[arg(long)]
    no_setup: bool,
    /// Extra arguments for every `cargo test` (e.g. `--release`)
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    setup: SetupArgs,
    /// Arguments passed to `forge run examples/demo` (e.g. `-- --resume -v`)
    #[arg(last = true)]
    demo_args: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    setup: SetupArgs,
    /// Only run benchmarks whose name matches this filter
    filter: Option<String>,
}

/// Workspace packages that (transitively) depend on mlx-rs. MLX is not
/// thread-safe, so their tests run with one test thread.
pub(crate) fn mlx_packages() -> Result<(Vec<String>, Vec<String>)> {
    let meta = util::output(util::cargo().args(["metadata", "--format-version", "1"]))?;
    let meta: serde_json::Value = serde_json::from_str(&meta).context("parsing cargo metadata")?;
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .context("no workspace_members")?
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let mut name_of = HashMap::new();
    for pkg in meta["packages"].as_array().context("no packages")? {
        name_of.insert(
            pkg["id"].as_str().unwrap_or_default().to_string(),
            pkg["name"].as_str().unwrap_or_default().to_string(),
        );
    }
    let mut deps: HashMap<String, Vec<String>> = HashMap::new();
    for node in meta["resolve"]["nodes"]
        .as_array()
        .context("no resolve graph")?
    {
        let id = node["id"].as_str().unwrap_or_default().to_string();
        let d = node["dependencies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        deps.insert(id, d);
    }
    let uses_mlx = |root: &str| {
        let mut stack = vec![root.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if name_of.get(&id).is_some_and(|n| n == "mlx-rs") {
                return true;
            }
            stack.extend(deps.get(&id).cloned().unwrap_or_default());
        }
        false
    };
    let (mut mlx, mut plain) = (Vec::new(), Vec::new());
    for id in &members {
        let name = name_of.get(id).cloned().unwrap_or_default();
        if uses_mlx(id) {
            mlx.push(name)
        } else {
            plain.push(name)
        }
    }
    Ok((mlx, plain))
}

pub(crate) fn test(args: &TestArgs) -> Result<()> {
    if !args.no_setup {
        setup::run(&args.setup)?;
        peers::run(&PeersArgs {
            python: args.setup.python.clone(),
        })?;
    }
    let (mlx, plain) = mlx_packages()?;
    eprintln!("forge test: without MLX: {}", plain.join(", "));
    eprintln!("forge test: with MLX (one test thread): {}", mlx.join(", "));
    // Tests that compare with a peer fail (rather than skip) when it is missing.
    let with_packages = |cmd: &mut Command, pkgs: &[String]| {
        cmd.env("FORGE_REQUIRE_PEERS", "1");
        for p in pkgs {
            cmd.args(["-p", p]);
        }
    };
    // Crates without MLX: all targets in parallel, then doctests.
    for targets in [["--all-targets"], ["--doc"]] {
        let mut cmd = util::cargo();
        cmd.arg("test").args(targets);
        with_packages(&mut cmd, &plain);
        cmd.args(&args.cargo_args);
        util::run(&mut cmd)?;
    }
    // Crates with MLX: serialised. Criterion benches run once each in test
    // mode; they take no libtest flags, so they go separately.
    let runs: [(&[&str], bool); 3] = [
        (&["--lib", "--bins", "--tests", "--examples"], true),
        (&["--benches"], false),
        (&["--doc"], true),
    ];
    for (targets, serial) in runs {
        let mut cmd = util::cargo();
        cmd.arg("test").args(targets);
        with_packages(&mut cmd, &mlx);
        cmd.args(&args.cargo_args);
        if serial {
            cmd.args(["--", "--test-threads=1"]);
        }
        util::run(&mut cmd)?;
    }
    eprintln!("forge test: all passed");
    Ok(())
}

/// The demo: the MLX smoke checks (`forge demo`), then the whole pipeline on the
/// embedded default project (`forge run examples/demo`: this repository's miner
/// sources, SmolLM2-135M-Instruct, PiSSA over a 4-bit base, judge, Q4_K_M GGUF,
/// Modelfile). `forge run` prints where the report, plots, GGUF and Modelfile are.
pub(crate) fn demo(args: &DemoArgs) -> Result<()> {
    setup::run(&args.setup)?;
    // The default model, as `cargo xtask model` fetches it (the other peers only
    // when it is missing: `peers::run` installs them all).
    if !peers::PeerLayout::new(&util::workspace_root())
        .smollm2
        .is_file()
    {
        peers::run(&PeersArgs {
            python: args.setup.python.clone(),
        })?;
    }
    let forge = || {
        let mut cmd = util::cargo();
        cmd.args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "forge-examples",
            "--bin",
            "forge",
            "--",
        ]);
        cmd
    };
    util::run(forge().arg("demo"))?;
    let project = util::workspace_root().join("examples").join("demo");
    let mut run = forge();
    run.arg("run").arg(&project).args(&args.demo_args);
    eprintln!("demo: {}", util::display(&run));
    let status = run
        .status()
        .with_context(|| format!("running {}", util::display(&run)))?;
    match status.code() {
        Some(0) => {}
        // The judge's gate refused the model: a real outcome of the demo, reported above.
        Some(3) => eprintln!("demo: the gate refused the fine-tuned model; nothing was deployed"),
        _ => anyhow::bail!("{} failed ({status})", util::display(&run)),
    }
    demo_llama_cpp_check()
}

/// Loads the demo's Q4_K_M GGUF in llama.cpp (node-llama-cpp, the tests' peer, through
/// forge-core's reference script) and prints its perplexity on a source file of this
/// repository; skipped with a message when node or the peer is missing.
fn demo_llama_cpp_check() -> Result<()> {
    let root = util::workspace_root();
    let state = root.join("target").join("forge-demo");
    let runs = state.join("runs");
    let mut ids: Vec<_> = std::fs::read_dir(&runs)
        .with_context(|| format!("reading {}", runs.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    ids.sort();
    let Some(last) = ids.last() else {
        return Ok(());
    };
    let manifest = runs.join(last).join("export").join("manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        return Ok(());
    };
    let manifest: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let Some(rel) = manifest["outputs"]["gguf_q4_k_m"]["path"].as_str() else {
        return Ok(());
    };
    let gguf = state.join(rel);
    let peer = peers::PeerLayout::new(&root).node_llama_cpp;
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok || !peer.join("node_modules").join("node-llama-cpp").is_dir() {
        eprintln!(
            "demo: llama.cpp check skipped: node or node-llama-cpp missing (cargo xtask peers)"
        );
        return Ok(());
    }
    let script = root.join("forge-core/tests/reference/llama_cpp_export.mjs");
    let work = state.join("llama-cpp-check");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let call = |request: serde_json::Value| -> Result<serde_json::Value> {
        let (req, resp) = (work.join("request.json"), work.join("response.json"));
        std::fs::write(&req, request.to_string())?;
        let mut cmd = Command::new("node");
        cmd.arg(&script)
            .arg(&req)
            .arg(&resp)
            .env("FORGE_NODE_LLAMA_CPP_DIR", &peer);
        util::run(&mut cmd)?;
        Ok(serde_json::from_str(&std::fs::read_to_string(&resp)?)?)
    };
    let source = "forge-miner/src/bm25.rs";
    let text: String = std::fs::read_to_string(root.join(source))?
        .chars()
        .take(1500)
        .collect();
    let tokens = call(serde_json::json!({"model": gguf, "threads": 2, "tokenize": [text]}))?;
    let ids = tokens["tokenize"][0].clone();
    let out = call(serde_json::json!({"model": gguf, "threads": 2, "ppl": ids}))?;
    let ppl = out["ppl"]["ppl"]
        .as_f64()
        .context("llama.cpp returned no perplexity")?;
    anyhow::ensure!(
        ppl.is_finite() && ppl > 1.0,
        "llama.cpp perplexity {ppl} on the GGUF"
    );
    println!(
        "llama.cpp ({}) runs {}: perplexity {ppl:.2} over {} tokens of {source}",
        out["version"].as_str().unwrap_or("node-llama-cpp"),
        gguf.display(),
        out["ppl"]["tokens"]
    );
    Ok(())
}

pub(crate) fn bench(args: &BenchArgs) -> Result<()> {
    setup::run(&args.setup)?;
    peers::run(&PeersArgs {
        python: args.setup.python.clone(),
    })?;
    let started = std::time::SystemTime::now();
    let mut cmd = util::cargo();
    cmd.args(["bench", "--workspace", "--exclude", "xtask", "--benches"]);
    if let Some(filter) = &args.filter {
        cmd.args(["--", filter]);
    }
    util::run(&mut cmd)?;
    let criterion_dir = util::workspace_root().join("target").join("criterion");
    let report = bench_report::render(&criterion_dir, started)?;
    println!("\n{report}");
    let out = util::workspace_root()
        .join("target")
        .join("forge-bench")
        .join("report.md");
    util::write_atomic(&out, &report)?;
    eprintln!("forge bench: tables written to {}", out.display());
    Ok(())
}
