//! CodeBLEU pairs/s: forge-judge (compat mode) vs PyPI codebleu 0.7.0 on the same 1,000 pairs,
//! in one run, with a check that every score (all five numbers) agrees to 1e-6.
//!
//! `cargo run --release -p forge-judge --example codebleu_vs_python [-- --rounds N] [--threads N]
//! [--pairs N] [--corpus FILE.jsonl]` (peer: `<peers>/codebleu-venv`, found through
//! `FORGE_PEERS_DIR` or `.forge/peers`; the pairs are built from `tests/data/codebleu_corpus.jsonl`
//! unless `--corpus` names another file of `{"lang", "reference", "candidate"}` lines, e.g. the
//! output of `tests/reference/make_mutations.py`).
//!
//! Both wall-clock and CPU time are reported, so that the comparison holds on a machine shared
//! with other work: codebleu's scoring loop is timed inside the interpreter
//! (`time.perf_counter` and `time.process_time`, start-up and imports excluded; the whole
//! child's CPU time from `getrusage(RUSAGE_CHILDREN)` is printed too), forge-judge's with
//! `Instant` and `getrusage(RUSAGE_SELF)`. Forge runs `score_batch` on a rayon pool of
//! `--threads` (default: all cores) and on a pool of one thread, and `score` pair by pair on
//! one thread (each reference analysed again for every pair, as `calc_codebleu` does). Every
//! measurement is the best of `--rounds` (default 3).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use forge_judge::{CodeBleu, CodeBleuScore, Lang};

/// CPU seconds (user + system) of this process, or of its waited-for children.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &raw mut u) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Best (wall, CPU) seconds of `rounds` runs of `f`.
fn best_of(rounds: usize, mut f: impl FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        let c = cpu_seconds(libc::RUSAGE_SELF);
        let t = Instant::now();
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(cpu_seconds(libc::RUSAGE_SELF) - c);
    }
    (wall, cpu)
}

struct Row {
    lang: Lang,
    reference: String,
    candidate: String,
}

