//! Write → read round trips (property-based and by example), typed access,
//! and the writer's own checks.

mod common;

use forge_gguf::{Array, Error, GgmlType, GgufFile, GgufWriter, Metadata, Value, ValueType};
use proptest::prelude::*;

/// Deterministic filler bytes.
fn bytes(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// Writes `plan` with `data(i)` for tensor i into memory.
fn write_mem(plan: GgufWriter, data: impl Fn(usize, u64) -> Vec<u8>) -> Vec<u8> {
    let mut w = plan.write_to(Vec::new()).expect("header");
    let lens: Vec<u64> = w.tensor_infos().iter().map(|t| t.byte_len()).collect();
    for (i, len) in lens.into_iter().enumerate() {
        w.write_tensor(&data(i, len)).expect("tensor data");
    }
    w.finish().expect("finish")
}

/// Re-writes a parsed file through `GgufWriter::from_file`.
fn rewrite<D: AsRef<[u8]>>(file: &GgufFile<D>) -> Vec<u8> {
    let mut w = GgufWriter::from_file(file)
        .write_to(Vec::new())
        .expect("header");
    for t in file.tensors() {
        w.write_tensor(t.data()).expect("tensor data");
    }
    w.finish().expect("finish")
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        (-1e30f32..1e30).prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,24}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        (-1e300f64..1e300).prop_map(Value::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Array::U8),
        prop::collection::vec(any::<i8>(), 0..10).prop_map(Array::I8),
        prop::collection::vec(any::<u16>(), 0..10).prop_map(Array::U16),
        prop::collection::vec(any::<i16>(), 0..10).prop_map(Array::I16),
        prop::collection::vec(any::<u32>(), 0..10).prop_map(Array::U32),
        prop::collection::vec(any::<i32>(), 0..40).prop_map(Array::I32),
        prop::collection::vec(-1e30f32..1e30, 0..10).prop_map(Array::F32),
        prop::collection::vec(any::<bool>(), 0..10).prop_map(Array::Bool),
        prop::collection::vec(".{0,12}", 0..40).prop_map(Array::String),
        prop::collection::vec(any::<u64>(), 0..10).prop_map(Array::U64),
        prop::collection::vec(any::<i64>(), 0..10).prop_map(Array::I64),
        prop::collection::vec(-1e300f64..1e300, 0..10).prop_map(Array::F64),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![3 => scalar(), 1 => array().prop_map(Value::Array)]
}

#[derive(Debug, Clone)]
struct TensorSpec {
    shape: Vec<u64>,
    ty: GgmlType,
    seed: u64,
}

