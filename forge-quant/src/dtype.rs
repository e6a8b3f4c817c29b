//! The GGML tensor types as a runtime enum: id, name, block size, bytes per block.
//!
//! Ids and layouts follow `ggml/include/ggml.h` and `ggml/src/ggml-common.h` of
//! ggml 0.25.3 (the llama.cpp vendored by `llama-cpp-python==0.3.36`); the
//! table is checked against gguf-py's `GGML_QUANT_SIZES` in the tests.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

macro_rules! ggml_types {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $block:literal, $bytes:literal; )*) => {
        /// A GGML tensor element type as stored in GGUF files.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[allow(non_camel_case_types)]
        pub enum GgmlType {
            $( $(#[$doc])* $variant = $id, )*
        }

        impl GgmlType {
            /// Every type, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// The type with GGML id `id`.
            pub fn from_id(id: u32) -> Result<Self> {
                match id {
                    $( $id => Ok(Self::$variant), )*
                    _ => Err(Error::UnknownType(id)),
                }
            }

            /// The GGML id stored in GGUF tensor infos.
            pub const fn id(self) -> u32 {
                self as u32
            }

            /// The name llama.cpp and gguf-py use (`Q4_K`, `F16`, ...).
            pub const fn name(self) -> &'static str {
                match self { $( Self::$variant => $name, )* }
            }

            /// Elements per block (1 for plain types).
            pub const fn block_size(self) -> usize {
                match self { $( Self::$variant => $block, )* }
            }

            /// Bytes per block.
            pub const fn type_size(self) -> usize {
                match self { $( Self::$variant => $bytes, )* }
            }
        }
    };
}

ggml_types! {
    /// 32-bit float.
    F32 = 0, "F32", 1, 4;
    /// IEEE half.
    F16 = 1, "F16", 1, 2;
    /// 4-bit, one f16 scale per 32.
    Q4_0 = 2, "Q4_0", 32, 18;
    /// 4-bit, f16 scale and min per 32.
    Q4_1 = 3, "Q4_1", 32, 20;
    /// 5-bit, one f16 scale per 32.
    Q5_0 = 6, "Q5_0", 32, 22;
    /// 5-bit, f16 scale and min per 32.
    Q5_1 = 7, "Q5_1", 32, 24;
    /// 8-bit, one f16 scale per 32.
    Q8_0 = 8, "Q8_0", 32, 34;
    /// 8-bit with f16 scale and scaled sum per 32 (an activation format).
    Q8_1 = 9, "Q8_1", 32, 36;
    /// 2-bit k-quant, super-block of 256.
    Q2_K = 10, "Q2_K", 256, 84;
    /// 3-bit k-quant.
    Q3_K = 11, "Q3_K", 256, 110;
    /// 4-bit k-quant.
    Q4_K = 12, "Q4_K", 256, 144;
    /// 5-bit k-quant.
    Q5_K = 13, "Q5_K", 256, 176;
    /// 6-bit k-quant.
    Q6_K = 14, "Q6_K", 256, 210;
    /// 8-bit k-quant (an activation format).
    Q8_K = 15, "Q8_K", 256, 292;
    /// i-quant.
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    /// i-quant.
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    /// i-quant.
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    /// i-quant.
    IQ1_S = 19, "IQ1_S", 256, 50;
    /// i-quant, non-linear 4-bit.
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    /// i-quant.
    IQ3_S = 21, "IQ3_S", 256, 110;
    /// i-quant.
    IQ2_S = 22, "IQ2_S", 256, 82;
    /// i-quant.
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    /// 8-bit integer.
    I8 = 24, "I8", 1, 1;
    /// 16-bit integer.
    I16 = 25, "I16", 1, 2;
    /// 32-bit integer.
    I32 = 26, "I32", 1, 4;
    /// 64-bit integer.
    I64 = 27, "I64", 1, 8;
    /// 64-bit float.
    F64 = 28, "F64", 1, 8;
    /// i-quant.
    IQ1_M = 29, "IQ1_M", 256, 56;
    /// bfloat16.
    BF16 = 30, "BF16", 1, 2;
    /// ternary.
    TQ1_0 = 34, "TQ1_0", 256, 54;
    /// ternary.
    TQ2_0 = 35, "TQ2_0", 256, 66;
    /// MX FP4 (E2M1 values, E8M0 scale per 32).
    MXFP4 = 39, "MXFP4", 32, 17;
}

impl GgmlType {
    /// Whether elements are stored in blocks with scales (not a plain number type).
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n` elements: a whole number of blocks, overflow-checked.
    /// Errors if `n` is not a multiple of the block size.
    pub fn bytes_for(self, n: u64) -> Result<u64> {
        let block = self.block_size() as u64;
        if !n.is_multiple_of(block) {
            return Err(Error::NotBlockAligned {
                ty: self,
                n,
                block: self.block_size(),
            });
        }
        (n / block)
            .checked_mul(self.type_size() as u64)
            .ok_or(Error::SizeOverflow { ty: self, n })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgmlType {
    type Err = Error;

    /// Parses a name case-insensitively (`q4_k`, `Q4_K`, `f16`).
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::UnknownTypeName(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_parse() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()).unwrap(), t);
            assert_eq!(t.name().to_lowercase().parse::<GgmlType>().unwrap(), t);
        }
        assert!(matches!(GgmlType::from_id(4), Err(Error::UnknownType(4))));
        assert!("Q9_9".parse::<GgmlType>().is_err());
    }

    #[test]
    fn sizes_follow_ggml() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512).unwrap(), 288);
        assert_eq!(GgmlType::F32.bytes_for(3).unwrap(), 12);
        assert!(matches!(
            GgmlType::Q8_0.bytes_for(33),
            Err(Error::NotBlockAligned {
                n: 33,
                block: 32,
                ..
            })
        ));
        assert!(GgmlType::F64.bytes_for(u64::MAX).is_err());
    }
}
