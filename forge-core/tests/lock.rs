//! The pipeline lock: two takers never hold it at once (same process, or another
//! process holding the same file lock), it is released on drop, a file left by a
//! dead holder is taken over as stale, and `Forge::run` refuses to start while it is
//! held.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forge_core::lock::PipelineLock;
use forge_core::{Error, Forge};

#[test]
fn second_taker_is_refused_until_the_first_releases() {
    let dir = common::temp("lock-inproc");
    let path = dir.join("pipeline.lock");
    let a = PipelineLock::acquire(&path).expect("first");
    match PipelineLock::acquire(&path) {
        Err(Error::Locked { pid, since, .. }) => {
            assert_eq!(pid, std::process::id());
            assert!(since.ends_with('Z'), "{since}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(a);
    let b = PipelineLock::acquire(&path).expect("free again");
    assert_eq!(b.stale_pid, None);
}

#[test]
fn a_lock_held_by_another_process_is_respected_and_freed_when_it_dies() {
    let dir = common::temp("lock-process");
    let path = dir.join("pipeline.lock");
    // flock(1) takes the same kind of lock (flock(2)) as PipelineLock; with -o only
    // flock itself holds it (not its `cat`, which ends when its stdin closes).
    let Ok(mut child) = Command::new("flock")
        .arg("-o")
        .arg(&path)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
    else {
        eprintln!("skipped: flock(1) is not installed");
        return;
    };
    let t0 = Instant::now();
    let mut refused = false;
    while t0.elapsed() < Duration::from_secs(10) {
        match PipelineLock::acquire(&path) {
            Err(Error::Locked { .. }) => {
                refused = true;
                break;
            }
            Ok(l) => drop(l),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(refused, "the other process's lock was never seen");
    // Killed like a crashed pipeline: no cleanup, the kernel drops its lock.
    child.kill().expect("kill");
    child.wait().expect("wait");
    drop(child.stdin.take());
    // The kernel dropped the dead holder's lock.
    PipelineLock::acquire(&path).expect("free after the holder died");
}

#[test]
fn a_stale_lock_file_is_taken_over() {
    let dir = common::temp("lock-stale");
    let path = dir.join("pipeline.lock");
    // What a killed holder leaves: its pid, no lock (a pid that cannot be running).
    std::fs::write(&path, "pid=4294967\nsince=2026-01-01T00:00:00Z\n").expect("write");
    let l = PipelineLock::acquire(&path).expect("stale lock taken over");
    assert_eq!(l.stale_pid, Some(4_294_967));
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(
        text.contains(&format!("pid={}", std::process::id())),
        "{text}"
    );
    drop(l);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
}

#[test]
fn forge_run_refuses_while_another_pipeline_holds_the_lock() {
    let root = common::temp("lock-run");
    let repo = root.join("repo");
    common::write_repo(&repo, 4);
    let project = root.join("project");
    std::fs::create_dir_all(&project).expect("project");
    let model = root.join("no-model-needed");
    std::fs::create_dir_all(&model).expect("model dir");
    std::fs::write(
        project.join("forge.toml"),
        common::forge_toml(&repo, &model, 1, true, ""),
    )
    .expect("toml");
    let forge = Forge::open(&project).expect("open");
    let _held = PipelineLock::acquire(forge.config().lock_path()).expect("lock");
    let err = forge
        .run(forge_core::pipeline::RunOptions::new())
        .expect_err("locked");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(forge.status().expect("status").running.is_some());
    assert!(
        forge.status().expect("status").runs.is_empty(),
        "no run may start"
    );
}
