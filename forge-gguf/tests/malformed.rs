//! Malformed and hostile inputs: each gives the right error kind, naming the
//! byte offset and the key or tensor; none panics or allocates beyond the input.

mod common;

use forge_gguf::{Error, GgmlType, GgufFile, GgufWriter, MAX_ARRAY_DEPTH};

/// A hand-made GGUF image, field by field.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn pos(&self) -> u64 {
        self.0.len() as u64
    }
    fn parse(&self) -> Error {
        GgufFile::from_bytes(&self.0[..]).expect_err("malformed input must not parse")
    }
}

fn offset_of(err: &Error) -> u64 {
    err.location()
        .unwrap_or_else(|| panic!("no location in {err}"))
        .offset
}

/// Asserts the message mentions the byte offset and every `needle`.
fn mentions(err: &Error, offset: u64, needles: &[&str]) {
    let msg = err.to_string();
    assert_eq!(offset_of(err), offset, "{msg}");
    assert!(msg.contains(&format!("byte {offset}")), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "`{msg}` does not mention `{n}`");
    }
}

/// A valid file exercising strings, arrays, nested arrays and two tensors.
fn valid_image() -> Vec<u8> {
    let plan = GgufWriter::new()
        .with_metadata("general.architecture", "llama")
        .with_metadata("llama.block_count", 2u32)
        .with_metadata("tokenizer.ggml.tokens", vec!["<s>", "</s>", "a"])
        .with_metadata(
            "x.nested",
            vec![vec![1u8, 2].into(), forge_gguf::Array::I64(vec![-1])],
        )
        .with_metadata("x.flag", true)
        .with_tensor("a.weight", [4u64, 2], GgmlType::F32)
        .expect("valid plan")
        .with_tensor("b.weight", [32u64], GgmlType::Q8_0)
        .expect("valid plan");
    let mut w = plan.write_to(Vec::new()).expect("valid plan");
    w.write_tensor(&[1; 32]).expect("valid plan");
    w.write_tensor(&[2; 34]).expect("valid plan");
    w.finish().expect("valid plan")
}

#[test]
fn truncated_at_every_byte() {
    let image = valid_image();
    let file = GgufFile::from_bytes(&image[..]).unwrap();
    let data_offset = file.data_offset() as usize;
    let last_end = data_offset + 32 + 34;
    for cut in 0..image.len() {
        let result = GgufFile::from_bytes(&image[..cut]);
        if cut >= last_end {
            // Only trailing padding is missing: still a complete file.
            assert!(result.is_ok(), "cut at {cut}: {:?}", result.err());
            continue;
        }
        let err = result.expect_err("truncated input must not parse");
        let at = offset_of(&err);
        assert!(at <= cut as u64, "cut {cut}: error at {at}: {err}");
        match err {
            Error::Truncated { .. } | Error::ImplausibleCount { .. } => {
                assert!(cut <= data_offset, "{err}")
            }
            Error::TensorOutOfBounds { .. } => assert!(cut >= data_offset - 32, "{err}"),
            other => panic!("cut at {cut}: unexpected {other}"),
        }
    }
}

#[test]
fn truncated_names_the_field() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(100).0.extend_from_slice(b"general.architecture");
    let err = r.parse();
    assert!(
        matches!(
            err,
            Error::Truncated {
                what: "key",
                needed: 100,
                available: 20,
                ..
            }
        ),
        "{err}"
    );
    mentions(&err, 32, &["key needs 100 bytes, 20 left"]);
}

#[test]
fn bad_magic() {
    let err = GgufFile::from_bytes(&b"GGML\x03\0\0\0"[..]).unwrap_err();
    assert!(matches!(
        err,
        Error::BadMagic {
            found: [b'G', b'G', b'M', b'L'],
            ..
        }
    ));
    mentions(&err, 0, &["bad magic"]);
}

