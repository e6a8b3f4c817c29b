//! Adapter math: step-0 invariance, merge = forward, PiSSA reconstruction,
//! QPiSSA vs QLoRA error, CLoQ objective, seeding and targeting.

mod common;

use common::*;
use forge_model::{Architecture, ModelConfig};
use forge_peft::{Method, PeftConfig, PeftModel, QuantSpec, SvdMode, TargetRule, cloq_objective};
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;
use proptest::prelude::*;

const VOCAB: u32 = 272;

fn all_variants() -> Vec<(&'static str, PeftConfig)> {
    let base = |m: Method| {
        PeftConfig::new(m, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(7)
    };
    vec![
        ("lora", base(Method::Lora)),
        ("rslora", base(Method::RsLora)),
        ("pissa-full", base(Method::Pissa).with_svd(SvdMode::Full)),
        ("pissa-rand", base(Method::Pissa)),
        ("dora", base(Method::Dora)),
        (
            "qlora",
            base(Method::Lora).with_quantized_base(QuantSpec::new(4)),
        ),
        (
            "qpissa",
            base(Method::Pissa).with_quantized_base(QuantSpec::new(4)),
        ),
        (
            "qdora",
            base(Method::Dora).with_quantized_base(QuantSpec::new(4)),
        ),
        (
            "cloq",
            base(Method::Cloq).with_quantized_base(QuantSpec::new(4)),
        ),
    ]
}

fn build(cfg: PeftConfig, seed: u64) -> PeftModel {
    let calib = [tokens(2, 16, VOCAB, 99)];
    PeftModel::with_calibration(tiny(seed), cfg, &calib).expect("peft model")
}

#[test]
fn unadapted_layers_are_bit_identical() {
    // q_proj adapted with B = 0: x Wᵀ + 0 is exact; every other projection
    // takes the same ops as forge-model. Llama, Qwen2 (biases) and tied.
    for arch in Architecture::ALL {
        let mut base = tiny_arch(arch, 3);
        let x = tokens(2, 9, VOCAB, 1);
        let want = base.forward(&x, None).expect("forward");
        let cfg = PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["o_proj"]);
        let mut peft = PeftModel::new(tiny_arch(arch, 3), cfg).expect("peft");
        let got = peft.forward(&x).expect("forward");
        let diff = host(&want)
            .iter()
            .zip(host(&got))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert_eq!(diff, 0.0, "{arch:?}: max abs diff {diff}");
    }
}

#[test]
fn output_unchanged_at_step_zero() {
    let x = tokens(2, 12, VOCAB, 5);
    let want = tiny(11).forward(&x, None).expect("forward");
    for (name, cfg) in all_variants() {
        let quantized = cfg.quantized_base.is_some();
        let mut m = build(cfg, 11);
        let got = m.forward(&x).expect("forward");
        let err = rel(&got, &want);
        if quantized {
            // Step 0 equals the model on its own base: the merged (dequantized) model.
            let mut merged = m.merged_model().expect("merged");
            let reference = merged.forward(&x, None).expect("forward");
            let e = rel(&got, &reference);
            println!(
                "{name}: rel error vs its dequantized merge {e:.2e}, vs full precision {err:.2e}"
            );
            assert!(e <= 1e-5, "{name}: {e}");
        } else {
            println!("{name}: step-0 rel error vs the base model {err:.2e}");
            assert!(err <= 1e-5, "{name}: {err}");
        }
    }
}

