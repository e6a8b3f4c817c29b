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
        Some(0) => Ok(()),
        // The judge's gate refused the model: a real outcome of the demo, reported above.
        Some(3) => {
            eprintln!("demo: the gate refused the fine-tuned model; nothing was deployed");
            Ok(())
        }
        _ => anyhow::bail!("{} failed ({status})", util::display(&run)),
    }
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