/// 1,000 pairs: corpus pair i % n; the candidate of every other round gets one more line so
/// that the pairs are not all repeats.
fn make_pairs(corpus: &Path, n: usize) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let base: Vec<serde_json::Value> = std::fs::read_to_string(corpus)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let b = &base[i % base.len()];
        let lang: Lang = b["lang"].as_str().unwrap_or_default().parse()?;
        let mut candidate = b["candidate"].as_str().unwrap_or_default().to_string();
        if (i / base.len()) % 2 == 1 {
            candidate.push_str(match lang {
                Lang::Python => "\nresult = None\n",
                Lang::Rust => "\nlet result = 0;\n",
            });
        }
        rows.push(Row {
            lang,
            reference: b["reference"].as_str().unwrap_or_default().into(),
            candidate,
        });
    }
    Ok(rows)
}

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let peers = std::env::var_os("FORGE_PEERS_DIR")
        .map_or_else(|| root.join("../.forge/peers"), PathBuf::from);
    let rounds = arg("--rounds").unwrap_or(3).max(1);
    let threads = arg("--threads").unwrap_or(0);
    let n_pairs = arg("--pairs").unwrap_or(1000);
    let corpus = std::env::args()
        .skip_while(|a| a != "--corpus")
        .nth(1)
        .map_or_else(
            || root.join("tests/data/codebleu_corpus.jsonl"),
            PathBuf::from,
        );
    let rows = make_pairs(&corpus, n_pairs)?;
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(
        tmp.path(),
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({"id": i.to_string(), "lang": r.lang, "reference": r.reference, "candidate": r.candidate})
                    .to_string()
                    + "\n"
            })
            .collect::<String>(),
    )?;

    // codebleu: scores once, then `rounds` timed runs.
    let python = peers.join("codebleu-venv/bin/python");
    let script = root.join("tests/reference/codebleu_ref.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(tmp.path())
        .env("PYTHONHASHSEED", "0")
        .output()?;
    if !out.status.success() {
        return Err(format!("peer failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let expected: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let (mut py_wall, mut py_cpu, mut py_child_cpu) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        let before = cpu_seconds(libc::RUSAGE_CHILDREN);
        let timed = Command::new(&python)
            .arg(&script)
            .arg(tmp.path())
            .arg("--time")
            .env("PYTHONHASHSEED", "0")
            .output()?;
        py_child_cpu = py_child_cpu.min(cpu_seconds(libc::RUSAGE_CHILDREN) - before);
        let t: serde_json::Value = serde_json::from_slice(&timed.stdout)?;
        py_wall = py_wall.min(t["seconds"].as_f64().ok_or("peer: no seconds")?);
        py_cpu = py_cpu.min(t["cpu_seconds"].as_f64().ok_or("peer: no cpu_seconds")?);
    }

    // forge-judge.
    let by_lang: Vec<(Lang, Vec<usize>)> = [Lang::Python, Lang::Rust]
        .into_iter()
        .map(|l| (l, (0..rows.len()).filter(|&i| rows[i].lang == l).collect()))
        .collect();
    let batch = |scores: &mut Vec<Option<CodeBleuScore>>| {
        for (lang, idx) in &by_lang {
            let pairs: Vec<(&str, &str)> = idx
                .iter()
                .map(|&i| (rows[i].reference.as_str(), rows[i].candidate.as_str()))
                .collect();
            let got = CodeBleu::new(*lang).with_compat(true).score_batch(&pairs);
            for (&i, s) in idx.iter().zip(got) {
                scores[i] = Some(s);
            }
        }
    };
    let pool = |n: usize| rayon::ThreadPoolBuilder::new().num_threads(n).build();
    let many = pool(threads)?;
    let mut scores = vec![None; rows.len()];
    let (par_wall, par_cpu) = many.install(|| best_of(rounds, || batch(&mut scores)));
    let mut single = vec![None; rows.len()];
    let (one_wall, one_cpu) = pool(1)?.install(|| best_of(rounds, || batch(&mut single)));
    let mut each = vec![None; rows.len()];
    let (each_wall, each_cpu) = best_of(rounds, || {
        for (i, r) in rows.iter().enumerate() {
            each[i] = Some(
                CodeBleu::new(r.lang)
                    .with_compat(true)
                    .score(&r.reference, &r.candidate),
            );
        }
    });
    if single != scores || each != scores {
        return Err("one-thread or pair-by-pair scores differ from the parallel ones".into());
    }

    // Agreement, all five numbers.
    let keys = [
        "codebleu",
        "ngram_match_score",
        "weighted_ngram_match_score",
        "syntax_match_score",
        "dataflow_match_score",
    ];
    let mut max_diff = 0.0f64;
    let mut differing = Vec::new();
    for (i, (s, e)) in scores.iter().zip(&expected).enumerate() {
        let s = s.as_ref().ok_or("missing score")?;
        let ours = [
            s.codebleu,
            s.ngram_match,
            s.weighted_ngram_match,
            s.syntax_match,
            s.dataflow_match,
        ];
        let theirs: Vec<f64> = keys
            .iter()
            .map(|k| e[*k].as_f64().unwrap_or(f64::NAN))
            .collect();
        let d = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        max_diff = max_diff.max(d);
        if d.is_nan() || d > 1e-6 {
            differing.push(format!(
                "  pair {i}: forge {ours:?}\n          codebleu {theirs:?}"
            ));
        }
    }

    let n = rows.len() as f64;
    let distinct = rows
        .iter()
        .map(|r| r.reference.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    println!(
        "pairs: {} ({distinct} distinct references); best of {rounds} runs per measurement",
        rows.len()
    );
    println!(
        "{:<44} {:>12} {:>13} {:>10} {:>9}",
        "", "pairs/s", "pairs/CPU-s", "x wall", "x CPU"
    );
    let line = |name: &str, wall: f64, cpu: f64| {
        println!(
            "{name:<44} {:>12.1} {:>13.1} {:>9.1}x {:>8.1}x",
            n / wall,
            n / cpu,
            py_wall / wall,
            py_cpu / cpu
        );
    };
    line("codebleu 0.7.0 (CPython, scoring loop)", py_wall, py_cpu);
    println!(
        "  (whole child process incl. start-up and imports: {:.3} CPU-s, {:.1} pairs/CPU-s)",
        py_child_cpu,
        n / py_child_cpu
    );
    line(
        &format!("forge score_batch, {} threads", many.current_num_threads()),
        par_wall,
        par_cpu,
    );
    line("forge score_batch, 1 thread", one_wall, one_cpu);
    line("forge score per pair, 1 thread", each_wall, each_cpu);
    println!(
        "max |diff| over the five numbers: {max_diff:.2e}; pairs differing by more than 1e-6: {} of {}",
        differing.len(),
        rows.len()
    );
    for d in &differing {
        println!("{d}");
    }
    if differing.is_empty() {
        Ok(())
    } else {
        Err("scores differ from codebleu".into())
    }
}