#[test]
fn bad_versions() {
    for v in [0u32, 1, 4, 99] {
        let err = Raw::header(v, 0, 0).parse();
        assert!(
            matches!(err, Error::UnsupportedVersion { version, .. } if version == v),
            "{err}"
        );
        mentions(&err, 4, &[&format!("unsupported gguf version {v}")]);
    }
    let mut r = Raw(b"GGUF".to_vec());
    r.0.extend_from_slice(&3u32.to_be_bytes());
    r.0.extend_from_slice(&0u64.to_be_bytes());
    r.0.extend_from_slice(&0u64.to_be_bytes());
    let err = r.parse();
    assert!(matches!(err, Error::BigEndian { version: 3, .. }), "{err}");
    mentions(&err, 4, &["big-endian"]);
    // Version 2 reads.
    let mut v2 = Raw::header(2, 0, 1);
    v2.kv_u32("a", 1);
    let file = GgufFile::from_bytes(&v2.0[..]).unwrap();
    assert_eq!((file.version(), file.get::<u32>("a").unwrap()), (2, 1));
}

#[test]
fn implausible_counts() {
    let err = Raw::header(3, u64::MAX, 0).parse();
    assert!(
        matches!(
            err,
            Error::ImplausibleCount {
                what: "tensor count",
                ..
            }
        ),
        "{err}"
    );
    mentions(&err, 8, &["tensor count 18446744073709551615"]);
    let mut r = Raw::header(3, 0, 1 << 40);
    r.zeros(100);
    let err = r.parse();
    assert!(
        matches!(
            err,
            Error::ImplausibleCount {
                what: "metadata count",
                ..
            }
        ),
        "{err}"
    );
    mentions(&err, 16, &["metadata count"]);
}

#[test]
fn huge_string_lengths() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).zeros(8);
    let err = r.parse();
    assert!(
        matches!(err, Error::StringTooLong { what: "key", .. }),
        "{err}"
    );
    mentions(
        &err,
        24,
        &["key length 18446744073709551615 exceeds the limit of 65535 bytes"],
    );

    let mut r = Raw::header(3, 0, 1);
    r.str("general.name").u32(8).u64(1 << 40);
    let err = r.parse();
    assert!(
        matches!(err, Error::StringTooLong { what: "string", .. }),
        "{err}"
    );
    mentions(
        &err,
        24 + 8 + 12 + 4,
        &["string length 1099511627776 exceeds the limit"],
    );

    // Within the limit but past the end of the input.
    let mut r = Raw::header(3, 0, 1);
    r.str("general.name").u32(8).u64(1 << 20).zeros(5);
    let err = r.parse();
    assert!(
        matches!(err, Error::Truncated { what: "string", .. }),
        "{err}"
    );

    let mut r = Raw::header(3, 1, 0);
    r.tensor(&"t".repeat(64), &[1], 0, 0);
    let err = r.parse();
    assert!(
        matches!(
            err,
            Error::StringTooLong {
                what: "tensor name",
                len: 64,
                ..
            }
        ),
        "{err}"
    );
    mentions(&err, 24, &["tensor name length 64"]);
}

#[test]
fn huge_array_lengths() {
    let mut r = Raw::header(3, 0, 1);
    r.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(1 << 40);
    let at = r.pos() - 8;
    let err = r.parse();
    assert!(
        matches!(
            err,
            Error::ArrayTooLong {
                len: 1099511627776,
                ..
            }
        ),
        "{err}"
    );
    mentions(&err, at, &["array length 1099511627776 exceeds the limit"]);

    // Under the cap, but the input cannot hold the elements: no allocation, an error.
    let mut r = Raw::header(3, 0, 1);
    r.str("scores").u32(9).u32(10).u64(1 << 24).zeros(64);
    let err = r.parse();
    assert!(
        matches!(err, Error::Truncated { what: "array elements", needed, .. } if needed == 8 << 24),
        "{err}"
    );
}

