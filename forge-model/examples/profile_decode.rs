//! Decode speed of the MLX model and the CPU engine on the default model.
use std::time::Instant;

use forge_model::{CpuModel, default_model_path};

fn main() -> anyhow::Result<()> {
    let path = default_model_path()?;
    let t = Instant::now();
    let model = CpuModel::open(&path)?;
    println!(
        "load {:?}, {} MB of weights",
        t.elapsed(),
        model.weight_bytes() >> 20
    );
    let mut cache = model.new_cache();
    let prompt: Vec<u32> = (0..128).map(|i| 100 + i).collect();
    let t = Instant::now();
    let logits = model.forward_last(&prompt, &mut cache)?;
    println!(
        "prefill 128: {:?} ({:.1} tok/s)",
        t.elapsed(),
        128.0 / t.elapsed().as_secs_f64()
    );
    let mut tok = argmax(&logits);
    let n = 32;
    let t = Instant::now();
    for _ in 0..n {
        let l = model.forward_last(&[tok], &mut cache)?;
        tok = argmax(&l);
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "decode {:.2} ms/token ({:.1} tok/s)",
        dt * 1e3 / n as f64,
        n as f64 / dt
    );
    Ok(())
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |x| x.0 as u32)
}
