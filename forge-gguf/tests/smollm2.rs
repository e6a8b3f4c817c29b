//! The real SmolLM2-135M-Instruct Q4_1 GGUF (a peer, installed by
//! `cargo xtask peers`): typed reads and a byte-identical read → write.

mod common;

use std::fs::File;
use std::io::{BufReader, Read};

use forge_gguf::{GgmlType, GgufFile, GgufWriter};

#[test]
fn reads_smollm2_metadata_and_tensors() {
    let Some(path) = common::peer(common::SMOLLM2) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.get::<&str>("general.architecture").unwrap(), "llama");
    assert_eq!(file.get::<u32>("llama.block_count").unwrap(), 30);
    assert_eq!(file.get::<u32>("llama.embedding_length").unwrap(), 576);
    assert!((file.get::<f32>("llama.rope.freq_base").unwrap() - 100_000.0).abs() < 1e-3);
    assert!(!file.get::<bool>("tokenizer.ggml.add_bos_token").unwrap());
    let tokens = file.get::<&[String]>("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49_152);
    assert_eq!(tokens[0], "<|endoftext|>");
    assert_eq!(
        file.get::<&[i32]>("tokenizer.ggml.token_type")
            .unwrap()
            .len(),
        49_152
    );
    assert_eq!(
        file.get::<Vec<String>>("tokenizer.ggml.merges")
            .unwrap()
            .len(),
        48_900
    );
    let err = file.get::<u64>("llama.block_count").unwrap_err();
    assert_eq!(
        err.to_string(),
        "metadata key `llama.block_count` is a u32, not a u64"
    );

    assert_eq!(file.tensor_count(), 272);
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.index(), 0);
    assert_eq!(embd.shape(), &[576, 49_152]);
    assert_eq!(embd.ggml_type(), GgmlType::Q8_0);
    assert_eq!(embd.data().len(), 576 * 49_152 / 32 * 34);
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(
        (q.shape(), q.ggml_type()),
        (&[576u64, 576][..], GgmlType::Q4_1)
    );
    // Tensor data borrows the map: it lies inside the file's bytes.
    let base = file.as_bytes().as_ptr() as usize;
    let at = q.data().as_ptr() as usize - base;
    assert_eq!(at as u64, file.data_offset() + q.info().offset());
}

#[test]
fn smollm2_read_then_write_is_byte_identical() {
    let Some(path) = common::peer(common::SMOLLM2) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let out_path = common::temp_path("smollm2-rewrite.gguf");
    let mut out = GgufWriter::from_file(&file).create(&out_path).unwrap();
    assert_eq!(
        out.tensor_infos(),
        file.tensor_infos(),
        "the writer lays tensors out as the file does"
    );
    for t in file.tensors() {
        out.write_tensor(t.data()).unwrap();
    }
    out.finish().unwrap();

    let (a, b) = (
        std::fs::metadata(&path).unwrap().len(),
        std::fs::metadata(&out_path).unwrap().len(),
    );
    assert_eq!(a, b, "sizes differ");
    let mut ra = BufReader::new(File::open(&path).unwrap());
    let mut rb = BufReader::new(File::open(&out_path).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut pos = 0u64;
    loop {
        let n = ra.read(&mut ba).unwrap();
        if n == 0 {
            break;
        }
        rb.read_exact(&mut bb[..n]).unwrap();
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            panic!("first difference at byte {}", pos + i as u64);
        }
        pos += n as u64;
    }
    std::fs::remove_file(&out_path).unwrap();
}