#[test]
fn bad_type_tags() {
    let mut r = Raw::header(3, 0, 1);
    r.str("general.weird").u32(13).u32(0);
    let err = r.parse();
    assert!(matches!(err, Error::BadValueType { tag: 13, .. }), "{err}");
    mentions(
        &err,
        24 + 8 + 13,
        &["unknown metadata value type 13", "`general.weird`"],
    );

    let mut r = Raw::header(3, 0, 1);
    r.str("arr").u32(9).u32(77).u64(0);
    let err = r.parse();
    assert!(matches!(err, Error::BadValueType { tag: 77, .. }), "{err}");
    mentions(&err, 24 + 8 + 3 + 4, &["type 77", "`arr`"]);
}

#[test]
fn nested_arrays_deeper_than_the_limit() {
    let depth = MAX_ARRAY_DEPTH + 1;
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..depth - 1 {
        r.u32(9).u64(1);
    }
    let deepest = r.pos();
    r.u32(4).u64(0);
    let err = r.parse();
    assert!(matches!(err, Error::ArrayTooDeep { .. }), "{err}");
    mentions(&err, deepest, &["nested deeper than 8"]);

    // Exactly at the limit is fine.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..MAX_ARRAY_DEPTH - 1 {
        r.u32(9).u64(1);
    }
    r.u32(4).u64(0);
    GgufFile::from_bytes(&r.0[..]).unwrap();
}

#[test]
fn bad_bool_and_utf8() {
    let mut r = Raw::header(3, 0, 1);
    r.str("flag").u32(7).u8(2);
    let err = r.parse();
    assert!(matches!(err, Error::BadBool { byte: 2, .. }), "{err}");
    mentions(&err, 24 + 12 + 4, &["`flag`"]);

    let mut r = Raw::header(3, 0, 1);
    r.u64(2).0.extend_from_slice(&[0xff, 0xfe]);
    r.u32(4).u32(0);
    let err = r.parse();
    assert!(
        matches!(err, Error::InvalidUtf8 { what: "key", .. }),
        "{err}"
    );
    mentions(&err, 32, &["not valid utf-8"]);
}

#[test]
fn duplicate_keys() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("llama.block_count", 1);
    let second = r.pos();
    r.kv_u32("llama.block_count", 2);
    let err = r.parse();
    assert!(matches!(err, Error::DuplicateKey { .. }), "{err}");
    mentions(
        &err,
        second,
        &["duplicate metadata key `llama.block_count`"],
    );
}

#[test]
fn bad_alignments() {
    for (value, why) in [
        (0u32, "is 0"),
        (24, "is 24, must be a non-zero power of two"),
    ] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", value);
        let err = r.parse();
        assert!(matches!(err, Error::BadAlignment { .. }), "{err}");
        mentions(&err, 24 + 8 + 17 + 4, &["`general.alignment`", why]);
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(10).u64(32);
    let err = r.parse();
    mentions(&err, 24 + 8 + 17 + 4, &["is a u64, must be a u32"]);
    // A valid non-default alignment is honoured.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64)
        .tensor("t", &[16], 0, 0)
        .pad(64)
        .zeros(64);
    let file = GgufFile::from_bytes(&r.0[..]).unwrap();
    assert_eq!((file.alignment(), file.data_offset() % 64), (64, 0));
}

