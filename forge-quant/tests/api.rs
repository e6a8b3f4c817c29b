//! The runtime API's contract: shapes, lengths and unsupported types are
//! errors that name what was expected, never panics or truncation.

use forge_quant::{
    BlockFormat, Error, GgmlType, Q4_K, Q8_0, SUPPORTED_TYPES, dequantize, dequantize_into,
    dequantize_row_into, is_supported, quantize, quantize_into, quantize_row_into,
};

#[test]
fn rows_that_are_not_whole_blocks_are_errors() {
    let x = vec![0.5f32; 300];
    let err = quantize(GgmlType::Q4_K, &x, 300).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotBlockAligned {
                n: 300,
                block: 256,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "300 elements of Q4_K is not a multiple of its block size 256"
    );

    let err = quantize(GgmlType::Q8_0, &x, 64).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotRowAligned {
                n: 300,
                n_per_row: 64,
                ..
            }
        ),
        "{err}"
    );
    assert!(quantize(GgmlType::Q8_0, &x, 0).is_err());
    assert_eq!(quantize(GgmlType::Q8_0, &[], 0).unwrap(), Vec::<u8>::new());
    assert_eq!(
        quantize(GgmlType::Q8_0, &x[..288], 96).unwrap().len(),
        9 * 34
    );
}

#[test]
fn byte_buffers_of_the_wrong_length_name_expected_and_found() {
    let bytes = vec![0u8; 287];
    let err = dequantize(GgmlType::Q4_K, &bytes, 512).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LengthMismatch {
                expected: 288,
                found: 287,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("expected 288, found 287"), "{err}");

    let err = dequantize(GgmlType::Q4_K, &[0u8; 144], 100).unwrap_err();
    assert!(
        matches!(err, Error::NotBlockAligned { n: 100, .. }),
        "{err}"
    );

    let mut out = vec![0f32; 255];
    let err = dequantize_into(GgmlType::Q4_K, &[0u8; 144], &mut out).unwrap_err();
    assert!(matches!(err, Error::NotBlockAligned { .. }), "{err}");
    let mut out = vec![0f32; 512];
    let err = dequantize_into(GgmlType::Q4_K, &[0u8; 144], &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LengthMismatch {
                expected: 288,
                found: 144,
                ..
            }
        ),
        "{err}"
    );

    let mut dst = vec![0u8; 33];
    let err = quantize_into(GgmlType::Q8_0, &[1.0; 32], 32, &mut dst).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LengthMismatch {
                expected: 34,
                found: 33,
                ..
            }
        ),
        "{err}"
    );

    // the same checks on the large (rayon) path
    let big = vec![0u8; 34 * 4096 - 1];
    let mut out = vec![0f32; 32 * 4096];
    let err = dequantize_into(GgmlType::Q8_0, &big, &mut out).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");
    let mut dst = vec![0u8; 34 * 4096 + 1];
    let err = quantize_into(GgmlType::Q8_0, &vec![1.0; 32 * 4096], 32, &mut dst).unwrap_err();
    assert!(matches!(err, Error::LengthMismatch { .. }), "{err}");

    // single-threaded and trait row functions
    let err = quantize_row_into(GgmlType::Q4_K, &[0.0; 256], &mut [0u8; 143]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LengthMismatch {
                expected: 144,
                found: 143,
                ..
            }
        ),
        "{err}"
    );
    let err = dequantize_row_into(GgmlType::Q4_K, &[0u8; 144], &mut [0f32; 200]).unwrap_err();
    assert!(matches!(err, Error::NotBlockAligned { .. }), "{err}");
    assert!(Q8_0::quantize_row(&[0.0; 33], &mut [0u8; 34]).is_err());
    assert!(Q4_K::dequantize_row(&[0u8; 145], &mut [0f32; 256]).is_err());
}

#[test]
fn types_without_kernels_are_unsupported() {
    for &ty in GgmlType::ALL {
        if is_supported(ty) {
            continue;
        }
        let n = ty.block_size();
        let err = quantize(ty, &vec![0.0; n], n).unwrap_err();
        assert!(
            matches!(err, Error::Unsupported { op: "quantize", .. }),
            "{ty}: {err}"
        );
        let err = dequantize(ty, &vec![0u8; ty.type_size()], n).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unsupported {
                    op: "dequantize",
                    ..
                }
            ),
            "{ty}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!("dequantize is not implemented for {ty}")
        );
    }
    assert_eq!(SUPPORTED_TYPES.len(), 13);
}

#[test]
fn f32_is_a_little_endian_copy() {
    let x = [1.5f32, -0.0, f32::INFINITY, 3e-42];
    let b = quantize(GgmlType::F32, &x, 4).unwrap();
    assert_eq!(
        b,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
    );
    let y = dequantize(GgmlType::F32, &b, 4).unwrap();
    assert_eq!(
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn rayon_and_single_threaded_paths_give_the_same_bytes() {
    let x: Vec<f32> = (0..(1 << 17) + 256 * 3)
        .map(|i| ((i as f32) * 0.013).sin() * (1.0 + (i % 7) as f32))
        .collect();
    for &ty in SUPPORTED_TYPES {
        let par = quantize(ty, &x, 256).unwrap();
        let mut ser = vec![0u8; par.len()];
        quantize_row_into(ty, &x, &mut ser).unwrap();
        assert_eq!(par, ser, "{ty}");
        let a = dequantize(ty, &par, x.len()).unwrap();
        let mut b = vec![0f32; x.len()];
        dequantize_row_into(ty, &par, &mut b).unwrap();
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{ty}"
        );
    }
}

/// Q4_0/Q5_0 take the signed value of largest magnitude from the block, as
/// gguf-py does: an all-zero block starting with −0.0 gets `d = +0.0`
/// (bytes `00 00`), where ggml's C reference, which starts from +0.0, writes
/// `d = −0.0` (`00 80`). Checked against gguf-py by hand; see the guide.
#[test]
fn signed_zero_blocks_follow_gguf_py() {
    let mut x = [0.0f32; 32];
    assert_eq!(
        &quantize(GgmlType::Q4_0, &x, 32).unwrap()[..2],
        &[0x00, 0x80]
    );
    x[0] = -0.0;
    assert_eq!(
        &quantize(GgmlType::Q4_0, &x, 32).unwrap()[..2],
        &[0x00, 0x00]
    );
    assert_eq!(
        &quantize(GgmlType::Q5_0, &x, 32).unwrap()[..2],
        &[0x00, 0x00]
    );
}
