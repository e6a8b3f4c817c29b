//! Running model-written code: one child process per sample in a fresh temporary directory.
//!
//! Layers, each detected once per process ([`isolation`]) and used when the kernel allows it:
//!
//! | concern | best | fallback |
//! |---|---|---|
//! | network | new network namespace (only a down loopback) | seccomp: `socket(AF_INET/INET6/PACKET/NETLINK)` → `EACCES` |
//! | writes outside the directory | Landlock (write rights only beneath it and `/dev/null`) | none (reported) |
//! | other processes | new PID namespace + private `/proc`; Landlock ptrace/signal scoping | own process group |
//! | process count | pids cgroup (root) / `RLIMIT_NPROC` in a fresh user namespace | `RLIMIT_NPROC` |
//! | time | wall clock (SIGKILL to the whole namespace) and `RLIMIT_CPU` | same |
//! | memory, files | `RLIMIT_AS`, `RLIMIT_FSIZE`, `RLIMIT_NOFILE`, `RLIMIT_CORE = 0` | same |
//! | environment | only `PATH`, `HOME`/`TMPDIR` (the directory), `LANG` and what the runner adds | same |
//!
//! Cleanup: the directory is removed when its [`tempfile::TempDir`] drops; the sample is PID 1
//! of its namespace, so when it exits or is killed the kernel kills everything it started;
//! the pids cgroup (when used) is emptied with SIGKILL and removed.

mod child;
mod confine;

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use child::{ExecPtrs, KIND_ERROR, KIND_EXIT, KIND_PID, Plan, RECORD_BYTES, Record, Stage};
use confine::PidsCgroup;

/// How the network is kept from the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkIsolation {
    /// A new network namespace: no interface but a down loopback.
    Namespace,
    /// A seccomp filter refuses Internet, packet and netlink sockets.
    Seccomp,
    /// Nothing (an architecture without the seccomp filter and no namespaces).
    None,
}

/// How writes outside the sample's directory are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FsIsolation {
    /// Landlock ABI version in force (`None`: the kernel has no Landlock).
    pub landlock: Option<u32>,
    /// In the sample's private mount namespace every mount but its directory is read-only.
    pub read_only_mounts: bool,
}

impl FsIsolation {
    /// Some layer refuses writes outside the directory.
    pub fn confined(&self) -> bool {
        self.landlock.is_some() || self.read_only_mounts
    }
}

/// How the sample is kept away from other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessIsolation {
    /// New PID namespace (with its own `/proc` when `private_proc`).
    PidNamespace {
        /// A fresh `/proc` is mounted in a private mount namespace.
        private_proc: bool,
    },
    /// Only a process group of its own.
    ProcessGroup,
}

/// What caps the number of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessLimit {
    /// A pids cgroup per run.
    Cgroup,
    /// `RLIMIT_NPROC` (counted per user namespace when one is used).
    Rlimit,
    /// `RLIMIT_NPROC` is set but the kernel ignores it for root and no cgroup is writable.
    None,
}

/// The isolation the sandbox uses on this machine (see [`isolation`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Isolation {
    /// Network.
    pub network: NetworkIsolation,
    /// File system writes.
    pub filesystem: FsIsolation,
    /// Other processes.
    pub processes: ProcessIsolation,
    /// Process count.
    pub process_limit: ProcessLimit,
    #[serde(skip)]
    userns: bool,
    #[serde(skip)]
    cgroup_dir: Option<PathBuf>,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = match self.network {
            NetworkIsolation::Namespace => "network namespace".to_owned(),
            NetworkIsolation::Seccomp => "seccomp socket filter".to_owned(),
            NetworkIsolation::None => "NONE".to_owned(),
        };
        let fs = match (self.filesystem.landlock, self.filesystem.read_only_mounts) {
            (Some(abi), true) => format!("Landlock ABI {abi} + read-only mounts"),
            (Some(abi), false) => format!("Landlock ABI {abi}"),
            (None, true) => "read-only mounts".to_owned(),
            (None, false) => "NONE".to_owned(),
        };
        let procs = match self.processes {
            ProcessIsolation::PidNamespace { private_proc: true } => "PID namespace, private /proc",
            ProcessIsolation::PidNamespace {
                private_proc: false,
            } => "PID namespace, host /proc",
            ProcessIsolation::ProcessGroup => "process group only",
        };
        let limit = match self.process_limit {
            ProcessLimit::Cgroup => "pids cgroup",
            ProcessLimit::Rlimit => "RLIMIT_NPROC",
            ProcessLimit::None => "NONE (root without a pids cgroup)",
        };
        write!(
            f,
            "network: {net}; writes: {fs}; processes: {procs}; process limit: {limit}"
        )
    }
}

