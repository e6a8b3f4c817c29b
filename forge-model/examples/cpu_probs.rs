//! Scratch: the CPU engine's top-20 next-token probabilities for token id lists (JSON in, JSON out).
use forge_model::CpuModel;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = CpuModel::open(&args[1])?;
    let req: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&args[2])?)?;
    let mut out = Vec::new();
    for ids in req["probs"].as_array().expect("probs") {
        let ids: Vec<u32> = ids
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        let mut cache = model.new_cache();
        let logits = model.forward_last(&ids, &mut cache)?;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        let mut o: Vec<usize> = (0..e.len()).collect();
        o.sort_by(|&a, &b| e[b].total_cmp(&e[a]));
        out.push(
            o.iter()
                .take(20)
                .map(|&i| serde_json::json!([i, e[i] / s]))
                .collect::<Vec<_>>(),
        );
    }
    std::fs::write(&args[3], serde_json::json!({"probs": out}).to_string())?;
    Ok(())
}
