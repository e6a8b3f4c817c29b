//! Incremental mining since a git revision (needs the `git` CLI to build the fixture).
#![cfg(feature = "git")]

use std::path::Path;
use std::process::Command;

use forge_miner::{Miner, NoProgress, SkipReason};

fn git(dir: &Path, args: &[&str]) -> bool {
    Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn mines_only_files_changed_since_rev() {
    let dir = std::env::temp_dir().join(format!("forge-miner-git-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    if !git(&dir, &["init", "-q"]) {
        eprintln!("skipped: git CLI not available");
        return;
    }
    std::fs::write(dir.join("src/a.rs"), "fn a() {}\n").expect("write");
    std::fs::write(dir.join("src/b.rs"), "fn b() {}\n").expect("write");
    assert!(git(&dir, &["add", "."]));
    assert!(git(&dir, &["commit", "-q", "-m", "one"]));
    std::fs::write(dir.join("src/b.rs"), "fn b() { let _ = 1; }\n").expect("write");
    std::fs::write(dir.join("src/c.rs"), "fn c() {}\n").expect("write");
    assert!(git(&dir, &["add", "src/b.rs"]));
    assert!(git(&dir, &["commit", "-q", "-m", "two"]));
    std::fs::write(dir.join("src/d.py"), "def d():\n    pass\n").expect("write");

    let mined = Miner::new(&dir)
        .with_since("HEAD~1")
        .mine(&NoProgress)
        .expect("mine");
    let paths: Vec<&str> = mined.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["src/b.rs", "src/c.rs", "src/d.py"]);
    assert_eq!(mined.skip_summary()[&SkipReason::Unchanged], 1);

    let mined = Miner::new(&dir)
        .with_since("HEAD")
        .mine(&NoProgress)
        .expect("mine");
    let paths: Vec<&str> = mined.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["src/c.rs", "src/d.py"]);

    // A subdirectory of the work tree as the root.
    let mined = Miner::new(dir.join("src"))
        .with_since("HEAD~1")
        .mine(&NoProgress)
        .expect("mine");
    assert_eq!(mined.files.len(), 3);

    let err = Miner::new(&dir)
        .with_since("no-such-rev")
        .mine(&NoProgress)
        .expect_err("bad rev");
    assert!(err.to_string().contains("no-such-rev"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