fn tensor_spec() -> impl Strategy<Value = TensorSpec> {
    let ty = prop::sample::select(vec![
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::I8,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ]);
    (
        ty,
        1..3u64,
        prop::collection::vec(1..5u64, 0..3),
        any::<u64>(),
    )
        .prop_map(|(ty, blocks, rest, seed)| {
            let mut shape = vec![blocks * ty.block_size() as u64];
            shape.extend(rest);
            TensorSpec { shape, ty, seed }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn write_then_read_is_identity(
        kvs in prop::collection::vec(("[a-z]{1,8}(\\.[a-z_]{1,8}){0,2}", value()), 0..12),
        tensors in prop::collection::vec(tensor_spec(), 0..6),
        alignment in prop::sample::select(vec![None, Some(1u32), Some(8), Some(32), Some(64), Some(4096)]),
        version in 2..=3u32,
    ) {
        let mut plan = GgufWriter::new().with_version(version).unwrap();
        for (k, v) in &kvs {
            plan = plan.with_metadata(k.clone(), v.clone());
        }
        if let Some(a) = alignment {
            plan = plan.with_alignment(a).unwrap();
        }
        for (i, t) in tensors.iter().enumerate() {
            plan = plan.with_tensor(format!("t{i}.weight"), t.shape.clone(), t.ty).unwrap();
        }
        let expected_meta: Metadata = plan.metadata().clone();
        let image = write_mem(plan, |i, len| bytes(tensors[i].seed, len));

        let file = GgufFile::from_bytes(&image[..]).unwrap();
        prop_assert_eq!(file.version(), version);
        prop_assert_eq!(file.metadata(), &expected_meta);
        let align = u64::from(alignment.unwrap_or(32));
        prop_assert_eq!(file.alignment(), align);
        prop_assert_eq!(file.data_offset() % align, 0);
        prop_assert_eq!(file.tensor_count(), tensors.len());
        for (i, (t, spec)) in file.tensors().zip(&tensors).enumerate() {
            prop_assert_eq!(t.name(), format!("t{i}.weight"));
            prop_assert_eq!(t.shape(), &spec.shape[..]);
            prop_assert_eq!(t.ggml_type(), spec.ty);
            prop_assert_eq!(t.info().offset() % align, 0);
            prop_assert_eq!(t.data(), &bytes(spec.seed, t.info().byte_len())[..]);
        }
        // File order iteration and lookup agree.
        for t in file.tensors() {
            prop_assert_eq!(file.tensor(t.name()).map(|x| x.index()), Some(t.index()));
        }
        // read -> write reproduces the image byte for byte.
        prop_assert_eq!(rewrite(&file), image);
    }
}

#[test]
fn typed_access_and_errors() {
    let image = write_mem(
        GgufWriter::new()
            .with_metadata("llama.block_count", 30u64)
            .with_metadata("general.name", "tiny")
            .with_metadata("tokenizer.ggml.tokens", vec!["a", "b"])
            .with_metadata("tokenizer.ggml.scores", vec![0.5f32, -1.0])
            .with_metadata(
                "nested",
                vec![Array::U8(vec![1, 2]), Array::String(vec!["x".into()])],
            ),
        |_, _| Vec::new(),
    );
    let file = GgufFile::from_bytes(image).unwrap();
    assert_eq!(file.get::<u64>("llama.block_count").unwrap(), 30);
    let err = file.get::<u32>("llama.block_count").unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }));
    assert_eq!(
        err.to_string(),
        "metadata key `llama.block_count` is a u64, not a u32"
    );
    let err = file.get::<i32>("general.name").unwrap_err();
    assert_eq!(
        err.to_string(),
        "metadata key `general.name` is a string, not an i32"
    );
    let err = file.get::<Vec<u32>>("tokenizer.ggml.tokens").unwrap_err();
    assert_eq!(
        err.to_string(),
        "metadata key `tokenizer.ggml.tokens` is an array of string, not an array of u32"
    );
    let err = file.get::<u32>("missing.key").unwrap_err();
    assert!(matches!(&err, Error::MissingKey { key } if key == "missing.key"));
    assert_eq!(file.get_opt::<u32>("missing.key").unwrap(), None);
    assert!(file.get_opt::<u32>("general.name").is_err());

    assert_eq!(file.get::<&str>("general.name").unwrap(), "tiny");
    assert_eq!(file.get::<String>("general.name").unwrap(), "tiny");
    assert_eq!(
        file.get::<Vec<String>>("tokenizer.ggml.tokens").unwrap(),
        ["a", "b"]
    );
    assert_eq!(
        file.get::<&[String]>("tokenizer.ggml.tokens")
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        file.get::<&[f32]>("tokenizer.ggml.scores").unwrap(),
        &[0.5, -1.0]
    );
    let nested = file.get::<&Array>("nested").unwrap();
    assert_eq!(nested.element_type(), ValueType::Array);
    assert_eq!(nested.type_name(), "array of array");
    let keys: Vec<&str> = file.metadata().keys().collect();
    assert_eq!(
        keys,
        [
            "llama.block_count",
            "general.name",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "nested"
        ]
    );
}

#[test]
fn padding_is_zero_and_offsets_follow_llama_cpp_layout() {
    let image = write_mem(
        GgufWriter::new()
            .with_tensor("a", [3u64], GgmlType::F32)
            .unwrap()
            .with_tensor("b", [5u64], GgmlType::I8)
            .unwrap(),
        |_, len| vec![0xAB; len as usize],
    );
    let file = GgufFile::from_bytes(&image[..]).unwrap();
    let offsets: Vec<u64> = file.tensor_infos().iter().map(|t| t.offset()).collect();
    assert_eq!(offsets, [0, 32]);
    let d = file.data_offset() as usize;
    assert_eq!(image.len(), d + 64, "the last tensor is padded too");
    assert!(image[d + 12..d + 32].iter().all(|&b| b == 0));
    assert!(image[d + 37..].iter().all(|&b| b == 0));
    let header_end = image.len() - 64;
    assert_eq!(header_end % 32, 0);
}

