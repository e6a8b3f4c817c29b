//! End to end: the whole pipeline on a seeded tiny random model and a tiny
//! repository — artifacts, manifests, stage reuse, the gate, the registry and
//! rollback.
//!
//! MLX is not thread-safe: run with `--test-threads=1`.

mod common;

use std::path::Path;

use common::{forge_toml, temp, tiny_model, write_repo};
use forge_core::Forge;
use forge_core::gguf::GgufFile;
use forge_core::pipeline::{RunOptions, RunStatus, STAGES, StageOutcome, StageStatus, read_stage};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write forge.toml");
}

#[test]
fn pipeline_runs_reuses_gates_and_rolls_back() {
    let root = temp("e2e");
    let repo = root.join("repo");
    write_repo(&repo, 6);
    let model = tiny_model(&root);
    let project = root.join("project");
    std::fs::create_dir_all(&project).expect("project");
    let toml = project.join("forge.toml");
    write(&toml, &forge_toml(&repo, &model, 3, true, ""));

    // 1. A first run: every stage runs, the model is deployed.
    let forge = Forge::open(&project).expect("open");
    let r1 = forge.run(RunOptions::new()).expect("first run");
    assert_eq!(r1.status, RunStatus::Deployed, "{r1}");
    assert_eq!(r1.stages.len(), STAGES.len());
    assert!(r1.stages.iter().all(|(_, o)| *o == StageOutcome::Ran));
    let runs = forge.config().runs_dir();
    for stage in STAGES {
        let m = read_stage(&runs, &r1.run_id, stage).expect("manifest");
        assert_eq!(m.status, StageStatus::Complete, "{stage}");
        assert_eq!(m.input_hash.len(), 64, "{stage}");
        for a in m.outputs.values() {
            let p = forge.config().state_dir.join(&a.path);
            assert_eq!(
                forge_core::sha256_path(&p).expect("hash"),
                a.sha256,
                "{}",
                a.path
            );
        }
    }
    let train = read_stage(&runs, &r1.run_id, "train").expect("train manifest");
    assert_eq!(train.metrics["steps"], 3.0);
    assert!(train.config["adapter"]["rank"] == 4);
    let judge = read_stage(&runs, &r1.run_id, "judge").expect("judge manifest");
    assert!(judge.metrics["perplexity"] > 1.0 && judge.metrics["base_perplexity"] > 1.0);
    assert!(
        judge.metrics.contains_key("codebleu"),
        "{:?}",
        judge.metrics
    );
    for p in [&r1.index]
        .into_iter()
        .chain(r1.report.as_ref())
        .chain(r1.dashboard.as_ref())
        .chain(&r1.loss_plots)
        .chain(&r1.eval_plots)
        .chain(r1.gguf.as_ref())
        .chain(r1.modelfile.as_ref())
    {
        assert!(p.is_file(), "{} missing", p.display());
    }
    assert_eq!(r1.loss_plots.len() + r1.eval_plots.len(), 4);
    let dashboard =
        std::fs::read_to_string(r1.dashboard.as_ref().expect("dashboard")).expect("read");
    assert!(!dashboard.contains("http-equiv") && dashboard.contains("finished"));
    let gguf = GgufFile::open(r1.gguf.as_ref().expect("gguf")).expect("gguf parses");
    assert_eq!(gguf.get::<&str>("general.architecture").ok(), Some("llama"));
    let modelfile =
        std::fs::read_to_string(r1.modelfile.as_ref().expect("modelfile")).expect("read");
    assert!(modelfile.contains("FROM ./model-f16.gguf"), "{modelfile}");
    let reg = forge.registry().expect("registry");
    let active = reg.active().expect("active").expect("a model is active");
    assert_eq!(Some(active.id), r1.model_id);
    assert_eq!(active.run_id, r1.run_id);

    // 2. Nothing changed: every stage is reused, the active model stays, no new row.
    let r2 = forge.run(RunOptions::new()).expect("second run");
    assert_eq!(r2.status, RunStatus::Unchanged, "{r2}");
    for (stage, outcome) in &r2.stages[..5] {
        assert_eq!(*outcome, StageOutcome::Reused(r1.run_id.clone()), "{stage}");
    }
    assert_eq!(reg.models().expect("models").len(), 1);

    // 3. A gate that fails: only the judge re-runs; the model is registered as rejected
    //    and the active model does not change.
    write(&toml, &forge_toml(&repo, &model, 3, false, ""));
    let forge = Forge::open(&project).expect("open");
    let r3 = forge.run(RunOptions::new()).expect("third run");
    assert_eq!(r3.status, RunStatus::Rejected, "{r3}");
    assert_eq!(r3.gate_passed, Some(false));
    assert!(!r3.gate_reasons.is_empty());
    let ran: Vec<&str> = r3
        .stages
        .iter()
        .filter(|(_, o)| *o == StageOutcome::Ran)
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(ran, ["judge", "deploy"]);
    let reg = forge.registry().expect("registry");
    assert_eq!(reg.active().expect("active").map(|m| m.id), r1.model_id);
    assert_eq!(reg.deployments().expect("log")[0].action, "rejected");

    // 4. A change to the sources and to training: mine onwards re-runs and a second
    //    model is deployed.
    std::fs::write(repo.join("mod_1.py"), common::module_source(1, 5)).expect("edit");
    write(&toml, &forge_toml(&repo, &model, 4, true, ""));
    let forge = Forge::open(&project).expect("open");
    let r4 = forge.run(RunOptions::new()).expect("fourth run");
    assert_eq!(r4.status, RunStatus::Deployed, "{r4}");
    assert!(r4.stages.iter().all(|(_, o)| *o == StageOutcome::Ran));
    let reg = forge.registry().expect("registry");
    assert_eq!(reg.active().expect("active").map(|m| m.id), r4.model_id);

    // 5. Rollback returns to the first model; a second rollback undoes it; a rejected
    //    model cannot be made active.
    let (m, _) = forge.rollback(None).expect("rollback");
    assert_eq!(Some(m.id), r1.model_id);
    assert_eq!(reg.active().expect("active").map(|m| m.id), r1.model_id);
    let (m, _) = forge.rollback(None).expect("rollback again");
    assert_eq!(Some(m.id), r4.model_id);
    let err = forge.rollback(r3.model_id).expect_err("rejected model");
    assert!(err.to_string().contains("did not pass"), "{err}");
    let status = forge.status().expect("status");
    assert_eq!(status.active.map(|m| m.id), r4.model_id);
    assert_eq!(status.runs.len(), 4);

    // 6. Rolled back, then run again with nothing changed: the rollback stands.
    forge.rollback(r1.model_id).expect("rollback to the first");
    let r5 = forge.run(RunOptions::new()).expect("fifth run");
    assert_eq!(r5.status, RunStatus::Unchanged, "{r5}");
    assert!(
        r5.deploy_note
            .as_deref()
            .is_some_and(|n| n.contains("rollback --to")),
        "{r5}"
    );
    assert_eq!(reg.active().expect("active").map(|m| m.id), r1.model_id);
    let json = serde_json::to_value(forge.status().expect("status")).expect("status json");
    assert_eq!(json["models"].as_array().map(Vec::len), Some(3));
}

