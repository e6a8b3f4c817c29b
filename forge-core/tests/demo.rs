//! The demo runs the MLX smoke checks and reports every pipeline stage.

use forge_core::demo::{Demo, StageStatus, stages};

#[test]
fn demo_runs_and_lists_every_stage() {
    let report = Demo::new().with_seed(3).run().unwrap();
    assert!(report.smoke.passed());
    let names: Vec<_> = report.stages.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["mlx", "mine", "load", "train", "judge", "export", "deploy"]
    );
    let text = report.to_string();
    assert!(!text.contains("not built yet") && !text.contains("library only"));
    assert!(text.contains("matmul f32"));
}

#[test]
fn every_stage_is_built() {
    let built: Vec<_> = stages()
        .into_iter()
        .filter(|s| s.status == StageStatus::Built)
        .map(|s| s.name)
        .collect();
    // Every stage runs in `forge run` (the pipeline), which `cargo xtask demo` runs.
    assert_eq!(
        built,
        ["mlx", "mine", "load", "train", "judge", "export", "deploy"]
    );
}