#[test]
fn writer_rejects_bad_plans_and_data() {
    let plan = GgufWriter::new()
        .with_tensor("x", [32u64, 2], GgmlType::Q8_0)
        .unwrap();
    let dup = plan
        .clone()
        .with_tensor("x", [4u64], GgmlType::F32)
        .unwrap_err();
    assert!(
        dup.to_string().contains("duplicate tensor name `x`"),
        "{dup}"
    );
    let five = GgufWriter::new()
        .with_tensor("y", [1u64, 1, 1, 1, 1], GgmlType::F32)
        .unwrap_err();
    assert!(five.to_string().contains("5 dimensions"), "{five}");
    let zero = GgufWriter::new()
        .with_tensor("y", [4u64, 0], GgmlType::F32)
        .unwrap_err();
    assert!(zero.to_string().contains("dimension 1 is zero"), "{zero}");
    let rows = GgufWriter::new()
        .with_tensor("y", [16u64, 4], GgmlType::Q8_0)
        .unwrap_err();
    assert!(
        rows.to_string()
            .contains("not a multiple of the Q8_0 block size 32"),
        "{rows}"
    );
    let overflow = GgufWriter::new()
        .with_tensor("y", [u64::MAX, 2], GgmlType::F32)
        .unwrap_err();
    assert!(overflow.to_string().contains("overflows"), "{overflow}");
    let long = GgufWriter::new()
        .with_tensor("n".repeat(64), [1u64], GgmlType::F32)
        .unwrap_err();
    assert!(long.to_string().contains("the limit is 63"), "{long}");
    assert!(GgufWriter::new().with_alignment(24).is_err());
    assert!(GgufWriter::new().with_alignment(0).is_err());
    assert!(GgufWriter::new().with_version(1).is_err());
    let bad_align = GgufWriter::new().with_metadata("general.alignment", 32u64);
    let err = bad_align.write_to(Vec::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid gguf output: `general.alignment` is a u64, must be a u32"
    );

    let mut w = plan.clone().write_to(Vec::new()).unwrap();
    let err = w.write_tensor(&[0; 10]).unwrap_err();
    assert!(
        err.to_string()
            .contains("tensor `x` takes 68 bytes of data, got 10"),
        "{err}"
    );
    let err = w.copy_tensor(&[0u8; 50][..]).unwrap_err();
    assert!(
        err.to_string().contains("ended after 50 of 68 bytes"),
        "{err}"
    );

    let w = plan.clone().write_to(Vec::new()).unwrap();
    let err = w.finish().unwrap_err();
    assert!(err.to_string().contains("`x` is missing its data"), "{err}");

    let mut w = plan.write_to(Vec::new()).unwrap();
    w.copy_tensor(&[7u8; 100][..]).unwrap();
    assert!(
        w.write_tensor(&[])
            .unwrap_err()
            .to_string()
            .contains("already written")
    );
    let image = w.finish().unwrap();
    let file = GgufFile::from_bytes(&image[..]).unwrap();
    assert_eq!(file.tensor("x").unwrap().data(), &[7u8; 68][..]);
}

#[test]
fn files_are_written_atomically() {
    let path = common::temp_path("atomic.gguf");
    let _ = std::fs::remove_file(&path);
    let plan = GgufWriter::new()
        .with_metadata("general.architecture", "llama")
        .with_tensor("w", [8u64], GgmlType::F16)
        .unwrap();

    // Abandoned: nothing appears, no temporary file is left.
    let mut out = plan.clone().create(&path).unwrap();
    out.write_tensor(&[1; 16]).unwrap();
    drop(out);
    assert!(!path.exists());
    let dir = path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("atomic.gguf.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Finished: the file is complete.
    let mut out = plan.create(&path).unwrap();
    assert_eq!(out.next_tensor().map(|t| t.name()), Some("w"));
    out.write_tensor(&[2; 16]).unwrap();
    out.finish().unwrap();
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.path(), Some(path.as_path()));
    assert_eq!(file.get::<&str>("general.architecture").unwrap(), "llama");
    assert_eq!(file.tensor("w").unwrap().data(), &[2; 16]);
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn open_errors_name_the_path() {
    let missing = common::temp_path("does-not-exist.gguf");
    let err = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("does-not-exist.gguf"), "{err}");

    let bad = common::temp_path("bad-magic.gguf");
    std::fs::write(&bad, b"GGML\x03\0\0\0").unwrap();
    let err = GgufFile::open(&bad).unwrap_err();
    assert!(matches!(err, Error::BadMagic { .. }));
    let loc = err.location().unwrap();
    assert_eq!(loc.path.as_deref(), Some(bad.as_path()));
    assert!(
        err.to_string()
            .starts_with(&format!("{}: byte 0: bad magic", bad.display())),
        "{err}"
    );

    let empty = common::temp_path("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let err = GgufFile::open(&empty).unwrap_err();
    assert!(
        matches!(err, Error::Truncated { what: "magic", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("empty.gguf: byte 0"), "{err}");
    for p in [bad, empty] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn metadata_insert_keeps_order() {
    let mut m: Metadata = [
        ("a", Value::U8(1)),
        ("b", Value::U8(2)),
        ("c", Value::U8(3)),
    ]
    .into_iter()
    .collect();
    assert_eq!(m.insert("b", 20u8), Some(Value::U8(2)));
    assert_eq!(m.remove("a"), Some(Value::U8(1)));
    m.insert("d", 4u8);
    let got: Vec<(&str, &Value)> = m.iter().collect();
    assert_eq!(
        got,
        [
            ("b", &Value::U8(20)),
            ("c", &Value::U8(3)),
            ("d", &Value::U8(4))
        ]
    );
    assert_eq!(m.get::<u8>("d").unwrap(), 4);
}
