//! Each limit of the sandbox on its own, with `/bin/sh` (no interpreter or compiler needed),
//! and the problem/sample file readers on malformed input.

mod exec_support;

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use forge_judge::{Error, Outcome, Sandbox, TimeLimit, load_problems, load_samples};

fn sh(sb: &Sandbox, script: &str) -> forge_judge::RunOutput {
    let dir = sb.workdir().expect("workdir");
    let path = dir.path().to_owned();
    let r = sb
        .run(
            &path,
            Path::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new(script)],
        )
        .expect("sandbox setup");
    drop(dir);
    assert!(!path.exists(), "sandbox directory left: {}", path.display());
    r
}

#[test]
fn exit_codes_and_signals_are_reported() {
    let sb = Sandbox::new();
    assert_eq!(sh(&sb, "exit 0").outcome, Outcome::Passed);
    assert_eq!(
        sh(&sb, "exit 7").outcome,
        Outcome::Failed {
            exit_code: Some(7),
            signal: None
        }
    );
    assert_eq!(
        sh(&sb, "kill -SEGV $$").outcome,
        Outcome::Failed {
            exit_code: None,
            signal: Some(libc::SIGSEGV)
        }
    );
}

#[test]
fn cpu_limit_ends_a_busy_loop_before_the_wall_clock() {
    let sb = Sandbox::new()
        .with_wall_time(Duration::from_secs(30))
        .with_cpu_time(Duration::from_secs(1));
    let r = sh(&sb, "while :; do :; done");
    assert_eq!(
        r.outcome,
        Outcome::TimedOut {
            limit: TimeLimit::Cpu
        },
        "{r:?}"
    );
    assert!(r.wall_ms < 30_000);
    // RLIMIT_CPU is enforced on scheduler ticks; rusage rounds differently.
    assert!(r.cpu_ms.expect("rusage") >= 500, "{r:?}");
}

#[test]
fn wall_clock_ends_a_sleeper_and_its_children() {
    let sb = Sandbox::new().with_wall_time(Duration::from_millis(500));
    // An unusual duration: the leftover check below looks at every process on the machine.
    let r = sh(&sb, "sleep 30.173 & sleep 30.173 & sleep 30.173");
    assert_eq!(
        r.outcome,
        Outcome::TimedOut {
            limit: TimeLimit::Wall
        }
    );
    assert!(r.wall_ms < 5000, "{r:?}");
    assert!(exec_support::processes_mentioning("sleep 30.173").is_empty());
}

#[test]
fn output_is_bounded() {
    let sb = Sandbox::new().with_output_limit(1000);
    let r = sh(
        &sb,
        "i=0; while [ $i -lt 2000 ]; do echo 0123456789; i=$((i+1)); done; echo err >&2",
    );
    assert_eq!(r.outcome, Outcome::Passed);
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.truncated);
    assert_eq!(r.stderr, "err\n");
}

#[test]
fn file_size_and_open_files_are_limited() {
    let sb = Sandbox::new().with_file_size(1 << 20).with_open_files(16);
    // 2 MiB into a 1 MiB limit: the write fails (SIGXFSZ or EFBIG), the file stays at 1 MiB.
    let r = sh(
        &sb,
        "head -c 2097152 /dev/zero > big; s=$(wc -c < big); echo $s; [ $s -le 1048576 ] && exit 9",
    );
    assert_eq!(
        r.outcome,
        Outcome::Failed {
            exit_code: Some(9),
            signal: None
        },
        "{r:?}"
    );
    let r = sh(&sb, "exec 20>x && echo opened");
    assert!(!r.outcome.passed() && !r.stdout.contains("opened"), "{r:?}");
}

#[test]
fn environment_is_scrubbed() {
    // SAFETY: set before any sandbox of this binary reads its environment.
    unsafe { std::env::set_var("FORGE_JUDGE_LIMITS_SECRET", "s3cret") };
    let sb = Sandbox::new().with_env("EXTRA", "yes");
    let dir = sb.workdir().expect("workdir");
    let r = sb
        .run(dir.path(), Path::new("/usr/bin/env"), &[])
        .expect("run env");
    let mut names: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["EXTRA", "HOME", "LANG", "PATH", "TMPDIR"],
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&format!("HOME={}", dir.path().display())));
    assert!(!r.stdout.contains("s3cret"));
}

