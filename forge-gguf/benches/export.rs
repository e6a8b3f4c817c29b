//! SmolLM2-135M-Instruct F16 → Q4_K_M: Forge's export (pure Rust, rayon
//! over each tensor's blocks) side by side with llama.cpp's `llama-quantize`
//! (built from the `llama-cpp-python==0.3.36` sdist, 2 threads), from the
//! same F16 GGUF (Forge's F16 export of the peers' SmolLM2 file; the two
//! outputs are byte-identical, see `tests/llama_quantize.rs`).
//!
//! Wall time: criterion, group `smollm2_f16_to_q4_k_m`, ids `forge` and
//! `llama-quantize`. Peak RSS: each side once as a child process under
//! `/usr/bin/time -f %M` (Forge's side re-runs this bench binary with
//! `FORGE_EXPORT_BENCH_CHILD` set), printed as
//! `peak RSS: forge … MiB, llama-quantize … MiB`.

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{BenchmarkId, Criterion, Throughput};
use forge_gguf::GgufFile;
use forge_gguf::export::{FileType, GgufTensors, ModelSpec, Policy, export_model};

const CHILD: &str = "FORGE_EXPORT_BENCH_CHILD";

fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

fn export(src: &Path, ft: FileType, out: &Path) {
    let file = GgufFile::open(src).expect("open");
    let spec = ModelSpec::from_gguf(&file).expect("spec");
    let policy = Policy::new(ft, spec.hparams.block_count as usize, spec.tied_embeddings);
    let mut source = GgufTensors::new(&file).expect("source");
    export_model(&spec, &mut source, &policy, out, &mut |_| {}).expect("export");
}

fn peak_rss_mib(cmd: &mut Command) -> Option<f64> {
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let kib: f64 = text.lines().last()?.trim().parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    if let Ok(args) = std::env::var(CHILD) {
        let (src, out) = args.split_once('\n').expect("child args");
        export(Path::new(src), FileType::Q4_K_M, Path::new(out));
        return;
    }
    let model = peers_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let quantize = peers_dir().join("llama-cpp/build/bin/llama-quantize");
    if !model.is_file() {
        println!("skipped: peers not installed (cargo xtask peers)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("forge-export-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let f16 = dir.join("smollm2-f16.gguf");
    export(&model, FileType::F16, &f16);
    let params = GgufFile::open(&f16)
        .expect("f16")
        .tensor_infos()
        .iter()
        .map(|t| t.n_elements())
        .sum::<u64>();
    let ours = dir.join("forge-q4_k_m.gguf");
    let theirs = dir.join("llama-quantize-q4_k_m.gguf");

    let mut c = Criterion::default().configure_from_args().sample_size(10);
    let mut g = c.benchmark_group("smollm2_f16_to_q4_k_m");
    g.throughput(Throughput::Elements(params));
    g.bench_function(BenchmarkId::from_parameter("forge"), |b| {
        b.iter(|| export(&f16, FileType::Q4_K_M, &ours));
    });
    if quantize.is_file() {
        g.bench_function(BenchmarkId::from_parameter("llama-quantize"), |b| {
            b.iter(|| {
                let out = Command::new(&quantize)
                    .arg(&f16)
                    .arg(&theirs)
                    .arg("Q4_K_M")
                    .arg("2")
                    .output()
                    .expect("llama-quantize");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            });
        });
    } else {
        println!(
            "llama-quantize not built: {} (cargo xtask peers)",
            quantize.display()
        );
    }
    g.finish();

    if Path::new("/usr/bin/time").is_file() {
        let me = std::env::current_exe().expect("current exe");
        let forge = peak_rss_mib(
            Command::new("/usr/bin/time")
                .args(["-f", "%M"])
                .arg(&me)
                .env(CHILD, format!("{}\n{}", f16.display(), ours.display())),
        );
        let peer = quantize.is_file().then(|| {
            peak_rss_mib(
                Command::new("/usr/bin/time")
                    .args(["-f", "%M"])
                    .arg(&quantize)
                    .arg(&f16)
                    .arg(&theirs)
                    .args(["Q4_K_M", "2"]),
            )
        });
        let show = |v: Option<f64>| v.map_or("n/a".to_string(), |m| format!("{m:.1} MiB"));
        println!(
            "peak RSS: forge {}, llama-quantize {}",
            show(forge),
            show(peer.flatten())
        );
    }
    c.final_summary();
    std::fs::remove_dir_all(&dir).ok();
}
