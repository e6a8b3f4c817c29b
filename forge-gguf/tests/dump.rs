//! `forge_gguf::dump` against gguf-py's reader (tests/reference/dump_ref.py),
//! and the dump formats on a small synthetic file.

mod common;

use std::process::Command;

use forge_gguf::{Array, GgmlType, GgufFile, GgufWriter, dump};
use serde_json::Value as Json;

#[test]
fn json_dump_matches_gguf_py_on_smollm2() {
    let Some(model) = common::peer(common::SMOLLM2) else {
        return;
    };
    let Some(python) = common::peer("venv/bin/python") else {
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/dump_ref.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&model)
        .output()
        .expect("run dump_ref.py");
    assert!(
        out.status.success(),
        "dump_ref.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Json = serde_json::from_slice(&out.stdout).expect("reference json");

    let file = GgufFile::open(&model).unwrap();
    let ours: Json = serde_json::from_str(&dump::to_json(&file)).expect("our json");

    for key in ["version", "alignment", "data_offset"] {
        assert_eq!(ours[key], reference[key], "{key}");
    }
    let (ref_meta, our_meta) = (
        reference["metadata"].as_array().unwrap(),
        ours["metadata"].as_array().unwrap(),
    );
    assert_eq!(our_meta.len(), ref_meta.len(), "metadata count");
    assert_eq!(ours["metadata_count"], ref_meta.len());
    for (r, o) in ref_meta.iter().zip(our_meta) {
        // Every field gguf-py gives (key, type, element type, length, values) is equal.
        for (field, want) in r.as_object().unwrap() {
            assert_eq!(&o[field], want, "metadata `{}` field `{field}`", r["key"]);
        }
    }
    let (ref_t, our_t) = (
        reference["tensors"].as_array().unwrap(),
        ours["tensors"].as_array().unwrap(),
    );
    assert_eq!(our_t.len(), 272);
    assert_eq!(
        our_t, ref_t,
        "tensor names, types, shapes, offsets and sizes"
    );
}

#[test]
fn text_dump_of_smollm2() {
    let Some(model) = common::peer(common::SMOLLM2) else {
        return;
    };
    let file = GgufFile::open(&model).unwrap();
    let text = dump::to_text(&file);
    for line in [
        "gguf v3, little-endian, alignment 32, 33 metadata keys, 272 tensors, data section at byte 1785664",
        "  llama.block_count: u32 = 30\n",
        "  general.architecture: string = \"llama\"\n",
        "  tokenizer.ggml.add_bos_token: bool = false\n",
        "  llama.rope.freq_base: f32 = 100000.0\n",
        "  general.languages: array of string[1] = [\"en\"]\n",
        "  tokenizer.ggml.tokens: array of string[49152] = [\"<|endoftext|>\", \"<|im_start|>\",",
        "\"<gh_stars>\", ... 49144 more]\n",
        "  tokenizer.ggml.token_type: array of i32[49152] = [3, 3, 3, 3, 3, 3, 3, 3, ... 49144 more]\n",
    ] {
        assert!(
            text.contains(line),
            "missing {line:?} in\n{}",
            &text[..3000.min(text.len())]
        );
    }
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "tensors:")
        .skip(1)
        .collect();
    assert_eq!(table.len(), 273, "header + 272 rows");
    let head: Vec<&str> = table[0].split_whitespace().collect();
    assert_eq!(head, ["index", "name", "type", "shape", "offset", "bytes"]);
    let first: Vec<&str> = table[1].split_whitespace().collect();
    assert_eq!(
        first,
        [
            "0",
            "token_embd.weight",
            "Q8_0",
            "[576,",
            "49152]",
            "0",
            "30081024"
        ]
    );
}

#[test]
fn dumps_of_a_small_file() {
    let mut w = GgufWriter::new()
        .with_metadata("a.count", 3u32)
        .with_metadata("a.nan", f32::NAN)
        .with_metadata("a.long", (0..40u16).collect::<Vec<_>>())
        .with_metadata(
            "a.nested",
            vec![Array::U8(vec![1, 2]), Array::String(vec!["x".into()])],
        )
        .with_metadata("a.text", "x".repeat(500))
        .with_tensor("w", [2u64, 3], GgmlType::F16)
        .unwrap()
        .write_to(Vec::new())
        .unwrap();
    w.write_tensor(&[0; 12]).unwrap();
    let file = GgufFile::from_bytes(w.finish().unwrap()).unwrap();

    let text = dump::to_text(&file);
    assert!(text.contains("  a.count: u32 = 3\n"), "{text}");
    assert!(text.contains("  a.nan: f32 = NaN\n"), "{text}");
    assert!(
        text.contains("  a.long: array of u16[40] = [0, 1, 2, 3, 4, 5, 6, 7, ... 32 more]\n"),
        "{text}"
    );
    assert!(
        text.contains("  a.nested: array of array[2] = [[1, 2], [\"x\"]]\n"),
        "{text}"
    );
    assert!(text.contains("... (500 bytes)\n"), "{text}");

    let json: Json = serde_json::from_str(&dump::to_json(&file)).unwrap();
    let meta = json["metadata"].as_array().unwrap();
    assert_eq!(
        meta[0],
        serde_json::json!({"key": "a.count", "type": "u32", "value": 3})
    );
    assert_eq!(meta[1]["value"], "NaN");
    assert_eq!(meta[2]["length"], 40);
    assert_eq!(meta[2]["truncated"], true);
    assert_eq!(meta[2]["value"].as_array().unwrap().len(), dump::ARRAY_HEAD);
    assert_eq!(meta[3]["value"][1]["element_type"], "string");
    assert_eq!(
        meta[4]["value"].as_str().unwrap().len(),
        500,
        "json keeps strings whole"
    );
    assert_eq!(
        json["tensors"][0],
        serde_json::json!({"index": 0, "name": "w", "type": "F16", "shape": [2, 3], "offset": 0, "bytes": 12})
    );
    // Stable: the same file dumps to the same bytes.
    assert_eq!(dump::to_json(&file), dump::to_json(&file));
}
