#![allow(dead_code, unreachable_pub)]

use forge_model::{Architecture, Model, ModelConfig, random_model, tiny_config};
use forge_peft::{Batch, PeftModel};
use mlx_rs::Array;

pub fn tiny(seed: u64) -> Model {
    random_model(tiny_config(Architecture::Llama), seed).expect("tiny model")
}

pub fn tiny_arch(arch: Architecture, seed: u64) -> Model {
    random_model(tiny_config(arch), seed).expect("tiny model")
}

pub fn model_with(config: ModelConfig, seed: u64) -> Model {
    random_model(config, seed).expect("model")
}

/// Deterministic token ids `[b, l]` below `vocab`.
pub fn tokens(b: i32, l: i32, vocab: u32, seed: u64) -> Array {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<i32> = (0..b * l)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % u64::from(vocab)) as i32
        })
        .collect();
    Array::from_slice(&v, &[b, l])
}

pub fn host(a: &Array) -> Vec<f64> {
    let a = a
        .as_type::<f32>()
        .expect("cast")
        .reshape(&[-1])
        .expect("flat");
    let a = a
        .add(mlx_rs::ops::zeros::<f32>(&[a.size() as i32]).expect("z"))
        .expect("copy");
    a.eval().expect("eval");
    a.as_slice::<f32>().iter().map(|&x| f64::from(x)).collect()
}

pub fn rel(a: &Array, b: &Array) -> f64 {
    let (a, b) = (host(a), host(b));
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Overwrites every lora_B (and magnitude) with seeded noise so that merges
/// and gradients are not trivially zero.
pub fn perturb(m: &mut PeftModel, seed: u64) {
    let params = m.trainable_parameters();
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    };
    let mut new = Vec::new();
    for (k, v) in &params {
        if k.ends_with("lora_B") {
            let n = v.size();
            let vals: Vec<f32> = (0..n).map(|_| 0.05 * next()).collect();
            new.push((k.clone(), Array::from_slice(&vals, v.shape())));
        } else if k.ends_with("lora_magnitude") {
            let h = host(v);
            let vals: Vec<f32> = h
                .iter()
                .map(|x| (*x * (1.0 + 0.1 * f64::from(next()))) as f32)
                .collect();
            new.push((k.clone(), Array::from_slice(&vals, v.shape())));
        }
    }
    m.set_trainable(new.iter().map(|(k, v)| (k.as_str(), v)))
        .expect("set");
}

/// Inputs, shifted targets and a full mask from `[b, l+1]` tokens.
pub fn batch(b: i32, l: i32, vocab: u32, seed: u64) -> Batch {
    let t = tokens(b, l + 1, vocab, seed);
    let h = host(&t);
    let ids: Vec<i32> = h.iter().map(|&x| x as i32).collect();
    let (mut inp, mut tgt) = (Vec::new(), Vec::new());
    for r in 0..b as usize {
        let row = &ids[r * (l as usize + 1)..(r + 1) * (l as usize + 1)];
        inp.extend_from_slice(&row[..l as usize]);
        tgt.extend_from_slice(&row[1..]);
    }
    Batch {
        inputs: Array::from_slice(&inp, &[b, l]),
        targets: Array::from_slice(&tgt, &[b, l]),
        mask: mlx_rs::ops::ones::<f32>(&[b, l]).expect("ones"),
    }
}