impl Isolation {
    /// The same without namespaces: network through the seccomp filter, processes only in
    /// their own group, no read-only mounts. For kernels or containers that refuse user
    /// namespaces at run time, and to test those fallbacks.
    #[must_use]
    pub fn without_namespaces(&self) -> Self {
        Self {
            network: if confine::socket_filter().is_some() {
                NetworkIsolation::Seccomp
            } else {
                NetworkIsolation::None
            },
            filesystem: FsIsolation {
                read_only_mounts: false,
                ..self.filesystem
            },
            processes: ProcessIsolation::ProcessGroup,
            userns: false,
            ..self.clone()
        }
    }

    /// The same without Landlock.
    #[must_use]
    pub fn without_landlock(&self) -> Self {
        Self {
            filesystem: FsIsolation {
                landlock: None,
                ..self.filesystem
            },
            ..self.clone()
        }
    }
}

/// The isolation available here, probed once per process by running `/bin/sh -c 'exit 0'`
/// with every layer and dropping the ones whose setup fails.
pub fn isolation() -> &'static Isolation {
    static ISO: OnceLock<Isolation> = OnceLock::new();
    ISO.get_or_init(probe)
}

fn probe() -> Isolation {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut userns = true;
    let mut private_proc = true;
    let mut read_only = true;
    let mut abi = confine::landlock_abi();
    let mut seccomp = confine::socket_filter().is_some();
    let mut cgroup_dir = PidsCgroup::parent_dir();
    let dir = tempfile::Builder::new()
        .prefix("forge-judge-probe-")
        .tempdir();
    for _ in 0..8 {
        let iso = Isolation {
            network: if userns {
                NetworkIsolation::Namespace
            } else if seccomp {
                NetworkIsolation::Seccomp
            } else {
                NetworkIsolation::None
            },
            filesystem: FsIsolation {
                landlock: (abi > 0).then_some(abi),
                read_only_mounts: userns && read_only,
            },
            processes: if userns {
                ProcessIsolation::PidNamespace { private_proc }
            } else {
                ProcessIsolation::ProcessGroup
            },
            process_limit: if cgroup_dir.is_some() {
                ProcessLimit::Cgroup
            } else if root {
                ProcessLimit::None
            } else {
                ProcessLimit::Rlimit
            },
            userns,
            cgroup_dir: cgroup_dir.clone(),
        };
        let Ok(dir) = &dir else { return iso };
        let sb = Sandbox::new().with_wall_time(Duration::from_secs(10));
        match sb.spawn(
            &iso,
            dir.path(),
            Path::new("/bin/sh"),
            &["-c".as_ref(), "exit 0".as_ref()],
        ) {
            Err(Failure::Setup(stage, _)) => match stage {
                Stage::Unshare | Stage::IdMap => {
                    userns = false;
                    private_proc = false;
                }
                Stage::Mounts => {
                    private_proc = false;
                    read_only = false;
                }
                Stage::ReadOnly => read_only = false,
                Stage::Landlock => abi = 0,
                Stage::Seccomp => seccomp = false,
                Stage::Cgroup => cgroup_dir = None,
                _ => return iso,
            },
            _ => return iso,
        }
    }
    Isolation {
        network: NetworkIsolation::None,
        filesystem: FsIsolation {
            landlock: None,
            read_only_mounts: false,
        },
        processes: ProcessIsolation::ProcessGroup,
        process_limit: ProcessLimit::None,
        userns: false,
        cgroup_dir: None,
    }
}

/// Which limit ended a run early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeLimit {
    /// Wall clock.
    Wall,
    /// CPU time (`RLIMIT_CPU`).
    Cpu,
}

