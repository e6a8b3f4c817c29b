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
    assert!(text.contains("not built yet"));
    assert!(text.contains("matmul f32"));
}

#[test]
fn only_built_stages_claim_to_be_built() {
    let built: Vec<_> = stages()
        .into_iter()
        .filter(|s| s.status == StageStatus::Built)
        .map(|s| s.name)
        .collect();
    assert_eq!(built, ["mlx"]);
    let library: Vec<_> = stages()
        .into_iter()
        .filter(|s| s.status == StageStatus::Library)
        .map(|s| s.name)
        .collect();
    assert_eq!(library, ["mine", "load", "train", "judge", "export"]);
}
