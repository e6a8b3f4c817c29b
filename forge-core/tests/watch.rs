//! `forge watch` over a scripted git history: commits below the threshold wait,
//! changes accumulate until they reach it, a new matching tag triggers a run, a
//! failing gate never deploys, and a held pipeline lock makes a poll back off
//! without losing the change.
//!
//! MLX is not thread-safe: run with `--test-threads=1`.

mod common;

use common::{forge_toml, git, git_repo, module_source, temp, tiny_model};
use forge_core::Forge;
use forge_core::lock::PipelineLock;
use forge_core::pipeline::{RunOptions, RunStatus};
use forge_core::watch::{PollOutcome, Watcher};

fn watcher(project: &std::path::Path) -> Watcher {
    Watcher::new(Forge::open(project).expect("open"), RunOptions::new())
}

fn commit_change(repo: &std::path::Path, module: usize, variant: usize, message: &str) -> String {
    std::fs::write(
        repo.join(format!("mod_{module}.py")),
        module_source(module, variant),
    )
    .expect("edit");
    git(repo, &["commit", "-q", "-am", message]);
    git(repo, &["rev-parse", "HEAD"])
}

#[test]
fn watch_follows_the_history_and_the_gate() {
    let root = temp("watch");
    let repo = root.join("repo");
    git_repo(&repo, 6);
    let model = tiny_model(&root);
    let project = root.join("project");
    std::fs::create_dir_all(&project).expect("project");
    let toml = project.join("forge.toml");
    std::fs::write(&toml, forge_toml(&repo, &model, 2, true, "")).expect("toml");

    // First poll: the baseline is HEAD, nothing runs.
    let c1 = git(&repo, &["rev-parse", "HEAD"]);
    match watcher(&project).poll_once().expect("poll") {
        PollOutcome::Started { commit } => assert_eq!(commit, c1),
        other => panic!("expected Started, got {other:?}"),
    }
    assert!(matches!(
        watcher(&project).poll_once().expect("poll"),
        PollOutcome::Unchanged { .. }
    ));

    // One changed file (threshold 2): below, no run.
    let c2 = commit_change(&repo, 1, 1, "one file");
    match watcher(&project).poll_once().expect("poll") {
        PollOutcome::Below {
            commit,
            changed,
            threshold,
        } => {
            assert_eq!((commit.as_str(), changed, threshold), (c2.as_str(), 1, 2));
        }
        other => panic!("expected Below, got {other:?}"),
    }
    // A file outside `repo.include` does not count.
    std::fs::write(repo.join("notes.txt"), "not mined").expect("notes");
    git(&repo, &["add", "notes.txt"]);
    git(&repo, &["commit", "-q", "-m", "notes"]);
    assert!(matches!(
        watcher(&project).poll_once().expect("poll"),
        PollOutcome::Below { changed: 1, .. }
    ));
    let forge = Forge::open(&project).expect("open");
    assert!(
        forge.status().expect("status").runs.is_empty(),
        "nothing may run below the threshold"
    );

    // A second changed file: the changes since the baseline reach 2 → a run, deployed.
    // While another pipeline holds the lock, the poll backs off and keeps the baseline.
    let c3 = commit_change(&repo, 2, 1, "second file");
    {
        let _held = PipelineLock::acquire(forge.config().lock_path()).expect("lock");
        assert!(matches!(
            watcher(&project).poll_once().expect("poll"),
            PollOutcome::Busy { pid } if pid == std::process::id()
        ));
    }
    let first = match watcher(&project).poll_once().expect("poll") {
        PollOutcome::Ran { trigger, report } => {
            assert!(trigger.contains("2 files changed"), "{trigger}");
            assert_eq!(report.status, RunStatus::Deployed, "{report}");
            report
        }
        other => panic!("expected Ran, got {other:?}"),
    };
    let reg = forge.registry().expect("registry");
    assert_eq!(reg.active().expect("active").map(|m| m.id), first.model_id);
    assert_eq!(
        reg.active().expect("active").and_then(|m| m.git_commit),
        Some(c3.clone())
    );
    assert!(matches!(
        watcher(&project).poll_once().expect("poll"),
        PollOutcome::Unchanged { .. }
    ));

    // A failing gate and a tag: the tag triggers a run (one file changed, below the
    // threshold); the gate refuses the model; the active model stays.
    std::fs::write(&toml, forge_toml(&repo, &model, 2, false, "")).expect("toml");
    commit_change(&repo, 3, 1, "third file");
    git(&repo, &["tag", "v1.0"]);
    git(&repo, &["tag", "other-tag"]);
    match watcher(&project).poll_once().expect("poll") {
        PollOutcome::Ran { trigger, report } => {
            assert!(
                trigger.contains("new tag v1.0") && !trigger.contains("other-tag"),
                "{trigger}"
            );
            assert_eq!(report.status, RunStatus::Rejected, "{report}");
            assert_eq!(report.gate_passed, Some(false));
        }
        other => panic!("expected Ran, got {other:?}"),
    }
    let reg = forge.registry().expect("registry");
    assert_eq!(reg.active().expect("active").map(|m| m.id), first.model_id);
    let log = reg.deployments().expect("log");
    assert_eq!(log[0].action, "rejected");
    assert_eq!(log.iter().filter(|d| d.action == "deploy").count(), 1);
    // The tag was seen: polling again does not re-run.
    assert!(matches!(
        watcher(&project).poll_once().expect("poll"),
        PollOutcome::Unchanged { .. }
    ));
    assert_eq!(forge.status().expect("status").runs.len(), 2);
}
