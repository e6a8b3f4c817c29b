//! Registry migrations: a version-1 database with data migrates to the latest
//! schema keeping its rows, re-opening is a no-op, a newer schema is refused, and
//! the deployment log decides the active model (rejections never change it).

use forge_core::registry::{MIGRATIONS, NewModel, Registry};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("forge-core-registry")
        .join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp");
    dir.join("registry.sqlite")
}

fn model(run: &str, passed: bool, gguf: &std::path::Path) -> NewModel {
    NewModel {
        run_id: run.into(),
        git_commit: Some("abc".into()),
        dataset_hash: "d".into(),
        base_model: "tiny".into(),
        gguf_path: gguf.to_path_buf(),
        gguf_sha256: format!("sha-{run}"),
        modelfile: None,
        report_path: None,
        gate_passed: passed,
        metrics: serde_json::json!({"perplexity": 2.5}),
    }
}

#[test]
fn version_1_database_migrates_with_its_rows() {
    let path = temp("v1");
    {
        let r = Registry::open_at_version(&path, 1).expect("v1");
        assert_eq!(r.version().expect("version"), 1);
        // The v1 schema has no modelfile column: insert as a v1 Forge did.
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute_batch(
            "INSERT INTO models (run_id, created_at, git_commit, dataset_hash, base_model, gguf_path, \
             gguf_sha256, report_path, gate_passed, metrics) VALUES ('r1', 't', 'c1', 'd', 'b', '/m.gguf', \
             's', NULL, 1, '{}');
             INSERT INTO deployments (model_id, at, action, target) VALUES (1, 't', 'deploy', 'registry');",
        )
        .expect("v1 rows");
        assert!(conn.execute_batch("SELECT modelfile FROM models").is_err());
    }
    let r = Registry::open(&path).expect("migrate");
    assert_eq!(r.version().expect("version"), MIGRATIONS.len());
    let active = r.active().expect("active").expect("kept");
    assert_eq!(
        (active.run_id.as_str(), active.modelfile.clone()),
        ("r1", None)
    );
    r.watch_set("baseline", "c1").expect("v2 table");
    r.record_run("r2", "running", "manual", None, false)
        .expect("v2 table");
    drop(r);
    let r = Registry::open(&path).expect("reopen");
    assert_eq!(r.version().expect("version"), MIGRATIONS.len());
    assert_eq!(r.watch_get("baseline").expect("get").as_deref(), Some("c1"));
    assert_eq!(r.models().expect("models").len(), 1);
}

#[test]
fn newer_schema_is_refused() {
    let path = temp("newer");
    drop(Registry::open(&path).expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let err = Registry::open(&path).expect_err("newer schema");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn the_log_decides_the_active_model() {
    let path = temp("log");
    let gguf = path.with_file_name("m.gguf");
    std::fs::write(&gguf, b"GGUF").expect("gguf");
    let r = Registry::open(&path).expect("open");
    assert!(r.active().expect("active").is_none());
    let a = r.register(&model("a", true, &gguf)).expect("a");
    r.deploy(a, "registry", "").expect("deploy a");
    let bad = r.register(&model("bad", false, &gguf)).expect("bad");
    assert!(
        r.deploy(bad, "registry", "").is_err(),
        "a refused model cannot deploy"
    );
    r.reject(bad, "perplexity too high").expect("reject");
    assert_eq!(r.active().expect("active").map(|m| m.id), Some(a));
    assert!(
        r.rollback(None, "registry").is_err(),
        "only one model ever deployed"
    );
    let b = r.register(&model("b", true, &gguf)).expect("b");
    r.deploy(b, "registry", "").expect("deploy b");
    assert_eq!(r.rollback(None, "registry").expect("rollback").id, a);
    assert_eq!(r.rollback(None, "registry").expect("undo").id, b);
    assert_eq!(r.rollback(Some(a), "registry").expect("to a").id, a);
    assert!(r.rollback(Some(bad), "registry").is_err());
    assert!(r.rollback(Some(999), "registry").is_err());
    let actions: Vec<String> = r
        .deployments()
        .expect("log")
        .into_iter()
        .map(|d| d.action)
        .collect();
    assert_eq!(
        actions,
        [
            "rollback", "rollback", "rollback", "deploy", "rejected", "deploy"
        ]
    );
}