/// How one sandboxed run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Exit status 0.
    Passed,
    /// Non-zero exit or a signal.
    Failed {
        /// Exit code when it exited.
        exit_code: Option<i32>,
        /// Signal number when a signal ended it.
        signal: Option<i32>,
    },
    /// Killed for running past a time limit.
    TimedOut {
        /// Which one.
        limit: TimeLimit,
    },
    /// Ended by the address-space limit (an allocation failure reported on stderr:
    /// Python `MemoryError`, Rust `memory allocation of N bytes failed`, C++ `bad_alloc`).
    MemoryExceeded,
}

impl Outcome {
    /// Exit status 0.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Passed => write!(f, "passed"),
            Outcome::Failed {
                exit_code: Some(c), ..
            } => write!(f, "failed: exit code {c}"),
            Outcome::Failed {
                signal: Some(s), ..
            } => write!(f, "failed: signal {s}"),
            Outcome::Failed { .. } => write!(f, "failed"),
            Outcome::TimedOut {
                limit: TimeLimit::Wall,
            } => write!(f, "timed out (wall clock)"),
            Outcome::TimedOut {
                limit: TimeLimit::Cpu,
            } => write!(f, "timed out (CPU time)"),
            Outcome::MemoryExceeded => write!(f, "memory exceeded"),
        }
    }
}

/// What one sandboxed run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutput {
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Captured standard output (first `output_limit` bytes, lossy UTF-8).
    pub stdout: String,
    /// Captured standard error (same bound).
    pub stderr: String,
    /// More output was produced than kept.
    pub truncated: bool,
    /// Wall-clock milliseconds from fork to the end of the run.
    pub wall_ms: u64,
    /// User + system CPU milliseconds of the sample and the children it waited for.
    pub cpu_ms: Option<u64>,
    /// Peak resident set of the largest process, KiB.
    pub max_rss_kib: Option<u64>,
}

/// Limits and environment for sandboxed runs.
#[derive(Debug, Clone)]
pub struct Sandbox {
    wall: Duration,
    cpu: Duration,
    memory: u64,
    file_size: u64,
    processes: u64,
    open_files: u64,
    output_limit: usize,
    env: Vec<(String, String)>,
    isolation: Option<Isolation>,
    read_roots: Option<Vec<PathBuf>>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// Wall clock 10 s, CPU 10 s, address space 1 GiB, files 64 MiB, 64 processes/threads,
    /// 256 open files, 64 KiB of each output kept.
    pub fn new() -> Self {
        Self {
            wall: Duration::from_secs(10),
            cpu: Duration::from_secs(10),
            memory: 1 << 30,
            file_size: 64 << 20,
            processes: 64,
            open_files: 256,
            output_limit: 64 << 10,
            env: Vec::new(),
            isolation: None,
            read_roots: None,
        }
    }

    /// Wall-clock limit; the CPU limit follows it unless set after.
    #[must_use]
    pub fn with_wall_time(mut self, t: Duration) -> Self {
        self.wall = t;
        self.cpu = t;
        self
    }

    /// CPU-time limit (whole seconds, rounded up).
    #[must_use]
    pub fn with_cpu_time(mut self, t: Duration) -> Self {
        self.cpu = t;
        self
    }

    /// Address-space limit in bytes (`RLIMIT_AS`).
    #[must_use]
    pub fn with_memory(mut self, bytes: u64) -> Self {
        self.memory = bytes;
        self
    }

    /// Largest file the sample may write, bytes (`RLIMIT_FSIZE`).
    #[must_use]
    pub fn with_file_size(mut self, bytes: u64) -> Self {
        self.file_size = bytes;
        self
    }

    /// Most processes and threads at once.
    #[must_use]
    pub fn with_processes(mut self, n: u64) -> Self {
        self.processes = n.max(1);
        self
    }

    /// Most open file descriptors (`RLIMIT_NOFILE`).
    #[must_use]
    pub fn with_open_files(mut self, n: u64) -> Self {
        self.open_files = n.max(8);
        self
    }

    /// Bytes of stdout and of stderr kept (the rest is read and dropped).
    #[must_use]
    pub fn with_output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// Adds an environment variable for the sample (on top of `PATH`, `HOME`, `TMPDIR`,
    /// `LANG`).
    #[must_use]
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// With Landlock: the sample may read and execute only beneath these paths (files or
    /// directories), its own directory and `/dev/{null,zero,urandom,random}`. `None` (the
    /// default): reads are not confined, only writes.
    #[must_use]
    pub fn with_read_paths(mut self, roots: Option<Vec<PathBuf>>) -> Self {
        self.read_roots = roots;
        self
    }

