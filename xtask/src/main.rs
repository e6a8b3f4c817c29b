//! Forge's project tasks: `cargo xtask setup | test | demo | bench`.
//!
//! The `xtask` alias lives in the committed `.cargo/config.toml`; see the
//! workspace README for what each task does.

mod bench_report;
mod bundle_gpu;
mod cargo_config;
mod peers;
mod peers_llama_quantize;
mod prereq;
mod setup;
mod tasks;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Forge project tasks", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Make MLX usable from Rust on this machine (no-op on macOS; cached on Linux)
    Setup(setup::SetupArgs),
    /// Install the peer tools tests compare against (gguf-py, SmolLM2 GGUF, ggml C reference)
    Peers(peers::PeersArgs),
    /// Install the peers if needed and print the default model's GGUF path (SmolLM2-135M-Instruct Q4_1)
    Model(peers::PeersArgs),
    /// Run setup and peers if needed, then the whole workspace test suite (MLX tests serialised)
    Test(tasks::TestArgs),
    /// Run setup if needed, then the main job on the embedded default
    Demo(tasks::DemoArgs),
    /// Run setup if needed, then the benchmark suite and print its comparison tables
    Bench(tasks::BenchArgs),
    /// Write a folder with what a run on an NVIDIA GPU machine needs (binaries, MLX's CUDA build, env script)
    BundleGpu(bundle_gpu::BundleArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup(args) => setup::run(&args).map(|_| ()),
        Task::Peers(args) => peers::run(&args).map(|_| ()),
        Task::Model(args) => peers::run(&args).map(|l| println!("{}", l.smollm2.display())),
        Task::Test(args) => tasks::test(&args),
        Task::Demo(args) => tasks::demo(&args),
        Task::Bench(args) => tasks::bench(&args),
        Task::BundleGpu(args) => bundle_gpu::run(&args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
