//! The fuzzer's seed corpus (`fuzz/seeds/`): small valid GGUF files written by
//! this crate's writer. This test checks the committed seeds are what the
//! writer produces today and that they read back; `FORGE_WRITE_SEEDS=1`
//! rewrites them.

use std::path::Path;

use forge_gguf::{Array, GgmlType, GgufFile, GgufWriter, Result};

fn image(plan: GgufWriter) -> Result<Vec<u8>> {
    let mut w = plan.write_to(Vec::new())?;
    let mut i = 0u8;
    while let Some(len) = w.next_tensor().map(|t| t.byte_len()) {
        i = i.wrapping_add(1);
        w.write_tensor(
            &(0..len)
                .map(|j| (j as u8).wrapping_mul(31) ^ i)
                .collect::<Vec<u8>>(),
        )?;
    }
    w.finish()
}

fn seeds() -> Result<Vec<(&'static str, Vec<u8>)>> {
    Ok(vec![
        ("empty.gguf", image(GgufWriter::new())?),
        (
            "every-type.gguf",
            image(
                GgufWriter::new()
                    .with_metadata("general.architecture", "llama")
                    .with_metadata("t.u8", 1u8)
                    .with_metadata("t.i8", -1i8)
                    .with_metadata("t.u16", 2u16)
                    .with_metadata("t.i16", -2i16)
                    .with_metadata("t.u32", 3u32)
                    .with_metadata("t.i32", -3i32)
                    .with_metadata("t.f32", 0.5f32)
                    .with_metadata("t.bool", true)
                    .with_metadata("t.u64", 4u64)
                    .with_metadata("t.i64", -4i64)
                    .with_metadata("t.f64", 0.25f64)
                    .with_metadata("t.strings", vec!["<s>", "</s>", "hello", ""])
                    .with_metadata("t.f32s", vec![0.0f32, -1.5, 2.0])
                    .with_metadata("t.bools", vec![true, false])
                    .with_metadata(
                        "t.nested",
                        vec![
                            Array::U8(vec![1, 2, 3]),
                            Array::Array(vec![Array::String(vec!["x".into()])]),
                        ],
                    )
                    .with_tensor("token_embd.weight", [32u64, 4], GgmlType::Q8_0)?
                    .with_tensor("blk.0.attn_norm.weight", [8u64], GgmlType::F32)?
                    .with_tensor("blk.0.ffn_up.weight", [256u64, 2], GgmlType::Q4_K)?
                    .with_tensor("output.weight", [3u64, 2, 2, 1], GgmlType::F16)?,
            )?,
        ),
        (
            "v2-align64.gguf",
            image(
                GgufWriter::new()
                    .with_version(2)?
                    .with_alignment(64)?
                    .with_metadata("llama.block_count", 1u32)
                    .with_tensor("a", [5u64], GgmlType::I8)?
                    .with_tensor("b", [32u64], GgmlType::Q4_1)?,
            )?,
        ),
        (
            "tokenizer.gguf",
            image(
                GgufWriter::new()
                    .with_metadata("tokenizer.ggml.model", "gpt2")
                    .with_metadata(
                        "tokenizer.ggml.tokens",
                        (0..64).map(|i| format!("tok{i}")).collect::<Vec<_>>(),
                    )
                    .with_metadata("tokenizer.ggml.token_type", vec![1i32; 64])
                    .with_metadata(
                        "tokenizer.chat_template",
                        "{% for m in messages %}{{ m.content }}{% endfor %}",
                    ),
            )?,
        ),
    ])
}

#[test]
fn fuzz_seeds_are_current() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var("FORGE_WRITE_SEEDS").is_ok_and(|v| v == "1");
    for (name, bytes) in seeds()? {
        GgufFile::from_bytes(&bytes[..])?;
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).expect("create fuzz/seeds");
            std::fs::write(&path, &bytes).expect("write seed");
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (FORGE_WRITE_SEEDS=1 writes the seeds)",
                    path.display()
                )
            });
            assert_eq!(
                committed,
                bytes,
                "{} is stale: run with FORGE_WRITE_SEEDS=1",
                path.display()
            );
        }
    }
    Ok(())
}