#[test]
fn a_missing_program_is_a_sandbox_error() {
    let sb = Sandbox::new();
    let dir = sb.workdir().expect("workdir");
    let err = sb
        .run(dir.path(), Path::new("/nonexistent/program"), &[])
        .expect_err("no such program");
    assert!(matches!(err, Error::Sandbox(_)), "{err}");
    assert!(err.to_string().contains("execve"), "{err}");
}

#[test]
fn malformed_problem_and_sample_lines_name_file_and_line() {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path().join("problems.jsonl");
    let mut f = std::fs::File::create(&p).expect("create");
    writeln!(
        f,
        r#"{{"task_id": "t/0", "prompt": "", "test": "", "entry_point": "f"}}"#
    )
    .expect("write");
    writeln!(f, r#"{{"task_id": "t/1", "prompt": ""}}"#).expect("write");
    drop(f);
    let err = load_problems(&p).expect_err("missing fields");
    let msg = err.to_string();
    assert!(msg.contains("problems.jsonl:2:"), "{msg}");

    let dup = dir.path().join("dup.jsonl");
    let line = r#"{"task_id": "t/0", "prompt": "", "test": "", "entry_point": "f"}"#;
    std::fs::write(&dup, format!("{line}\n\n{line}\n")).expect("write");
    let msg = load_problems(&dup).expect_err("duplicate").to_string();
    assert!(
        msg.contains("dup.jsonl:3:") && msg.contains("duplicate"),
        "{msg}"
    );

    let s = dir.path().join("samples.jsonl");
    std::fs::write(
        &s,
        "{\"task_id\": \"t/0\", \"completion\": \"x\"}\nnot json\n",
    )
    .expect("write");
    let msg = load_samples(&s).expect_err("bad json").to_string();
    assert!(msg.contains("samples.jsonl:2:"), "{msg}");

    // gzip is recognised by its magic bytes, whatever the name.
    let gz = dir.path().join("problems.data");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).expect("create"),
        flate2::Compression::default(),
    );
    writeln!(enc, "{line}").expect("write");
    enc.finish().expect("finish");
    let probs = load_problems(&gz).expect("gzip problems");
    assert_eq!(probs.len(), 1);
    assert_eq!(probs[0].entry_point, "f");
}

/// As a non-root user (no writable pids cgroup) the process limit is `RLIMIT_NPROC`, counted
/// per user namespace. Body of [`non_root_process_limit_is_rlimit_nproc`].
fn non_root_process_limit() {
    let iso = forge_judge::isolation();
    eprintln!("non-root isolation: {iso}");
    assert_eq!(iso.process_limit, forge_judge::ProcessLimit::Rlimit);
    let sb = Sandbox::new()
        .with_processes(16)
        .with_wall_time(Duration::from_secs(10));
    // A subshell starts 50 background sleepers (it dies at the first failed fork, they stay);
    // then the shell counts its namespace's processes with builtins only (no fork left).
    let r = sh(
        &sb,
        "(for i in $(seq 50); do sleep 3.317 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#",
    );
    let n: usize = r.stdout.trim().parse().unwrap_or(usize::MAX);
    eprintln!("{r:?}");
    if matches!(
        iso.processes,
        forge_judge::ProcessIsolation::PidNamespace { private_proc: true }
    ) {
        assert!(n <= 16, "process limit not enforced: {n} processes");
    }
    assert!(exec_support::processes_mentioning("sleep 3.317").is_empty());
}

#[test]
fn non_root_process_limit_is_rlimit_nproc() {
    if std::env::var_os("FORGE_JUDGE_NONROOT_CHILD").is_some() {
        return non_root_process_limit();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return non_root_process_limit();
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    if !Path::new("/usr/bin/setpriv").exists() {
        println!("skipped: root without setpriv to drop to nobody");
        return;
    }
    // nobody must be able to reach the test binary (not so under a 0700 /root).
    use std::os::unix::fs::PermissionsExt;
    let reachable = exe
        .ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if !reachable {
        println!("skipped: {} is not reachable by nobody", exe.display());
        return;
    }
    // Re-run this test as nobody (65534).
    let out = std::process::Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe)
        .args([
            "--exact",
            "non_root_process_limit_is_rlimit_nproc",
            "--nocapture",
        ])
        .env("FORGE_JUDGE_NONROOT_CHILD", "1")
        .output()
        .expect("run the test as nobody");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "as nobody:\n{text}");
    assert!(text.contains("1 passed"), "{text}");
}
