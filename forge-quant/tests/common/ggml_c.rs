//! ggml's C reference (`libggml-base.so` from `cargo xtask peers`) through
//! libloading: the `quantize_row_*_ref` / `dequantize_row_*` functions and the
//! f16 / bf16 row conversions. Shared by the tests and the bench.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;

use forge_quant::GgmlType;

pub type QuantizeFn = unsafe extern "C" fn(*const f32, *mut u8, i64);
pub type DequantizeFn = unsafe extern "C" fn(*const u8, *mut f32, i64);

/// The loaded library.
pub struct GgmlC {
    lib: libloading::Library,
}

impl GgmlC {
    /// Loads `libggml-base.so`.
    pub fn load(path: &Path) -> Result<Self, libloading::Error> {
        // SAFETY: loading ggml-base runs no initialisers with preconditions.
        let lib = unsafe { libloading::Library::new(path)? };
        Ok(Self { lib })
    }

    fn names(ty: GgmlType) -> Option<(&'static str, &'static str)> {
        Some(match ty {
            GgmlType::Q4_0 => ("quantize_row_q4_0_ref", "dequantize_row_q4_0"),
            GgmlType::Q4_1 => ("quantize_row_q4_1_ref", "dequantize_row_q4_1"),
            GgmlType::Q5_0 => ("quantize_row_q5_0_ref", "dequantize_row_q5_0"),
            GgmlType::Q5_1 => ("quantize_row_q5_1_ref", "dequantize_row_q5_1"),
            GgmlType::Q8_0 => ("quantize_row_q8_0_ref", "dequantize_row_q8_0"),
            GgmlType::Q2_K => ("quantize_row_q2_K_ref", "dequantize_row_q2_K"),
            GgmlType::Q3_K => ("quantize_row_q3_K_ref", "dequantize_row_q3_K"),
            GgmlType::Q4_K => ("quantize_row_q4_K_ref", "dequantize_row_q4_K"),
            GgmlType::Q5_K => ("quantize_row_q5_K_ref", "dequantize_row_q5_K"),
            GgmlType::Q6_K => ("quantize_row_q6_K_ref", "dequantize_row_q6_K"),
            GgmlType::F16 => ("ggml_fp32_to_fp16_row", "ggml_fp16_to_fp32_row"),
            GgmlType::BF16 => ("ggml_fp32_to_bf16_row_ref", "ggml_bf16_to_fp32_row"),
            _ => return None,
        })
    }

    pub fn quantize_fn(&self, ty: GgmlType) -> QuantizeFn {
        let (q, _) = Self::names(ty).expect("type has a C reference");
        // SAFETY: the symbol has this signature in ggml-quants.h / ggml.h
        // (block pointers and ggml_fp16_t/bf16 pointers are passed as bytes).
        unsafe {
            *self
                .lib
                .get::<QuantizeFn>(q.as_bytes())
                .expect("symbol in libggml-base")
        }
    }

    pub fn dequantize_fn(&self, ty: GgmlType) -> DequantizeFn {
        let (_, d) = Self::names(ty).expect("type has a C reference");
        // SAFETY: as above.
        unsafe {
            *self
                .lib
                .get::<DequantizeFn>(d.as_bytes())
                .expect("symbol in libggml-base")
        }
    }

    /// Whether the C library has a reference for `ty`.
    pub fn supports(ty: GgmlType) -> bool {
        Self::names(ty).is_some()
    }

    /// Quantizes whole blocks with the C reference.
    pub fn quantize(&self, ty: GgmlType, src: &[f32], dst: &mut [u8]) {
        assert_eq!(src.len() % ty.block_size(), 0);
        assert_eq!(dst.len(), src.len() / ty.block_size() * ty.type_size());
        let f = self.quantize_fn(ty);
        // SAFETY: lengths checked above; the C functions write exactly that many blocks.
        unsafe { f(src.as_ptr(), dst.as_mut_ptr(), src.len() as i64) }
    }

    /// Dequantizes whole blocks with the C reference.
    pub fn dequantize(&self, ty: GgmlType, src: &[u8], dst: &mut [f32]) {
        assert_eq!(dst.len() % ty.block_size(), 0);
        assert_eq!(src.len(), dst.len() / ty.block_size() * ty.type_size());
        let f = self.dequantize_fn(ty);
        // SAFETY: lengths checked above.
        unsafe { f(src.as_ptr(), dst.as_mut_ptr(), dst.len() as i64) }
    }
}
