//! BF16: bfloat16 (the upper 16 bits of an f32), one value per 2-byte
//! little-endian "block".
//!
//! `f32 → bf16`: round to nearest even by adding `0x7fff + lsb`, NaNs forced
//! quiet (ggml `ggml_compute_fp32_to_bf16`, gguf-py `BF16`); `bf16 → f32` shifts
//! left by 16.

use crate::block::{check_blocks, check_len};
use crate::float::{bf16_to_f32, f32_to_bf16};
use crate::{BlockFormat, GgmlType, Result};

/// The BF16 format as a one-value block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BF16;

impl BlockFormat for BF16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 2;

    #[inline]
    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        let [x]: [f32; 1] = src.try_into().expect("BF16 block takes 1 value");
        dst.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
    }

    #[inline]
    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: [u8; 2] = src.try_into().expect("BF16 block is 2 bytes");
        dst[0] = bf16_to_f32(u16::from_le_bytes(b));
    }

    fn quantize_row(src: &[f32], dst: &mut [u8]) -> Result<()> {
        check_len(Self::TYPE, "output (bytes)", 2 * src.len(), dst.len())?;
        for (x, y) in src.iter().zip(dst.chunks_exact_mut(2)) {
            y.copy_from_slice(&f32_to_bf16(*x).to_le_bytes());
        }
        Ok(())
    }

    fn dequantize_row(src: &[u8], dst: &mut [f32]) -> Result<()> {
        let n = check_blocks(Self::TYPE, dst.len(), 1)?;
        check_len(Self::TYPE, "byte buffer (bytes)", 2 * n, src.len())?;
        for (x, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
            *y = bf16_to_f32(u16::from_le_bytes([x[0], x[1]]));
        }
        Ok(())
    }
}