    /// Uses `iso` (derived from [`isolation`] with [`Isolation::without_namespaces`] or
    /// [`Isolation::without_landlock`]) instead of the best available.
    #[must_use]
    pub fn with_isolation(mut self, iso: Isolation) -> Self {
        self.isolation = Some(iso);
        self
    }

    /// The isolation runs use.
    pub fn effective_isolation(&self) -> &Isolation {
        self.isolation.as_ref().unwrap_or_else(|| isolation())
    }

    /// The wall-clock limit.
    pub fn wall_time(&self) -> Duration {
        self.wall
    }

    /// A fresh, empty directory for one sample (removed when dropped).
    pub fn workdir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("forge-judge-")
            .tempdir()
            .map_err(|e| Error::Sandbox(format!("creating a temporary directory: {e}")))
    }

    /// Runs `program args…` inside `dir` under the limits and the machine's [`isolation`].
    ///
    /// `Err` only when the sandbox itself cannot be set up (for example `program` does not
    /// exist); whatever the program does is reported in [`RunOutput::outcome`].
    pub fn run(&self, dir: &Path, program: &Path, args: &[&OsStr]) -> Result<RunOutput> {
        let iso = self.effective_isolation();
        self.spawn(iso, dir, program, args).map_err(|f| match f {
            Failure::Setup(stage, errno) => Error::Sandbox(format!(
                "running {}: {} failed: {}",
                program.display(),
                stage.label(),
                std::io::Error::from_raw_os_error(errno)
            )),
            Failure::Io(what, e) => Error::Sandbox(format!("{what}: {e}")),
        })
    }

    fn plan(
        &self,
        iso: &Isolation,
        dir: &Path,
        program: &Path,
        args: &[&OsStr],
    ) -> std::result::Result<Plan, Failure> {
        let cstr = |b: &[u8]| {
            CString::new(b).map_err(|_| Failure::Io("argument with a NUL byte", nul_err()))
        };
        let mut argv = vec![cstr(program.as_os_str().as_encoded_bytes())?];
        for a in args {
            argv.push(cstr(a.as_encoded_bytes())?);
        }
        let d = dir.as_os_str().as_encoded_bytes();
        let mut envp = vec![
            cstr(b"PATH=/usr/local/bin:/usr/bin:/bin")?,
            cstr(&[b"HOME=", d].concat())?,
            cstr(&[b"TMPDIR=", d].concat())?,
            cstr(b"LANG=C.UTF-8")?,
        ];
        for (k, v) in &self.env {
            envp.push(cstr(format!("{k}={v}").as_bytes())?);
        }
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let unshare_flags = if iso.userns {
            libc::CLONE_NEWUSER
                | libc::CLONE_NEWNET
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
        } else {
            0
        };
        let secs = |t: Duration| t.as_secs() + u64::from(t.subsec_nanos() > 0);
        Ok(Plan {
            program: cstr(program.as_os_str().as_encoded_bytes())?,
            argv,
            envp,
            workdir: cstr(d)?,
            unshare_flags,
            uid_map: format!("{uid} {uid} 1").into_bytes(),
            gid_map: format!("{gid} {gid} 1").into_bytes(),
            mount_proc: matches!(
                iso.processes,
                ProcessIsolation::PidNamespace { private_proc: true }
            ),
            rlimits: vec![
                (libc::RLIMIT_AS as i32, self.memory),
                (libc::RLIMIT_FSIZE as i32, self.file_size),
                (libc::RLIMIT_NPROC as i32, self.processes),
                (libc::RLIMIT_NOFILE as i32, self.open_files),
                (libc::RLIMIT_CORE as i32, 0),
                (libc::RLIMIT_CPU as i32, secs(self.cpu).max(1)),
            ],
            read_only_root: iso.filesystem.read_only_mounts,
            landlock: iso
                .filesystem
                .landlock
                .and_then(|abi| confine::landlock_plan(abi, dir, self.read_roots.as_deref())),
            seccomp: if iso.network == NetworkIsolation::Seccomp {
                confine::socket_filter()
            } else {
                None
            },
            cgroup_procs_fd: -1,
            stdin_fd: -1,
            stdout_fd: -1,
            stderr_fd: -1,
            status_fd: -1,
        })
    }

    fn spawn(
        &self,
        iso: &Isolation,
        dir: &Path,
        program: &Path,
        args: &[&OsStr],
    ) -> std::result::Result<RunOutput, Failure> {
        let mut plan = self.plan(iso, dir, program, args)?;
        let stdin = std::fs::File::open("/dev/null").map_err(|e| Failure::Io("/dev/null", e))?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (st_r, st_w) = pipe()?;
        let cgroup = match &iso.cgroup_dir {
            Some(parent) => Some(
                PidsCgroup::create(parent, self.processes)
                    .map_err(|e| Failure::Io("creating the pids cgroup", e))?,
            ),
            None => None,
        };
        let procs = match &cgroup {
            Some(cg) => Some(
                cg.procs_file()
                    .map_err(|e| Failure::Io("opening cgroup.procs", e))?,
            ),
            None => None,
        };
        plan.cgroup_procs_fd = procs.as_ref().map_or(-1, |f| f.as_raw_fd());
        plan.stdin_fd = stdin.as_raw_fd();
        plan.stdout_fd = out_w.as_raw_fd();
        plan.stderr_fd = err_w.as_raw_fd();
        plan.status_fd = st_w.as_raw_fd();
        let ptrs = ExecPtrs::new(&plan);
        let start = Instant::now();
        // SAFETY: the child branch only calls async-signal-safe code on data prepared above.
        let mid = unsafe { libc::fork() };
        if mid < 0 {
            return Err(Failure::Io("fork", std::io::Error::last_os_error()));
        }
        if mid == 0 {
            // SAFETY: freshly forked child; `plan` and `ptrs` were built before the fork.
            unsafe { child::middle(&plan, &ptrs) }
        }
        drop((out_w, err_w, st_w, stdin, procs));
        let mut watch = Watch {
            fds: [out_r, err_r, st_r],
            open: [true; 3],
            out: Vec::new(),
            err: Vec::new(),
            status: Vec::new(),
            limit: self.output_limit,
            truncated: false,
        };
        let deadline = start + self.wall;
        let mut timed_out = false;
        let mut sample_pid: Option<i32> = None;
        let mut killed_at: Option<Instant> = None;
        while watch.open[2] {
            let now = Instant::now();
            if !timed_out && now >= deadline {
                timed_out = true;
                killed_at = Some(now);
                kill_sample(mid, sample_pid.or_else(|| watch.sample_pid()));
            }
            if let Some(t) = killed_at
                && now.duration_since(t) > Duration::from_secs(5)
            {
                // The middle process did not report: take it down too (its group holds
                // init when there is no PID namespace to end).
                // SAFETY: signalling our own child and its process group.
                unsafe {
                    libc::kill(mid, libc::SIGKILL);
                    libc::kill(-mid, libc::SIGKILL);
                }
            }
            let wait = if timed_out {
                Duration::from_millis(50)
            } else {
                deadline.saturating_duration_since(now)
            };
            watch.poll(wait.min(Duration::from_millis(200)));
            if sample_pid.is_none() {
                sample_pid = watch.sample_pid();
            }
        }
        // The middle process has exited (or closed its status pipe): reap it, then kill
        // anything left and collect the rest of the output.
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(mid, &mut status, 0) };
        if !iso.userns {
            // No PID namespace: take down whatever the sample left in its process group.
            kill_sample(mid, sample_pid);
        }
        drop(cgroup);
        let drain_until = Instant::now() + Duration::from_millis(500);
        while (watch.open[0] || watch.open[1]) && Instant::now() < drain_until {
            watch.poll(Duration::from_millis(50));
        }
        let wall_ms = start.elapsed().as_millis() as u64;
        let records = watch.records();
        if let Some(r) = records.iter().find(|r| r[0] == KIND_ERROR) {
            let stage = Stage::from_i64(r[1]).unwrap_or(Stage::Exec);
            return Err(Failure::Setup(stage, r[2] as i32));
        }
        let exit = records.iter().find(|r| r[0] == KIND_EXIT);
        let stdout = String::from_utf8_lossy(&watch.out).into_owned();
        let stderr = String::from_utf8_lossy(&watch.err).into_owned();
        let cpu_ms = exit.map(|r| ((r[3] + r[4]) / 1000) as u64);
        let outcome = if timed_out {
            Outcome::TimedOut {
                limit: TimeLimit::Wall,
            }
        } else if let Some(r) = exit {
            let st = r[1] as i32;
            if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0 {
                Outcome::Passed
            } else {
                let signal = libc::WIFSIGNALED(st).then(|| libc::WTERMSIG(st));
                let cpu_limit = self.cpu.as_millis() as u64;
                if signal == Some(libc::SIGXCPU)
                    || (signal == Some(libc::SIGKILL) && cpu_ms.unwrap_or(0) >= cpu_limit)
                {
                    Outcome::TimedOut {
                        limit: TimeLimit::Cpu,
                    }
                } else if memory_marker(&stderr) {
                    Outcome::MemoryExceeded
                } else {
                    Outcome::Failed {
                        exit_code: libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st)),
                        signal,
                    }
                }
            }
        } else {
            Outcome::Failed {
                exit_code: None,
                signal: Some(libc::SIGKILL),
            }
        };
        Ok(RunOutput {
            outcome,
            stdout,
            stderr,
            truncated: watch.truncated,
            wall_ms,
            cpu_ms,
            max_rss_kib: exit.map(|r| r[5] as u64),
        })
    }
}

