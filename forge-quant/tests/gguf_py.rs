//! Bit-exactness against gguf-py 0.19 (llama.cpp's Python GGUF library):
//! dequantization of every format on random and quantized bytes and on every
//! tensor of the SmolLM2 GGUF file, and quantization of the 32-value formats
//! and F16 / BF16. The reference script is `tests/reference/gguf_py_ref.py`.

mod common;

use std::io::{Read, Seek, SeekFrom};

use common::{Rng, assert_bits_eq, assert_blocks_eq, mixed_signal, read_f32, write_f32};
use forge_quant::{GgmlType, dequantize, quantize};
use serde_json::json;

const QUANT_TYPES: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Block bytes to dequantize: random bytes (any scale, NaN and infinity
/// included) followed by the blocks of a realistic signal.
fn dequant_input(ty: GgmlType, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let n_blocks = if ty.block_size() == 256 { 96 } else { 768 };
    let mut bytes = rng.bytes(n_blocks * ty.type_size());
    if ty.is_quantized() {
        let x = mixed_signal(seed ^ 0x55, n_blocks, ty.block_size());
        bytes.extend(quantize(ty, &x, ty.block_size()).expect("quantize"));
    }
    bytes
}

#[test]
fn dequantize_matches_gguf_py_for_every_format() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut types: Vec<GgmlType> = QUANT_TYPES.to_vec();
    types.extend([GgmlType::F16, GgmlType::BF16, GgmlType::F32]);

    let mut jobs = Vec::new();
    let mut cases = Vec::new();
    for (k, &ty) in types.iter().enumerate() {
        let bytes = if ty.is_quantized() {
            dequant_input(ty, 100 + k as u64)
        } else if ty == GgmlType::F32 {
            Rng::new(7).bytes(4 * 4096)
        } else {
            // every 16-bit pattern once
            (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect()
        };
        let input = dir.path().join(format!("{ty}.bin"));
        let output = dir.path().join(format!("{ty}.f32"));
        std::fs::write(&input, &bytes).expect("write input");
        jobs.push(
            json!({"op": "dequant", "type": ty.name(), "row_bytes": ty.type_size(),
                         "input": input, "output": output}),
        );
        cases.push((ty, bytes, output));
    }
    common::run_gguf_py(&py, &json!(jobs), dir.path());

    for (ty, bytes, output) in cases {
        let n = bytes.len() / ty.type_size() * ty.block_size();
        let ours = dequantize(ty, &bytes, n).expect("dequantize");
        assert_bits_eq(
            &ours,
            &read_f32(&output),
            &format!("dequantize {ty} vs gguf-py"),
        );
    }
}

#[test]
fn quantize_matches_gguf_py_for_legacy_formats_and_halves() {
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::BF16,
    ];
    let mut jobs = Vec::new();
    let mut cases = Vec::new();
    for (k, &ty) in types.iter().enumerate() {
        let n_per_row = 256;
        let x = if ty.is_quantized() {
            mixed_signal(200 + k as u64, 12 * 64, 32)
        } else {
            // random bit patterns (NaNs, infinities, subnormals) and a signal
            let mut rng = Rng::new(300 + k as u64);
            let mut x: Vec<f32> = (0..64 * 256)
                .map(|_| f32::from_bits(rng.next_u64() as u32))
                .collect();
            x.extend(mixed_signal(400 + k as u64, 64, 256));
            x
        };
        let input = dir.path().join(format!("{ty}.f32"));
        let output = dir.path().join(format!("{ty}.bin"));
        write_f32(&input, &x);
        jobs.push(
            json!({"op": "quant", "type": ty.name(), "n_per_row": n_per_row,
                         "input": input, "output": output}),
        );
        cases.push((ty, x, n_per_row, output));
    }
    common::run_gguf_py(&py, &json!(jobs), dir.path());

    for (ty, x, n_per_row, output) in cases {
        let ours = quantize(ty, &x, n_per_row).expect("quantize");
        let theirs = std::fs::read(&output).expect("read output");
        assert_blocks_eq(
            &ours,
            &theirs,
            ty.type_size(),
            &format!("quantize {ty} vs gguf-py"),
        );
    }
}

#[test]
fn smollm2_tensors_dequantize_like_gguf_py() {
    let (Some(py), Some(model)) = (common::python(), common::smollm2()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("model.json");
    common::run_gguf_py(
        &py,
        &json!([{"op": "model", "gguf": model, "output": manifest}]),
        dir.path(),
    );
    let tensors: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&manifest).expect("read manifest"))
            .expect("manifest json");

    let mut file = std::fs::File::open(&model).expect("open model");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut mismatched = Vec::new();
    for t in &tensors {
        let name = t["name"].as_str().expect("name");
        let ty: GgmlType = t["type"]
            .as_str()
            .expect("type")
            .parse()
            .expect("known type");
        let n = t["n_elements"].as_u64().expect("n_elements") as usize;
        let offset = t["offset"].as_u64().expect("offset");
        let n_bytes = t["n_bytes"].as_u64().expect("n_bytes") as usize;
        let want: u64 = t["checksum"]
            .as_str()
            .expect("checksum")
            .parse()
            .expect("u64 checksum");

        let mut bytes = vec![0u8; n_bytes];
        file.seek(SeekFrom::Start(offset)).expect("seek");
        file.read_exact(&mut bytes).expect("read tensor");
        let values = dequantize(ty, &bytes, n).expect("dequantize tensor");
        *seen.entry(ty.name().to_string()).or_default() += 1;
        if common::checksum(&values) != want {
            mismatched.push((name.to_string(), values));
        }
    }
    if let Some((name, values)) = mismatched.first() {
        // show where: dump gguf-py's values of the first bad tensor
        let dump = dir.path().join("dump.f32");
        common::run_gguf_py(
            &py,
            &json!([{"op": "dump", "gguf": model, "tensor": name, "output": dump}]),
            dir.path(),
        );
        assert_bits_eq(
            values,
            &read_f32(&dump),
            &format!("{} tensors differ; {name}", mismatched.len()),
        );
    }
    // the file holds Q8_0, Q4_1 and F32 tensors; all of them were compared
    assert_eq!(seen.get("Q8_0"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("Q4_1"), Some(&210), "{seen:?}");
    assert!(seen.get("F32").is_some_and(|&n| n > 0), "{seen:?}");
    println!("compared {} tensors bit for bit: {seen:?}", tensors.len());
}