#[test]
fn merged_forward_equals_adapter_forward() {
    let x = tokens(2, 12, VOCAB, 6);
    for (name, cfg) in all_variants() {
        let mut m = build(cfg, 12);
        perturb(&mut m, 3);
        let got = m.forward(&x).expect("forward");
        let mut merged = m.merged_model().expect("merged");
        let want = merged.forward(&x, None).expect("forward");
        let err = rel(&got, &want);
        println!("{name}: merged vs adapter forward rel error {err:.2e}");
        assert!(err <= 1e-5, "{name}: {err}");
        // fuse → same output; unfuse → adapter forward again.
        m.fuse().expect("fuse");
        let fused = m.forward(&x).expect("forward");
        let e2 = rel(&fused, &got);
        assert!(e2 <= 1e-5, "{name} fused: {e2}");
        m.unfuse();
        let back = m.forward(&x).expect("forward");
        assert!(rel(&back, &got) <= 1e-6, "{name} unfused");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn pissa_residual_plus_ab_reconstructs_w(
        hidden in prop::sample::select(vec![16usize, 32, 48, 64]),
        inter in 8usize..96,
        rank in 1usize..8,
        full in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let config = ModelConfig::new(Architecture::Llama, 64, hidden, inter, 1, 4);
        let base = model_with(config.clone(), seed);
        let originals: Vec<(String, Array)> = base.parameters().flatten().into_iter()
            .map(|(k, v)| (k.to_string(), v.clone())).collect();
        let svd = if full { SvdMode::Full } else { SvdMode::Randomized { niter: 2, oversample: 4 } };
        let cfg = PeftConfig::new(Method::Pissa, rank, 2.0 * rank as f32).with_targets(["all-linear"]).with_svd(svd).with_seed(seed);
        let m = PeftModel::new(model_with(config, seed), cfg).expect("peft");
        let mut worst = 0.0f64;
        for (name, lin) in m.modules() {
            let w = &originals.iter().find(|(k, _)| *k == format!("{name}.weight")).expect("weight").1;
            let ad = lin.adapter().expect("adapter");
            let rebuilt = lin.base().dense().expect("dense").add(ad.delta().expect("delta")).expect("add");
            worst = worst.max(rel(&rebuilt, w));
        }
        println!("PiSSA {hidden}x{inter} r={rank} full={full}: worst ‖W_res + sBA − W‖/‖W‖ = {worst:.3e}");
        prop_assert!(worst <= 1e-6, "worst relative reconstruction error {worst:.3e}");
    }
}

#[test]
fn randomized_svd_finds_the_principal_part() {
    // A matrix with a decaying spectrum: PiSSA's adapter from the randomized
    // SVD captures the same energy as the full SVD.
    let cfg_full = PeftConfig::new(Method::Pissa, 8, 8.0)
        .with_targets(["down_proj"])
        .with_svd(SvdMode::Full);
    let cfg_rand = cfg_full.clone().with_svd(SvdMode::Randomized {
        niter: 4,
        oversample: 8,
    });
    let a = PeftModel::new(tiny(21), cfg_full).expect("full");
    let b = PeftModel::new(tiny(21), cfg_rand).expect("rand");
    for ((name, la), (_, lb)) in a.modules().zip(b.modules()) {
        if let (Some(x), Some(y)) = (la.adapter(), lb.adapter()) {
            let nx: f64 = host(&x.delta().expect("d"))
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            let ny: f64 = host(&y.delta().expect("d"))
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            println!("{name}: ‖sBA‖ full {nx:.5}, randomized {ny:.5}");
            assert!((nx - ny).abs() / nx < 0.02, "{name}: {nx} vs {ny}");
        }
    }
}

#[test]
fn qpissa_error_below_qlora() {
    for bits in [2, 3, 4] {
        let spec = QuantSpec::new(bits);
        let base = tiny(31);
        let originals: Vec<(String, Array)> = base
            .parameters()
            .flatten()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let w_of = |name: &str| {
            originals
                .iter()
                .find(|(k, _)| k == &format!("{name}.weight"))
                .expect("w")
                .1
                .clone()
        };
        let mk = |m: Method| {
            PeftModel::new(
                tiny(31),
                PeftConfig::new(m, 16, 16.0)
                    .with_targets(["all-linear"])
                    .with_svd(SvdMode::Full)
                    .with_quantized_base(spec),
            )
            .expect("peft")
        };
        let (ql, qp) = (mk(Method::Lora), mk(Method::Pissa));
        let (mut el, mut ep) = (0.0, 0.0);
        for ((name, a), (_, b)) in ql.modules().zip(qp.modules()) {
            let w = w_of(&name);
            el += rel(&a.merged_weight().expect("m"), &w);
            ep += rel(&b.merged_weight().expect("m"), &w);
        }
        println!(
            "{bits}-bit: mean ‖W − W'‖/‖W‖  QLoRA {:.4}  QPiSSA {:.4}",
            el / 14.0,
            ep / 14.0
        );
        assert!(ep < el);
    }
}

#[test]
fn cloq_beats_zero_and_pissa_init_on_its_objective() {
    let calib = [tokens(4, 32, VOCAB, 41), tokens(4, 32, VOCAB, 42)];
    for bits in [2, 3, 4] {
        let spec = QuantSpec::new(bits);
        let targets = ["q_proj", "up_proj", "down_proj"];
        let cfg = |m: Method| {
            PeftConfig::new(m, 8, 16.0)
                .with_targets(targets)
                .with_svd(SvdMode::Full)
                .with_quantized_base(spec)
                .with_cloq_lambda(1e-4)
        };
        let originals: Vec<(String, Array)> = tiny(51)
            .parameters()
            .flatten()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let cloq = PeftModel::with_calibration(tiny(51), cfg(Method::Cloq), &calib).expect("cloq");
        let qlora = PeftModel::new(tiny(51), cfg(Method::Lora)).expect("qlora");
        let qpissa = PeftModel::new(tiny(51), cfg(Method::Pissa)).expect("qpissa");
        let grams =
            forge_peft::calibration_grams(&tiny(51), &cfg(Method::Cloq), &calib).expect("grams");
        let (mut tc, mut tz, mut tp) = (0.0, 0.0, 0.0);
        for (name, gram) in &grams {
            let w = &originals
                .iter()
                .find(|(k, _)| k == &format!("{name}.weight"))
                .expect("w")
                .1;
            let obj = |m: &PeftModel| {
                let l = m.module(name).expect("module");
                let ad = l.adapter().expect("adapter");
                cloq_objective(
                    w,
                    &l.base().dense().expect("d"),
                    ad.a(),
                    ad.b(),
                    ad.scale(),
                    gram,
                )
                .expect("objective")
            };
            let (c, z, p) = (obj(&cloq), obj(&qlora), obj(&qpissa));
            println!(
                "{bits}-bit {name}: ‖X(W−Q−sBA)ᵀ‖²  CLoQ {c:.4e}  zero-init {z:.4e}  PiSSA-init {p:.4e}"
            );
            assert!(c < z && c < p, "{bits}-bit {name}: {c} vs {z}, {p}");
            tc += c;
            tz += z;
            tp += p;
        }
        println!(
            "{bits}-bit total: CLoQ {tc:.4e} ({:.1}% of zero-init), zero-init {tz:.4e}, PiSSA-init {tp:.4e}",
            100.0 * tc / tz
        );
    }
}

#[test]
fn same_seed_same_adapters() {
    for m in [Method::Lora, Method::Pissa] {
        let cfg = PeftConfig::new(m, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(5);
        let a = PeftModel::new(tiny(1), cfg.clone())
            .expect("a")
            .trainable_parameters();
        let b = PeftModel::new(tiny(1), cfg.clone())
            .expect("b")
            .trainable_parameters();
        let c = PeftModel::new(tiny(1), cfg.with_seed(6))
            .expect("c")
            .trainable_parameters();
        let mut differs = false;
        for (k, v) in &a {
            assert_eq!(host(v), host(&b[k]), "{m:?} {k}");
            differs |= host(v) != host(&c[k]);
        }
        assert!(differs, "{m:?}: another seed gave the same adapters");
    }
}

#[test]
fn targeting_patterns_layers_and_per_pattern_rank() {
    let names = |cfg: PeftConfig| -> Vec<(String, usize, f32)> {
        PeftModel::new(tiny(1), cfg)
            .expect("peft")
            .modules()
            .filter_map(|(n, l)| l.adapter().map(|a| (n, a.rank(), a.alpha())))
            .collect()
    };
    let all = names(PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["all-linear"]));
    assert_eq!(all.len(), 14);
    let q = names(PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["q_proj"]));
    assert_eq!(
        q.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.1.self_attn.q_proj"
        ]
    );
    let re =
        names(PeftConfig::new(Method::Lora, 4, 8.0).with_targets([r"re:.*\.mlp\.(up|down)_proj"]));
    assert_eq!(re.len(), 4);
    let layer1 = names(
        PeftConfig::new(Method::Lora, 4, 8.0)
            .with_targets(["all-linear"])
            .with_layers(1..2),
    );
    assert!(layer1.iter().all(|x| x.0.starts_with("model.layers.1.")) && layer1.len() == 7);
    let per = names(
        PeftConfig::new(Method::Lora, 4, 8.0).with_target_rules(vec![
            TargetRule::new("v_proj").with_rank(8).with_alpha(32.0),
            TargetRule::new("self_attn.q_proj"),
        ]),
    );
    assert!(
        per.iter()
            .any(|x| x.0.ends_with("v_proj") && x.1 == 8 && x.2 == 32.0)
    );
    assert!(
        per.iter()
            .any(|x| x.0.ends_with("q_proj") && x.1 == 4 && x.2 == 8.0)
    );
    // Errors name the pattern.
    let bad = PeftModel::new(
        tiny(1),
        PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["re:("]),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("re:("), "{bad}");
    let none = PeftModel::new(
        tiny(1),
        PeftConfig::new(Method::Lora, 4, 8.0).with_targets(["wq"]),
    )
    .unwrap_err()
    .to_string();
    assert!(none.contains("no module matched"), "{none}");
    let big = PeftModel::new(tiny(1), PeftConfig::new(Method::Lora, 100, 8.0))
        .unwrap_err()
        .to_string();
    assert!(big.contains("rank"), "{big}");
    let cloq = PeftModel::new(tiny(1), PeftConfig::new(Method::Cloq, 4, 8.0))
        .unwrap_err()
        .to_string();
    assert!(
        cloq.contains("quantized_base") || cloq.contains("calibration"),
        "{cloq}"
    );
}