fn memory_marker(stderr: &str) -> bool {
    ["MemoryError", "memory allocation of ", "std::bad_alloc"]
        .iter()
        .any(|m| stderr.contains(m))
}

/// SIGKILL to the sample (PID 1 of its namespace: the kernel then kills the namespace) and
/// to its process group.
fn kill_sample(_mid: i32, sample: Option<i32>) {
    if let Some(pid) = sample {
        // SAFETY: signalling the process (group) we created; a stale pid cannot have been
        // reused while its parent (our middle process) has not reaped it... or has, in which
        // case the signals fail with ESRCH or hit its already-empty group.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

enum Failure {
    Setup(Stage, i32),
    Io(&'static str, std::io::Error),
}

fn nul_err() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL byte")
}

fn pipe() -> std::result::Result<(OwnedFd, OwnedFd), Failure> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::Io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads the three pipes of a run.
struct Watch {
    fds: [OwnedFd; 3],
    open: [bool; 3],
    out: Vec<u8>,
    err: Vec<u8>,
    status: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Watch {
    fn poll(&mut self, timeout: Duration) {
        let mut pfds: Vec<libc::pollfd> = (0..3)
            .map(|i| libc::pollfd {
                fd: if self.open[i] {
                    self.fds[i].as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` holds three valid pollfd structs.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 3, timeout.as_millis() as i32) };
        if n <= 0 {
            return;
        }
        let mut buf = [0u8; 16384];
        for (i, pfd) in pfds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            // SAFETY: reading into a local buffer from our own descriptor.
            let r =
                unsafe { libc::read(self.fds[i].as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if r == 0
                || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
            {
                self.open[i] = false;
                continue;
            }
            if r < 0 {
                continue;
            }
            let data = &buf[..r as usize];
            let limit = self.limit;
            let target = match i {
                0 => &mut self.out,
                1 => &mut self.err,
                _ => {
                    self.status.extend_from_slice(data);
                    continue;
                }
            };
            let room = limit.saturating_sub(target.len());
            if data.len() > room {
                self.truncated = true;
            }
            target.extend_from_slice(&data[..data.len().min(room)]);
        }
    }

    fn records(&self) -> Vec<Record> {
        self.status
            .chunks_exact(RECORD_BYTES)
            .map(|c| {
                let mut r = [0i64; 6];
                for (i, v) in r.iter_mut().enumerate() {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&c[i * 8..i * 8 + 8]);
                    *v = i64::from_le_bytes(b);
                }
                r
            })
            .collect()
    }

    fn sample_pid(&self) -> Option<i32> {
        self.records()
            .iter()
            .find(|r| r[0] == KIND_PID)
            .map(|r| r[1] as i32)
    }
}
