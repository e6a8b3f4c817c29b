//! The validation report: JSON and Markdown snapshots (insta) that also assert invariants,
//! the HTML page's self-containment, and atomic writing.

use forge_judge::{EvalResults, Gate, Report, Rule, TaskScore};

fn task(id: &str, codebleu: f64, exact: f64) -> TaskScore {
    TaskScore {
        id: id.to_string(),
        scores: [
            ("codebleu".to_string(), codebleu),
            ("exact_match".to_string(), exact),
        ]
        .into_iter()
        .collect(),
    }
}

fn fixture() -> (EvalResults, EvalResults, Gate) {
    let candidate = EvalResults::new("SmolLM2-135M + lora r8 (run 12)")
        .with_metric("codebleu", 0.412)
        .with_metric("exact_match", 0.25)
        .with_metric("perplexity", 3.91)
        .with_metric("pass@1", 0.18)
        .with_task(task("src/a.rs a::parse", 0.61, 1.0))
        .with_task(task("src/b.py b.load", 0.22, 0.0))
        .with_task(task("src/c.rs c::<T>|x", 0.40, 0.0));
    let baseline = EvalResults::new("SmolLM2-135M base")
        .with_metric("codebleu", 0.398)
        .with_metric("exact_match", 0.25)
        .with_metric("perplexity", 3.72)
        .with_task(task("src/a.rs a::parse", 0.55, 0.0))
        .with_task(task("src/b.py b.load", 0.30, 0.0))
        .with_task(task("src/d.py d.gone", 0.10, 0.0));
    let gate = Gate::new(vec![
        Rule::new("codebleu")
            .with_min(0.3)
            .with_max_regression(0.01),
        Rule::new("perplexity").with_max_regression(0.0),
        Rule::new("pass@1").with_min(0.1),
    ])
    .expect("gate");
    (candidate, baseline, gate)
}

#[test]
fn report_snapshots_and_invariants() {
    let (c, b, gate) = fixture();
    let r = Report::new(&c, &b, &gate);

    // Invariants: every metric of either side has a row, deltas are candidate − baseline, the
    // verdict fails exactly on the perplexity rule, every failed check has a reason.
    assert_eq!(r.metrics.len(), 4);
    for m in &r.metrics {
        if let (Some(x), Some(y), Some(d)) = (m.candidate, m.baseline, m.delta) {
            assert!((x - y - d).abs() < 1e-15);
        }
    }
    assert!(!r.verdict.passed);
    let failed: Vec<_> = r.verdict.checks.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].metric, "perplexity");
    assert!(
        r.verdict
            .checks
            .iter()
            .all(|c| c.passed == c.reason.is_none())
    );
    // Tasks: candidate order, then the baseline-only task.
    let ids: Vec<&str> = r.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "src/a.rs a::parse",
            "src/b.py b.load",
            "src/c.rs c::<T>|x",
            "src/d.py d.gone"
        ]
    );
    assert_eq!(r.task_metric.as_deref(), Some("codebleu"));

    let json = r.to_json().expect("json");
    let back: Report = serde_json::from_str(&json).expect("round trip");
    assert_eq!(back, r);
    insta::assert_snapshot!("report_json", json);

    let md = r.to_markdown();
    assert!(md.starts_with("# Validation report: FAIL"));
    assert!(md.contains("c::<T>\\|x"), "pipes escaped in table cells");
    insta::assert_snapshot!("report_markdown", md);
}

#[test]
fn html_is_self_contained_and_escaped() {
    let (c, b, gate) = fixture();
    let html = Report::new(&c, &b, &gate).to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"));
    // One bar per present value: 3 candidate + 3 baseline.
    assert_eq!(html.matches("<rect").count(), 6);
    for external in ["<script", "<link", "src=\"http", "href=\"http", "url("] {
        assert!(!html.contains(external), "external asset: {external}");
    }
    assert!(html.contains("c::&lt;T&gt;|x"));
    assert!(!html.contains("c::<T>"));
}

#[test]
fn passing_gate_and_atomic_write() {
    let (mut c, b, _) = fixture();
    c.metrics.insert("perplexity".into(), 3.70);
    let r = Report::new(&c, &b, &Gate::default_rules());
    assert!(r.verdict.passed, "{:?}", r.verdict);
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("nested/report");
    let paths = r.write(&out).expect("write");
    for p in &paths {
        assert!(p.exists(), "{}", p.display());
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "no temporary file left: {names:?}");
    let json = std::fs::read_to_string(&paths[0]).expect("read");
    let back: Report = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, r);

    // Results files round-trip and bad ones name the file and line.
    let rf = dir.path().join("cand.json");
    c.write(&rf).expect("write results");
    assert_eq!(EvalResults::from_file(&rf).expect("read results"), c);
    std::fs::write(&rf, "{\n \"label\": 3\n}").expect("write");
    let e = EvalResults::from_file(&rf).unwrap_err().to_string();
    assert!(e.contains("cand.json:2"), "{e}");
}