/// A bf16 model keeps its dtype under a LoRA: the adapted bases stay bf16
/// (the initialisation works in f32, the frozen products do not), so the
/// forward pass and its output are bf16, and it still starts as the base.
#[test]
fn bf16_model_stays_bf16_under_lora() {
    use mlx_rs::Dtype;
    use mlx_rs::module::ModuleParametersExt;
    let to_bf16 = |mut m: forge_model::Model| {
        for (_, p) in m.parameters_mut().flatten().iter_mut() {
            **p = p.as_dtype(Dtype::Bfloat16).expect("cast");
        }
        m.eval().expect("eval");
        m
    };
    let x = tokens(2, 12, VOCAB, 5);
    let want = to_bf16(tiny(11)).forward(&x, None).expect("forward");
    for method in [Method::Lora, Method::Dora] {
        let cfg = PeftConfig::new(method, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(7);
        let mut m = PeftModel::new(to_bf16(tiny(11)), cfg).expect("peft");
        for (name, l) in m.modules() {
            let w = l.base().dense().expect("base");
            assert_eq!(w.dtype(), Dtype::Bfloat16, "{method:?} {name}");
        }
        let got = m.forward(&x).expect("forward");
        assert_eq!(got.dtype(), Dtype::Bfloat16, "{method:?}");
        let err = rel(&got, &want);
        println!("{method:?} bf16: step-0 rel error vs the base model {err:.2e}");
        assert!(err <= 1e-2, "{method:?}: {err}");
    }
}
