//! Runtime dispatch on [`GgmlType`], with rayon over chunks of blocks.

use rayon::prelude::*;

use crate::block::{check_blocks, check_len};
use crate::formats::{BF16, F16, Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0};
use crate::{BlockFormat, Error, GgmlType, Result};

/// The types [`quantize`] and [`dequantize`] handle (F32 is a copy).
pub const SUPPORTED_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
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

/// Inputs smaller than this many values run on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 16;
/// Values per rayon task (rounded to whole blocks).
const VALUES_PER_TASK: usize = 1 << 14;

/// Quantizes `src`, a whole number of rows of `n_per_row` values, to `ty`.
///
/// Errors if `ty` has no quantizer here ([`Error::Unsupported`]), if
/// `src.len()` is not a multiple of `n_per_row` ([`Error::NotRowAligned`]) or
/// `n_per_row` not a multiple of the block size ([`Error::NotBlockAligned`]).
/// Large inputs are split over the rayon pool; the bytes do not depend on it.
pub fn quantize(ty: GgmlType, src: &[f32], n_per_row: usize) -> Result<Vec<u8>> {
    check_rows(ty, src.len(), n_per_row)?;
    let mut dst = vec![0u8; src.len() / ty.block_size() * ty.type_size()];
    quantize_into(ty, src, n_per_row, &mut dst)?;
    Ok(dst)
}

/// [`quantize`] into a caller buffer of exactly the quantized size.
pub fn quantize_into(ty: GgmlType, src: &[f32], n_per_row: usize, dst: &mut [u8]) -> Result<()> {
    check_rows(ty, src.len(), n_per_row)?;
    with_format!(ty, "quantize", F => par_quantize::<F>(src, dst))
}

/// Dequantizes `bytes`, which must hold exactly `n` values of `ty`.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let expected = ty.bytes_for(n as u64)?;
    check_len(ty, "byte buffer (bytes)", expected as usize, bytes.len())?;
    let mut dst = vec![0f32; n];
    dequantize_into(ty, bytes, &mut dst)?;
    Ok(dst)
}

/// [`dequantize`] into a caller buffer; `dst.len()` is the value count.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], dst: &mut [f32]) -> Result<()> {
    with_format!(ty, "dequantize", F => par_dequantize::<F>(bytes, dst))
}

/// Quantizes a whole number of blocks on the calling thread (no rayon).
pub fn quantize_row_into(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    with_format!(ty, "quantize", F => F::quantize_row(src, dst))
}

/// Dequantizes a whole number of blocks on the calling thread (no rayon).
pub fn dequantize_row_into(ty: GgmlType, bytes: &[u8], dst: &mut [f32]) -> Result<()> {
    with_format!(ty, "dequantize", F => F::dequantize_row(bytes, dst))
}

/// Whether [`quantize`] and [`dequantize`] handle `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    SUPPORTED_TYPES.contains(&ty)
}

/// Calls `$body` with `$f` bound to the format type of `$ty` (F32 is handled
/// by an identity format).
macro_rules! with_format {
    ($ty:expr, $op:expr, $f:ident => $body:expr) => {{
        match $ty {
            GgmlType::F32 => {
                type $f = F32;
                $body
            }
            GgmlType::F16 => {
                type $f = F16;
                $body
            }
            GgmlType::BF16 => {
                type $f = BF16;
                $body
            }
            GgmlType::Q4_0 => {
                type $f = Q4_0;
                $body
            }
            GgmlType::Q4_1 => {
                type $f = Q4_1;
                $body
            }
            GgmlType::Q5_0 => {
                type $f = Q5_0;
                $body
            }
            GgmlType::Q5_1 => {
                type $f = Q5_1;
                $body
            }
            GgmlType::Q8_0 => {
                type $f = Q8_0;
                $body
            }
            GgmlType::Q2_K => {
                type $f = Q2_K;
                $body
            }
            GgmlType::Q3_K => {
                type $f = Q3_K;
                $body
            }
            GgmlType::Q4_K => {
                type $f = Q4_K;
                $body
            }
            GgmlType::Q5_K => {
                type $f = Q5_K;
                $body
            }
            GgmlType::Q6_K => {
                type $f = Q6_K;
                $body
            }
            other => Err(Error::Unsupported { ty: other, op: $op }),
        }
    }};
}
use with_format;

/// F32 as a one-value block: a little-endian copy.
struct F32;

impl BlockFormat for F32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK_SIZE: usize = 1;
    const TYPE_SIZE: usize = 4;

    fn quantize_block(src: &[f32], dst: &mut [u8]) {
        dst.copy_from_slice(&src[0].to_le_bytes());
    }

    fn dequantize_block(src: &[u8], dst: &mut [f32]) {
        let b: [u8; 4] = src.try_into().expect("F32 block is 4 bytes");
        dst[0] = f32::from_le_bytes(b);
    }
}

fn check_rows(ty: GgmlType, n: usize, n_per_row: usize) -> Result<()> {
    if n_per_row == 0 || !n.is_multiple_of(n_per_row) {
        if n == 0 {
            return Ok(());
        }
        return Err(Error::NotRowAligned {
            ty,
            n: n as u64,
            n_per_row: n_per_row as u64,
        });
    }
    check_blocks(ty, n_per_row, ty.block_size()).map(|_| ())
}

fn blocks_per_task<F: BlockFormat>() -> usize {
    (VALUES_PER_TASK / F::BLOCK_SIZE).max(1)
}

fn par_quantize<F: BlockFormat>(src: &[f32], dst: &mut [u8]) -> Result<()> {
    if src.len() < PARALLEL_MIN_VALUES {
        return F::quantize_row(src, dst);
    }
    let blocks = check_blocks(F::TYPE, src.len(), F::BLOCK_SIZE)?;
    check_len(F::TYPE, "output (bytes)", blocks * F::TYPE_SIZE, dst.len())?;
    let per = blocks_per_task::<F>();
    src.par_chunks(per * F::BLOCK_SIZE)
        .zip(dst.par_chunks_mut(per * F::TYPE_SIZE))
        .try_for_each(|(x, y)| F::quantize_row(x, y))
}

fn par_dequantize<F: BlockFormat>(src: &[u8], dst: &mut [f32]) -> Result<()> {
    if dst.len() < PARALLEL_MIN_VALUES {
        return F::dequantize_row(src, dst);
    }
    let blocks = check_blocks(F::TYPE, dst.len(), F::BLOCK_SIZE)?;
    check_len(
        F::TYPE,
        "byte buffer (bytes)",
        blocks * F::TYPE_SIZE,
        src.len(),
    )?;
    let per = blocks_per_task::<F>();
    src.par_chunks(per * F::TYPE_SIZE)
        .zip(dst.par_chunks_mut(per * F::BLOCK_SIZE))
        .try_for_each(|(x, y)| F::dequantize_row(x, y))
}
