//! MoELoRA and DLP-LoRA on the tiny model: router gradients against finite
//! differences, reductions to plain LoRA (one expert; a one-hot plugin),
//! save → load round trips, seeded determinism, cached decoding.
//! MLX is not thread-safe: run with `-- --test-threads=1`.

mod common;

use std::collections::BTreeMap;

use common::*;
use forge_model::{CausalLm, Model};
use forge_peft::{
    Batch, DlpLora, LoraLibrary, Method, MoeLoraConfig, MoeLoraModel, PeftConfig, PeftModel,
    Plugin, PluginConfig, PluginTrainOptions, Schedule, TrainOptions, Trainable, Trainer,
    loss_and_grad_aux, masked_nll_sum, top_p_select,
};
use mlx_rs::Array;

/// Seeded values in ±scale.
fn noise(shape: &[i32], seed: u64, scale: f32) -> Array {
    let n: i32 = shape.iter().product();
    let mut s = seed | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            scale * (((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32)
        })
        .collect();
    Array::from_slice(&v, shape)
}

/// Non-zero B for every expert so outputs and gradients are not trivial.
fn perturb_moe(m: &mut MoeLoraModel, seed: u64) {
    let new: Vec<(String, Array)> = m
        .trainable_parameters()
        .iter()
        .filter(|(k, _)| k.ends_with("lora_B"))
        .enumerate()
        .map(|(i, (k, v))| (k.clone(), noise(v.shape(), seed + i as u64, 0.05)))
        .collect();
    m.set_trainable(new.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
}

fn scalar(a: &Array) -> f64 {
    host(a)[0]
}

/// `nll + n·aux` at `params`, evaluated without the gradient transform.
fn total_loss(m: &mut MoeLoraModel, params: &BTreeMap<String, Array>, b: &Batch) -> f64 {
    m.set_trainable(params.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
    let logits = m.forward(&b.inputs).expect("forward");
    let nll = scalar(&masked_nll_sum(&logits, &b.targets, &b.mask).expect("nll"));
    let (aux, ..) = m.aux_loss(&b.inputs).expect("aux");
    nll + scalar(&aux) * scalar(&b.mask.sum(None).expect("n"))
}

fn fd_check(name: &str, cfg: MoeLoraConfig, only_router: bool) -> f64 {
    let mut m = MoeLoraModel::new(tiny(4), cfg).expect("moe");
    perturb_moe(&mut m, 11);
    // Routing decisions (the arg-top-k behind f_e and the top-k gate) are
    // piecewise constant: spread the router logits (weights ±1, logits of
    // a few units) over few tokens, so that no decision flips within ±eps.
    let routers: Vec<(String, Array)> = m
        .trainable_parameters()
        .iter()
        .filter(|(k, _)| k.ends_with("router.weight"))
        .enumerate()
        .map(|(i, (k, v))| (k.clone(), noise(v.shape(), 500 + i as u64, 1.0)))
        .collect();
    m.set_trainable(routers.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
    let b = batch(1, 5, 272, 17);
    let lg = loss_and_grad_aux(&mut m, &b, false).expect("grad");
    assert!(lg.aux.is_some(), "MoELoRA reports an auxiliary loss");
    let p0 = m.trainable_parameters();
    let mut worst = 0.0f64;
    for dir_seed in 0..3u64 {
        let dirs: BTreeMap<String, Array> = p0
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let d = if only_router && !k.ends_with("router.weight") {
                    mlx_rs::ops::zeros_like(v).expect("zeros")
                } else {
                    noise(v.shape(), 1000 * dir_seed + i as u64 + 7, 1.0)
                };
                (k.clone(), d)
            })
            .collect();
        let analytic: f64 = dirs
            .iter()
            .map(|(k, d)| {
                host(&lg.grads[k])
                    .iter()
                    .zip(host(d))
                    .map(|(g, d)| g * d)
                    .sum::<f64>()
            })
            .sum();
        let shifted = |sign: f32, eps: f32| -> BTreeMap<String, Array> {
            p0.iter()
                .map(|(k, v)| {
                    let d = dirs[k].multiply(Array::from_f32(sign * eps)).expect("mul");
                    (k.clone(), v.add(d).expect("add"))
                })
                .collect()
        };
        let mut central = |eps: f32| {
            let lp = total_loss(&mut m, &shifted(1.0, eps), &b);
            let lm = total_loss(&mut m, &shifted(-1.0, eps), &b);
            (lp - lm) / (2.0 * f64::from(eps))
        };
        let (d1, d2) = (central(4e-3), central(2e-3));
        let numeric = (4.0 * d2 - d1) / 3.0;
        let err = (analytic - numeric).abs() / analytic.abs().max(1e-6);
        println!(
            "{name} direction {dir_seed}: autograd {analytic:.6}  finite difference {numeric:.6}  rel error {err:.2e}"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn router_gradients_match_finite_differences() {
    // Weights large enough that the auxiliary terms matter in the total.
    let base = || {
        MoeLoraConfig::new(3, 4, 8.0)
            .with_targets(["q_proj", "down_proj"])
            .with_seed(5)
            .with_contrastive(0.5, 0.5)
            .with_balance_weight(0.5)
    };
    let cases = [
        (
            "softmax gating, router only, no auxiliary loss",
            base().with_contrastive(0.0, 0.5).with_balance_weight(0.0),
            true,
        ),
        (
            "softmax gating, router only, contrastive only",
            base().with_balance_weight(0.0),
            true,
        ),
        (
            "softmax gating, router only, balance only",
            base().with_contrastive(0.0, 0.5),
            true,
        ),
        ("softmax gating, router only", base(), true),
        ("softmax gating, all parameters", base(), false),
        ("top-2 gating, router only", base().with_top_k(2), true),
        ("top-2 gating, all parameters", base().with_top_k(2), false),
    ];
    for (name, cfg, only_router) in cases {
        let worst = fd_check(name, cfg, only_router);
        // Router-only directional derivatives are ~0.1 against an f32 loss
        // noise of ~3e-4 in the differences: 2e-2 there, 1e-2 otherwise.
        let tol = if only_router { 2e-2 } else { 1e-2 };
        assert!(worst < tol, "{name}: worst relative error {worst:.3e}");
    }
}

#[test]
fn one_expert_equals_lora() {
    let targets = ["q_proj", "v_proj", "up_proj"];
    let mut lora = PeftModel::new(
        tiny(2),
        PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(targets)
            .with_seed(9),
    )
    .expect("lora");
    let mut moe = MoeLoraModel::new(
        tiny(2),
        MoeLoraConfig::new(1, 4, 8.0)
            .with_targets(targets)
            .with_seed(9),
    )
    .expect("moe");
    // Same initial A (expert 0 uses LoRA's seed and name); give both the same B.
    let lp = lora.trainable_parameters();
    let mut lora_b = Vec::new();
    let mut moe_b = Vec::new();
    for (i, (k, v)) in lp.iter().enumerate() {
        if let Some(module) = k.strip_suffix(".lora_B") {
            let b = noise(v.shape(), 40 + i as u64, 0.05);
            moe_b.push((
                format!("{module}.experts.lora_B"),
                b.expand_dims(0).expect("expand"),
            ));
            lora_b.push((k.clone(), b));
        } else if let Some(module) = k.strip_suffix(".lora_A") {
            let a = &moe.trainable_parameters()[&format!("{module}.experts.lora_A")];
            assert_eq!(host(a), host(v), "{module}: expert 0 starts as LoRA's A");
        }
    }
    lora.set_trainable(lora_b.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
    moe.set_trainable(moe_b.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
    let toks = tokens(2, 7, 272, 3);
    let r = rel(
        &moe.forward(&toks).expect("moe"),
        &lora.forward(&toks).expect("lora"),
    );
    println!("one expert vs LoRA: logits rel {r:.2e}");
    assert!(r < 1e-6, "logits differ: {r:.3e}");

    let b = batch(2, 6, 272, 8);
    let g_lora = loss_and_grad_aux(&mut lora, &b, false).expect("lora grad");
    let g_moe = loss_and_grad_aux(&mut moe, &b, false).expect("moe grad");
    let (l1, l2) = (scalar(&g_lora.nll), scalar(&g_moe.nll));
    assert!((l1 - l2).abs() <= 1e-5 * l1.abs(), "nll {l1} vs {l2}");
    // E = 1: contrastive 0, load balance exactly 1.
    let (_, lc, lb) = moe.aux_loss(&b.inputs).expect("aux");
    assert_eq!(scalar(&lc), 0.0);
    assert!((scalar(&lb) - 1.0).abs() < 1e-6, "balance {}", scalar(&lb));
    let mut worst = 0.0f64;
    for (k, g) in &g_lora.grads {
        let (module, half) = k.rsplit_once('.').expect("name");
        let gm = &g_moe.grads[&format!("{module}.experts.{half}")];
        worst = worst.max(rel(&gm.squeeze_axes(&[0]).expect("squeeze"), g));
        let router = &g_moe.grads[&format!("{module}.router.weight")];
        assert!(
            host(router).iter().all(|x| x.abs() < 1e-9),
            "{module}: a single expert's gate is constant"
        );
    }
    println!("one expert vs LoRA: worst gradient rel {worst:.2e}");
    assert!(worst < 1e-5, "gradients differ: {worst:.3e}");
}

#[test]
fn top_k_gate_keeps_k_experts() {
    let m = MoeLoraModel::new(
        tiny(1),
        MoeLoraConfig::new(4, 2, 4.0)
            .with_targets(["q_proj"])
            .with_top_k(2),
    )
    .expect("moe");
    let x = noise(&[5, 64], 3, 1.0);
    let g = host(&m.gate("model.layers.0.self_attn.q_proj", &x).expect("gate"));
    for row in g.chunks(4) {
        let nonzero = row.iter().filter(|&&v| v > 0.0).count();
        assert_eq!(nonzero, 2, "row {row:?}");
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    }
    assert!(
        MoeLoraModel::new(tiny(1), MoeLoraConfig::new(2, 2, 4.0).with_top_k(3))
            .unwrap_err()
            .to_string()
            .contains("top_k")
    );
}

fn train_moe(seed: u64) -> (Vec<f32>, Vec<f32>, BTreeMap<String, Vec<f64>>) {
    let mut m = MoeLoraModel::new(
        tiny(6),
        MoeLoraConfig::new(3, 4, 8.0)
            .with_targets(["all-linear"])
            .with_top_k(2)
            .with_seed(seed),
    )
    .expect("moe");
    let train: Vec<forge_peft::Example> = (0..8)
        .map(|i| {
            let ids: Vec<u32> = host(&tokens(1, 10, 272, 100 + i))
                .iter()
                .map(|&x| x as u32)
                .collect();
            forge_peft::Example {
                counts: vec![true; ids.len()],
                ids,
            }
        })
        .collect();
    let report = Trainer::new(
        TrainOptions::new(6)
            .with_batch_size(2)
            .with_lr(1e-2)
            .with_schedule(Schedule::Constant)
            .with_seed(seed)
            .with_spike_factor(1e9),
    )
    .run(&mut m, &train, &[], 0, None)
    .expect("train");
    let losses = report.steps.iter().map(|s| s.loss).collect();
    let aux = report
        .steps
        .iter()
        .map(|s| s.aux_loss.expect("MoELoRA steps report aux_loss"))
        .collect();
    let params = m
        .trainable_parameters()
        .iter()
        .map(|(k, v)| (k.clone(), host(v)))
        .collect();
    (losses, aux, params)
}

#[test]
fn moe_training_is_deterministic_with_a_seed() {
    let (l1, a1, p1) = train_moe(4);
    let (l2, a2, p2) = train_moe(4);
    assert_eq!(l1, l2, "loss curves");
    assert_eq!(a1, a2, "aux curves");
    assert_eq!(p1, p2, "trained parameters");
    let (l3, _, p3) = train_moe(5);
    assert_ne!(p1, p3, "another seed gives other parameters");
    assert_ne!(l1, l3);
    println!("losses {l1:?} aux {a1:?}");
    assert!(l1.last() < l1.first(), "training lowers the loss: {l1:?}");
}

#[test]
fn moe_save_load_gives_identical_outputs_and_experts_export() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = MoeLoraConfig::new(3, 4, 8.0)
        .with_targets(["q_proj", "v_proj", "gate_proj"])
        .with_top_k(2)
        .with_seed(12);
    let mut m = MoeLoraModel::new(tiny(3), cfg.clone()).expect("moe");
    perturb_moe(&mut m, 77);
    // Routers perturbed too, so a load that ignored them would differ.
    let routers: Vec<(String, Array)> = m
        .trainable_parameters()
        .iter()
        .filter(|(k, _)| k.ends_with("router.weight"))
        .enumerate()
        .map(|(i, (k, v))| (k.clone(), noise(v.shape(), 300 + i as u64, 0.3)))
        .collect();
    m.set_trainable(routers.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
    m.save(dir.path().join("moe"), "tiny").expect("save");
    let mut back = MoeLoraModel::load(tiny(3), dir.path().join("moe")).expect("load");
    assert_eq!(back.config(), &cfg);
    let toks = tokens(2, 9, 272, 21);
    assert_eq!(
        host(&m.forward(&toks).expect("fwd")),
        host(&back.forward(&toks).expect("fwd")),
        "save → load gives bit-identical logits"
    );

    // A foreign tensor is refused with the file and tensor named.
    let err = MoeLoraModel::load(tiny(3), {
        let d = dir.path().join("other");
        MoeLoraModel::new(tiny(3), cfg.clone().with_targets(["q_proj"]))
            .expect("moe")
            .save(&d, "tiny")
            .expect("save");
        std::fs::copy(
            dir.path().join("moe").join(forge_peft::MOE_WEIGHTS),
            d.join(forge_peft::MOE_WEIGHTS),
        )
        .expect("copy");
        d
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("moe_lora.safetensors") && err.contains("unexpected tensor"),
        "{err}"
    );

    // Merging is refused; the export writes one PEFT LoRA per expert plus the router.
    let e = m.merged_model().unwrap_err().to_string();
    assert!(e.contains("cannot be fused"), "{e}");
    let dirs = m
        .export_experts(dir.path().join("export"), "tiny")
        .expect("export");
    assert_eq!(dirs.len(), 3);
    let params = m.trainable_parameters();
    for (e, d) in dirs.iter().enumerate() {
        let lora = PeftModel::load_peft(tiny(3), d).expect("expert loads as PEFT LoRA");
        for (k, v) in lora.trainable_parameters() {
            let (module, half) = k.rsplit_once('.').expect("name");
            let all = &params[&format!("{module}.experts.{half}")];
            let want = all
                .take_axis(Array::from_slice(&[e as i32], &[1]), 0)
                .expect("take")
                .squeeze_axes(&[0])
                .expect("squeeze");
            assert_eq!(host(&v), host(&want), "expert {e} {k}");
        }
    }
    assert!(
        dir.path()
            .join("export")
            .join(forge_peft::MOE_ROUTER)
            .is_file()
    );
}

#[test]
fn cached_decoding_matches_the_full_forward() {
    let mut m = MoeLoraModel::new(
        tiny(8),
        MoeLoraConfig::new(2, 4, 8.0)
            .with_targets(["all-linear"])
            .with_top_k(1),
    )
    .expect("moe");
    perturb_moe(&mut m, 5);
    let ids: Vec<u32> = vec![5, 17, 200, 33, 9, 101];
    let full = m
        .forward(&Array::from_slice(
            &ids.iter().map(|&t| t as i32).collect::<Vec<_>>(),
            &[1, ids.len() as i32],
        ))
        .expect("fwd");
    let mut session = m.session();
    let _ = session.feed(&ids[..4]).expect("prompt");
    let _ = session.feed(&ids[4..5]).expect("token");
    let last = session.feed(&ids[5..]).expect("token");
    let want = host(
        &full
            .take_axis(Array::from_slice(&[5], &[1]), 1)
            .expect("take"),
    );
    let worst = last
        .iter()
        .zip(&want)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "cached vs full logits: {worst:.3e}");
}

fn lora_with(seed: u64, targets: &[&str]) -> PeftModel {
    let mut p = PeftModel::new(
        tiny(2),
        PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(targets.iter().copied())
            .with_seed(seed),
    )
    .expect("lora");
    perturb(&mut p, seed + 100);
    p
}

fn weights(m: &Model) -> Vec<Vec<f64>> {
    use mlx_rs::module::ModuleParameters;
    let mut flat: Vec<(String, Array)> = m
        .parameters()
        .flatten()
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).clone()))
        .collect();
    flat.sort_by(|a, b| a.0.cmp(&b.0));
    flat.iter().map(|(_, v)| host(v)).collect()
}

#[test]
fn one_hot_plugin_equals_the_chosen_lora() {
    let rust = lora_with(1, &["q_proj", "v_proj"]);
    let python = lora_with(2, &["v_proj", "down_proj"]);
    let library = LoraLibrary::new()
        .with_adapter("rust", &rust)
        .expect("rust")
        .with_adapter("python", &python)
        .expect("python");
    let mut plugin =
        Plugin::new(PluginConfig::new(64, ["rust", "python"]).with_hidden([16])).expect("plugin");
    // One-hot on "python": zero last weights, a large bias.
    let last = plugin.parameters()["layers.1.weight"].clone();
    plugin
        .set_parameters([
            (
                "layers.1.weight",
                &mlx_rs::ops::zeros_like(&last).expect("z"),
            ),
            ("layers.1.bias", &Array::from_slice(&[0.0f32, 60.0], &[2])),
        ])
        .expect("set");
    let dlp = DlpLora::new(tiny(2), library, plugin, 0.9).expect("dlp");
    let prompt = [3u32, 50, 7, 99];
    let sel = dlp.select(&prompt).expect("select");
    assert_eq!(sel.weights, vec![(1, 1.0)], "{sel:?}");
    let mut fused = dlp.fused_model(&sel).expect("fuse");
    let mut chosen = python.merged_model().expect("merge");
    let toks = tokens(1, 6, 272, 4);
    let r = rel(
        &fused.forward(&toks, None).expect("fused"),
        &chosen.forward(&toks, None).expect("chosen"),
    );
    println!("one-hot DLP vs the chosen LoRA: logits rel {r:.2e}");
    assert!(r < 1e-6, "{r:.3e}");
}

#[test]
fn fusion_is_the_weighted_sum_of_deltas() {
    let a = lora_with(3, &["q_proj", "v_proj"]);
    let b = lora_with(4, &["v_proj", "o_proj"]);
    let library = LoraLibrary::new()
        .with_adapter("a", &a)
        .expect("a")
        .with_adapter("b", &b)
        .expect("b");
    let plugin = Plugin::new(PluginConfig::new(64, ["a", "b"]).with_hidden([8])).expect("p");
    let dlp = DlpLora::new(tiny(2), library, plugin, 1.0).expect("dlp");
    let sel = top_p_select(&[0.3, 0.7], 1.0);
    assert_eq!(sel.weights.len(), 2);
    let fused = dlp.fused_model(&sel).expect("fuse");
    let wa = sel.weights.iter().find(|w| w.0 == 0).expect("a").1;
    let wb = sel.weights.iter().find(|w| w.0 == 1).expect("b").1;
    for (name, lin) in a.modules() {
        let base = lin.base().dense().expect("base");
        let mut want = base.clone();
        for (w, m) in [(wa, &a), (wb, &b)] {
            if let Some(ad) = m.module(&name).and_then(|l| l.adapter()) {
                want = want
                    .add(
                        ad.delta()
                            .expect("delta")
                            .multiply(Array::from_f32(w))
                            .expect("mul"),
                    )
                    .expect("add");
            }
        }
        let (layer, rest) = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split_once('.'))
            .expect("name");
        let l = &fused.model.layers[layer.parse::<usize>().expect("layer")];
        let got = match rest {
            "self_attn.q_proj" => &l.self_attn.q_proj,
            "self_attn.k_proj" => &l.self_attn.k_proj,
            "self_attn.v_proj" => &l.self_attn.v_proj,
            "self_attn.o_proj" => &l.self_attn.o_proj,
            "mlp.gate_proj" => &l.mlp.gate_proj,
            "mlp.up_proj" => &l.mlp.up_proj,
            _ => &l.mlp.down_proj,
        };
        let r = rel(&got.weight.value, &want);
        assert!(r < 1e-6, "{name}: {r:.3e}");
    }
}

#[test]
fn top_p_picks_the_smallest_prefix() {
    let s = top_p_select(&[0.2, 0.5, 0.3], 0.7);
    assert_eq!(s.weights.len(), 2);
    assert_eq!(s.weights[0].0, 1);
    assert_eq!(s.weights[1].0, 2);
    assert!((s.weights[0].1 - 0.625).abs() < 1e-6);
    assert!((s.weights[1].1 - 0.375).abs() < 1e-6);
    assert_eq!(top_p_select(&[0.2, 0.5, 0.3], 0.4).weights, vec![(1, 1.0)]);
}

#[test]
fn plugin_learns_tasks_deterministically_and_dlp_round_trips() {
    // Two task families of prompts: ids in 10..60 vs ids in 150..200.
    let model = tiny(2);
    let prompts: Vec<Vec<u32>> = (0..24u32)
        .map(|i| {
            let base = if i % 2 == 0 { 10 } else { 150 };
            (0..6).map(|j| base + (i * 7 + j * 13) % 50).collect()
        })
        .collect();
    let labels: Vec<usize> = (0..24).map(|i| i % 2).collect();
    let feats = forge_peft::sentence_features_batch(&model, &prompts).expect("features");
    let cfg = PluginConfig::new(64, ["low", "high"])
        .with_hidden([32, 32])
        .with_seed(3);
    assert_eq!(
        cfg.num_parameters(),
        64 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2
    );
    let opts = PluginTrainOptions {
        steps: 60,
        batch_size: 8,
        lr: 3e-3,
        ..PluginTrainOptions::default()
    };
    let mut p1 = Plugin::new(cfg.clone()).expect("plugin");
    let r1 = p1.train(&feats, &labels, &opts).expect("train");
    let mut p2 = Plugin::new(cfg).expect("plugin");
    let r2 = p2.train(&feats, &labels, &opts).expect("train");
    assert_eq!(
        r1.losses, r2.losses,
        "seeded plugin training is deterministic"
    );
    assert_eq!(r1.train_accuracy, 1.0, "{r1:?}");
    assert!(r1.losses.last() < r1.losses.first());

    let library = LoraLibrary::new()
        .with_adapter("low", &lora_with(5, &["q_proj"]))
        .expect("low")
        .with_adapter("high", &lora_with(6, &["v_proj", "up_proj"]))
        .expect("high");
    let dlp = DlpLora::new(model, library, p1, 0.8).expect("dlp");
    let dir = tempfile::tempdir().expect("tmp");
    dlp.save(dir.path()).expect("save");
    let back = DlpLora::load(tiny(2), dir.path()).expect("load");
    let toks = tokens(1, 5, 272, 9);
    for prompt in [&prompts[0], &prompts[1]] {
        let (s1, s2) = (
            dlp.select(prompt).expect("s"),
            back.select(prompt).expect("s"),
        );
        assert_eq!(s1, s2);
        let (mut f1, mut f2) = (
            dlp.fused_model(&s1).expect("f"),
            back.fused_model(&s2).expect("f"),
        );
        assert_eq!(
            host(&f1.forward(&toks, None).expect("fwd")),
            host(&f2.forward(&toks, None).expect("fwd")),
            "save → load gives identical fused outputs"
        );
    }
    assert_eq!(weights(dlp.base()), weights(back.base()));
    // A plugin whose tasks do not match the library is refused.
    let bad = Plugin::new(PluginConfig::new(64, ["x", "y"]).with_hidden([4])).expect("p");
    let err = DlpLora::new(tiny(2), back.library().clone(), bad, 0.8).unwrap_err();
    assert!(err.to_string().contains("library"), "{err}");
}

#[test]
fn peft_model_through_the_trait_keeps_its_loss() {
    // The trainer's generic path gives PeftModel the same loss and gradients
    // as `loss_and_grad`.
    let mut m = lora_with(7, &["q_proj", "v_proj"]);
    let b = batch(2, 6, 272, 12);
    let (l, g) = forge_peft::loss_and_grad(&mut m, &b).expect("plain");
    let lg = loss_and_grad_aux(&mut m, &b, false).expect("trait");
    assert!(lg.aux.is_none());
    assert_eq!(host(&l), host(&lg.nll));
    for (k, v) in g {
        assert_eq!(host(&v), host(&lg.grads[&k]), "{k}");
    }
    assert_eq!(
        m.trainable_arrays().keys().collect::<Vec<_>>(),
        m.trainable_parameters().keys().collect::<Vec<_>>()
    );
}