#[test]
fn tensor_info_errors() {
    // n_dims 5
    let mut r = Raw::header(3, 1, 0);
    r.tensor("blk.0.x", &[1, 1, 1, 1, 1], 0, 0)
        .pad(32)
        .zeros(32);
    let err = r.parse();
    assert!(matches!(err, Error::TooManyDims { n_dims: 5, .. }), "{err}");
    mentions(&err, 24 + 8 + 7, &["`blk.0.x`", "5 dimensions"]);

    // zero dim
    let mut r = Raw::header(3, 1, 0);
    r.tensor("z", &[4, 0], 0, 0).pad(32).zeros(32);
    let err = r.parse();
    assert!(matches!(err, Error::BadShape { .. }), "{err}");
    mentions(&err, 24, &["`z`", "dimension 1 is zero"]);

    // overflowing dims
    let mut r = Raw::header(3, 1, 0);
    r.tensor("big", &[1 << 32, 1 << 32, 1 << 32], 0, 0)
        .pad(32)
        .zeros(32);
    let err = r.parse();
    assert!(matches!(err, Error::BadShape { .. }), "{err}");
    mentions(&err, 24, &["`big`", "overflows"]);

    // bytes overflow even though the element count fits
    let mut r = Raw::header(3, 1, 0);
    r.tensor("big", &[1 << 31, 1 << 31, 4], 28, 0)
        .pad(32)
        .zeros(32);
    let err = r.parse();
    mentions(&err, 24, &["`big`", "overflow"]);

    // row not a whole number of blocks
    let mut r = Raw::header(3, 1, 0);
    r.tensor("q", &[16, 2], GgmlType::Q8_0.id(), 0)
        .pad(32)
        .zeros(64);
    let err = r.parse();
    mentions(
        &err,
        24,
        &["`q`", "not a multiple of the Q8_0 block size 32"],
    );

    // unknown ggml type (4 was Q4_2, removed)
    let mut r = Raw::header(3, 1, 0);
    r.tensor("old", &[32], 4, 0).pad(32).zeros(64);
    let err = r.parse();
    assert!(matches!(err, Error::UnknownGgmlType { id: 4, .. }), "{err}");
    mentions(
        &err,
        24 + 8 + 3 + 4 + 8,
        &["tensor `old` has unknown ggml type id 4"],
    );
}

#[test]
fn tensor_offset_errors() {
    // out of bounds
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[8], 0, 0);
    let field = r.pos() - 8;
    r.pad(32).zeros(16);
    let err = r.parse();
    assert!(
        matches!(
            err,
            Error::TensorOutOfBounds {
                len: 32,
                data_len: 16,
                ..
            }
        ),
        "{err}"
    );
    mentions(
        &err,
        field,
        &["`t`", "outside the data section of 16 bytes"],
    );

    // offset + len overflows u64
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[8], 0, u64::MAX - 31);
    let field = r.pos() - 8;
    r.pad(32).zeros(64);
    let err = r.parse();
    assert!(matches!(err, Error::TensorOutOfBounds { .. }), "{err}");
    mentions(&err, field, &["`t`"]);

    // misaligned
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[8], 0, 4);
    let field = r.pos() - 8;
    r.pad(32).zeros(64);
    let err = r.parse();
    assert!(
        matches!(
            err,
            Error::MisalignedOffset {
                offset: 4,
                alignment: 32,
                ..
            }
        ),
        "{err}"
    );
    mentions(&err, field, &["`t`", "not a multiple of the alignment 32"]);

    // overlapping
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32);
    let field = r.pos() - 8;
    r.pad(32).zeros(128);
    let err = r.parse();
    assert!(matches!(err, Error::OverlappingTensors { .. }), "{err}");
    mentions(&err, field, &["`b` overlaps data of tensor `a`"]);

    // data section start past the end of the input
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", &[1], 0, 0);
    let infos_end = r.pos();
    let err = r.parse();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    mentions(&err, infos_end, &["padding before the data section"]);
}

#[test]
fn duplicate_tensor_names() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[8], 0, 0);
    let second = r.pos();
    r.tensor("w", &[8], 0, 32).pad(32).zeros(64);
    let err = r.parse();
    assert!(matches!(err, Error::DuplicateTensor { .. }), "{err}");
    mentions(&err, second, &["duplicate tensor name `w`"]);
}

#[test]
fn no_tensors_needs_no_data_padding() {
    // llama.cpp accepts a metadata-only file that ends right after the infos.
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("a", 7);
    let file = GgufFile::from_bytes(&r.0[..]).unwrap();
    assert_eq!(file.tensor_count(), 0);
    assert_eq!(file.get::<u32>("a").unwrap(), 7);
}

/// Every input that once crashed or misbehaved under the fuzzer parses to a
/// result (either way) without panicking.
#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(file) = GgufFile::from_bytes(&bytes[..]) {
            let _ = forge_gguf::dump::to_json(&file);
            for t in file.tensors() {
                assert_eq!(t.data().len() as u64, t.info().byte_len());
            }
        }
        n += 1;
    }
    eprintln!("{n} fuzz regression inputs");
}