#[test]
fn divergence_halts_the_run_and_resume_continues_it() {
    let root = temp("diverge");
    let repo = root.join("repo");
    write_repo(&repo, 6);
    let model = tiny_model(&root);
    let project = root.join("project");
    std::fs::create_dir_all(&project).expect("project");
    let toml = project.join("forge.toml");
    let good = forge_toml(&repo, &model, 4, true, "");
    // forge-peft's divergence guard set to trip at its first check: a loss above half its
    // running mean (the tiny model's loss cannot be blown up: its norms bound it).
    let bad = good.replace(
        "lr = 1e-3",
        "lr = 1e-3\nspike_warmup = 1\nspike_factor = 0.5",
    );
    assert_ne!(bad, good);
    write(&toml, &bad);
    let forge = Forge::open(&project).expect("open");
    let err = forge.run(RunOptions::new()).expect_err("diverges");
    assert!(
        matches!(
            err,
            forge_core::Error::Peft(forge_core::peft::Error::Diverged { .. })
        ),
        "{err}"
    );
    let runs = forge.config().runs_dir();
    let ids = forge_core::pipeline::run_ids(&runs);
    assert_eq!(ids.len(), 1);
    let run = forge_core::pipeline::read_run(&runs, &ids[0]).expect("run.json");
    assert_eq!(run.status, RunStatus::Diverged);
    let dashboard = std::fs::read_to_string(runs.join(&ids[0]).join("train/dashboard.html"))
        .expect("dashboard");
    assert!(dashboard.contains("diverged at step"), "{dashboard}");
    assert!(!dashboard.contains("http-equiv"));
    assert_eq!(
        read_stage(&runs, &ids[0], "train").expect("train").status,
        StageStatus::Failed
    );
    assert!(
        forge
            .registry()
            .expect("registry")
            .active()
            .expect("active")
            .is_none()
    );

    // Fixed and resumed: the same run folder, mine and dataset kept, training from scratch
    // (other inputs), then deployed.
    write(&toml, &good);
    let forge = Forge::open(&project).expect("open");
    let r = forge
        .run(RunOptions::new().with_resume(true))
        .expect("resumed run");
    assert_eq!(r.run_id, ids[0]);
    assert_eq!(r.status, RunStatus::Deployed, "{r}");
    assert_eq!(r.stages[0].1, StageOutcome::Reused(ids[0].clone()));
    assert_eq!(r.stages[2].1, StageOutcome::Ran);
    let train = read_stage(&runs, &ids[0], "train").expect("train");
    assert_eq!(
        (train.status, train.metrics["steps"]),
        (StageStatus::Complete, 4.0)
    );
    assert_eq!(forge_core::pipeline::run_ids(&runs).len(), 1);
}
