//! Autograd gradients of the adapter parameters against central finite
//! differences of the same loss, on the tiny model.

mod common;

use std::collections::BTreeMap;

use common::*;
use forge_peft::{Method, PeftConfig, PeftModel, QuantSpec, loss_and_grad, masked_nll_sum};
use mlx_rs::Array;

fn loss_at(m: &mut PeftModel, params: &BTreeMap<String, Array>, b: &forge_peft::Batch) -> f64 {
    m.set_trainable(params.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
    let logits = m.forward(&b.inputs).expect("forward");
    let l = masked_nll_sum(&logits, &b.targets, &b.mask).expect("loss");
    l.eval().expect("eval");
    f64::from(l.as_slice::<f32>()[0])
}

fn check(name: &str, cfg: PeftConfig) -> f64 {
    let mut m = PeftModel::new(tiny(4), cfg).expect("peft");
    perturb(&mut m, 9);
    let b = batch(2, 8, 272, 17);
    let (_, grads) = loss_and_grad(&mut m, &b).expect("grad");
    let p0 = m.trainable_parameters();
    let mut worst = 0.0f64;
    // Three random directions over all trainable arrays at once.
    for dir_seed in 0..3u64 {
        let mut s = 0x9E37_79B9u64 ^ dir_seed;
        let mut dirs = BTreeMap::new();
        for (k, v) in &p0 {
            let vals: Vec<f32> = (0..v.size())
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            dirs.insert(k.clone(), Array::from_slice(&vals, v.shape()));
        }
        let analytic: f64 = dirs
            .iter()
            .map(|(k, d)| {
                host(&grads[k])
                    .iter()
                    .zip(host(d))
                    .map(|(g, d)| g * d)
                    .sum::<f64>()
            })
            .sum();
        let shifted = |sign: f32, eps: f32| -> BTreeMap<String, Array> {
            p0.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.add(dirs[k].multiply(Array::from_f32(sign * eps)).expect("mul"))
                            .expect("add"),
                    )
                })
                .collect()
        };
        // Central differences at h and h/2, Richardson-extrapolated (O(h⁴)).
        let mut central = |eps: f32| {
            let (lp, lm) = (
                loss_at(&mut m, &shifted(1.0, eps), &b),
                loss_at(&mut m, &shifted(-1.0, eps), &b),
            );
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
fn adapter_gradients_match_finite_differences() {
    let cfg = |m: Method| {
        PeftConfig::new(m, 4, 8.0)
            .with_targets(["all-linear"])
            .with_seed(3)
    };
    let cases = [
        ("lora", cfg(Method::Lora)),
        ("rslora", cfg(Method::RsLora)),
        ("pissa", cfg(Method::Pissa)),
        (
            "dora (exact norm gradient)",
            cfg(Method::Dora).with_dora_detach_norm(false),
        ),
        (
            "qlora 4-bit",
            cfg(Method::Lora).with_quantized_base(QuantSpec::new(4)),
        ),
    ];
    for (name, c) in cases {
        let worst = check(name, c);
        assert!(worst < 1e-2, "{name}: worst relative error {worst:.3e}");
    }
}
