//! The compile-time block trait every format implements.

use crate::{Error, GgmlType, Result};

/// A GGML block format known at compile time: `BLOCK_SIZE` values stored in
/// `TYPE_SIZE` bytes.
///
/// The block functions work on exactly one block and panic if a slice has
/// another length (a programming error, like indexing out of bounds). The
/// row functions check lengths and return [`Error::LengthMismatch`] or
/// [`Error::NotBlockAligned`] instead; the runtime API
/// ([`quantize`](crate::quantize), [`dequantize`](crate::dequantize), ...)
/// dispatches to them on a [`GgmlType`].
///
/// ```
/// use forge_quant::{BlockFormat, Q8_0};
///
/// let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
/// let mut block = [0u8; Q8_0::TYPE_SIZE];
/// Q8_0::quantize_block(&x, &mut block);
/// let mut y = [0f32; Q8_0::BLOCK_SIZE];
/// Q8_0::dequantize_block(&block, &mut y);
/// assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 0.07));
/// ```
pub trait BlockFormat {
    /// The runtime type this format implements.
    const TYPE: GgmlType;
    /// Values per block.
    const BLOCK_SIZE: usize;
    /// Bytes per block.
    const TYPE_SIZE: usize;

    /// Quantizes one block of `BLOCK_SIZE` values into `TYPE_SIZE` bytes.
    ///
    /// # Panics
    /// If `src.len() != BLOCK_SIZE` or `dst.len() != TYPE_SIZE`.
    fn quantize_block(src: &[f32], dst: &mut [u8]);

    /// Dequantizes one block of `TYPE_SIZE` bytes into `BLOCK_SIZE` values.
    ///
    /// # Panics
    /// If `src.len() != TYPE_SIZE` or `dst.len() != BLOCK_SIZE`.
    fn dequantize_block(src: &[u8], dst: &mut [f32]);

    /// Quantizes a whole number of blocks, on the calling thread.
    fn quantize_row(src: &[f32], dst: &mut [u8]) -> Result<()> {
        let blocks = check_blocks(Self::TYPE, src.len(), Self::BLOCK_SIZE)?;
        check_len(
            Self::TYPE,
            "output (bytes)",
            blocks * Self::TYPE_SIZE,
            dst.len(),
        )?;
        for (x, y) in src
            .chunks_exact(Self::BLOCK_SIZE)
            .zip(dst.chunks_exact_mut(Self::TYPE_SIZE))
        {
            Self::quantize_block(x, y);
        }
        Ok(())
    }

    /// Dequantizes a whole number of blocks, on the calling thread.
    fn dequantize_row(src: &[u8], dst: &mut [f32]) -> Result<()> {
        let blocks = check_blocks(Self::TYPE, dst.len(), Self::BLOCK_SIZE)?;
        check_len(
            Self::TYPE,
            "byte buffer (bytes)",
            blocks * Self::TYPE_SIZE,
            src.len(),
        )?;
        for (x, y) in src
            .chunks_exact(Self::TYPE_SIZE)
            .zip(dst.chunks_exact_mut(Self::BLOCK_SIZE))
        {
            Self::dequantize_block(x, y);
        }
        Ok(())
    }
}

/// The number of blocks in `n` values, or `NotBlockAligned`.
pub(crate) fn check_blocks(ty: GgmlType, n: usize, block: usize) -> Result<usize> {
    if !n.is_multiple_of(block) {
        return Err(Error::NotBlockAligned {
            ty,
            n: n as u64,
            block,
        });
    }
    Ok(n / block)
}

/// `LengthMismatch` unless `expected == found`.
pub(crate) fn check_len(
    ty: GgmlType,
    what: &'static str,
    expected: usize,
    found: usize,
) -> Result<()> {
    if expected != found {
        return Err(Error::LengthMismatch {
            ty,
            what,
            expected: expected as u64,
            found: found as u64,
        });
    }
    Ok(())
}
