//! Matrix × activations products on quantized weights, computed the way
//! ggml's CPU backend computes `mul_mat`, so that a model run through them
//! gives llama.cpp's numbers (up to float summation order).
//!
//! ggml never dequantizes a weight matrix for a product. It quantizes the
//! activation row into the weight type's *vec-dot type* and takes integer dot
//! products block by block (Jacob et al. 2018, *Quantization and Training of
//! Neural Networks for Efficient Integer-Arithmetic-Only Inference*,
//! arXiv:1712.05877, for the general scheme):
//!
//! | weights | activations | one block of 32 (`i` over the block) |
//! |---|---|---|
//! | Q4_0, Q5_0, Q8_0 | Q8_0: `a = d_a·q_a` | `d_w d_a Σ q_w q_a` |
//! | Q4_1, Q5_1 | Q8_1: `a = d_a·q_a`, `s_a = d_a Σ q_a` | `d_w d_a Σ q_w q_a + m_w s_a` |
//! | F16 | F16 (rounded) | `Σ w a` in f32 |
//! | F32 and others | F32 | `Σ w a` (others dequantize the row first) |
//!
//! where `q_w` is the stored integer (`0..15` minus 8 for Q4_0), `d` the block
//! scale and `m_w` the Q4_1/Q5_1 block minimum. The activation quantizer is
//! ggml's `quantize_row_q8_{0,1}`: `d_a = max|a| / 127`, `q_a = round(a / d_a)`.
//!
//! On x86_64 with AVX2, FMA and F16C the hot kernels use those instructions
//! (detected at run time); everywhere else a portable loop computes the same
//! sums. Rows are spread over rayon's pool.

use rayon::prelude::*;

use crate::float::{f16_to_f32, f32_to_f16};
use crate::{Error, GgmlType, Result};

/// How a weight type wants its activations: the format of the right-hand row
/// in each dot product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationFormat {
    /// Plain `f32`.
    F32,
    /// Halves (`F16` weights).
    F16,
    /// Q8_0 blocks: an f16 scale and 32 `i8` (34 bytes).
    Q8_0,
    /// Q8_1 blocks: an f16 scale, an f16 `d·Σq`, and 32 `i8` (36 bytes).
    Q8_1,
}

impl ActivationFormat {
    /// The format ggml's CPU backend pairs with weight type `ty`.
    pub fn for_weights(ty: GgmlType) -> Self {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Self::Q8_0,
            GgmlType::Q4_1 | GgmlType::Q5_1 => Self::Q8_1,
            GgmlType::F16 => Self::F16,
            _ => Self::F32,
        }
    }

    fn row_bytes(self, cols: usize) -> usize {
        match self {
            Self::F32 => cols * 4,
            Self::F16 => cols * 2,
            Self::Q8_0 => cols / 32 * Q8_0_BYTES,
            Self::Q8_1 => cols / 32 * Q8_1_BYTES,
        }
    }
}

const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;

/// A batch of activation rows converted once into the format a weight type
/// wants; reuse it for every matrix of that type that reads the same rows.
#[derive(Debug, Clone)]
pub struct Activations {
    format: ActivationFormat,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
}

impl Activations {
    /// Converts `x` (`rows × cols`, row-major) into `format`.
    ///
    /// Block formats need `cols` to be a multiple of 32.
    pub fn new(format: ActivationFormat, x: &[f32], cols: usize) -> Result<Self> {
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(Error::LengthMismatch {
                ty: GgmlType::F32,
                what: "activations (a whole number of rows)",
                expected: (x.len() / cols.max(1) * cols.max(1)) as u64,
                found: x.len() as u64,
            });
        }
        if matches!(format, ActivationFormat::Q8_0 | ActivationFormat::Q8_1)
            && !cols.is_multiple_of(32)
        {
            return Err(Error::NotBlockAligned {
                ty: GgmlType::Q8_0,
                n: cols as u64,
                block: 32,
            });
        }
        let rows = x.len() / cols;
        let rb = format.row_bytes(cols);
        let mut bytes = vec![0u8; rows * rb];
        for (src, dst) in x.chunks_exact(cols).zip(bytes.chunks_exact_mut(rb)) {
            match format {
                ActivationFormat::F32 => {
                    for (v, o) in src.iter().zip(dst.chunks_exact_mut(4)) {
                        o.copy_from_slice(&v.to_le_bytes());
                    }
                }
                ActivationFormat::F16 => {
                    for (v, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
                        o.copy_from_slice(&f32_to_f16(*v).to_le_bytes());
                    }
                }
                ActivationFormat::Q8_0 => {
                    for (b, o) in src.chunks_exact(32).zip(dst.chunks_exact_mut(Q8_0_BYTES)) {
                        quantize_q8(b, o, false);
                    }
                }
                ActivationFormat::Q8_1 => {
                    for (b, o) in src.chunks_exact(32).zip(dst.chunks_exact_mut(Q8_1_BYTES)) {
                        quantize_q8(b, o, true);
                    }
                }
            }
        }
        Ok(Self {
            format,
            rows,
            cols,
            bytes,
        })
    }

    /// The format.
    pub fn format(&self) -> ActivationFormat {
        self.format
    }

    /// Number of rows (tokens).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn row(&self, t: usize) -> &[u8] {
        let rb = self.format.row_bytes(self.cols);
        &self.bytes[t * rb..(t + 1) * rb]
    }
}

/// ggml's `quantize_row_q8_0`/`q8_1` for one block of 32 as its x86 SIMD
/// path computes it: `d = max|x|/127`, `q = round(x · (127/max|x|))` with
/// ties to even, and for Q8_1 `s = d·Σq`.
fn quantize_q8(x: &[f32], out: &mut [u8], with_sum: bool) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    out[0..2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    let off = if with_sum { 4 } else { 2 };
    let mut sum = 0i32;
    for (o, v) in out[off..off + 32].iter_mut().zip(x) {
        let q = (v * id).round_ties_even() as i32;
        sum += q;
        *o = q as i8 as u8;
    }
    if with_sum {
        out[2..4].copy_from_slice(&f32_to_f16(sum as f32 * d).to_le_bytes());
    }
}

/// `out[t·rows + r] = Σ_c W[r][c] · x[t][c]`: every activation row `t`
/// against every row `r` of the `rows × cols` weight matrix stored in
/// `ty` blocks (`w`, row-major, as in a GGUF tensor of shape `[cols, rows]`).
///
/// `x` must be in [`ActivationFormat::for_weights`]`(ty)`; the product is
/// spread over rayon's pool by weight rows.
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &Activations,
    out: &mut [f32],
) -> Result<()> {
    let want = ActivationFormat::for_weights(ty);
    if x.format != want {
        return Err(Error::Unsupported {
            ty,
            op: "matmul with activations in another format than ActivationFormat::for_weights",
        });
    }
    if x.cols != cols {
        return Err(Error::LengthMismatch {
            ty,
            what: "activation row (values)",
            expected: cols as u64,
            found: x.cols as u64,
        });
    }
    if !cols.is_multiple_of(ty.block_size()) {
        return Err(Error::NotBlockAligned {
            ty,
            n: cols as u64,
            block: ty.block_size(),
        });
    }
    let row_bytes = cols / ty.block_size() * ty.type_size();
    if w.len() != rows * row_bytes {
        return Err(Error::LengthMismatch {
            ty,
            what: "weight matrix (bytes)",
            expected: (rows * row_bytes) as u64,
            found: w.len() as u64,
        });
    }
    let t = x.rows;
    if out.len() != t * rows {
        return Err(Error::LengthMismatch {
            ty,
            what: "output (values)",
            expected: (t * rows) as u64,
            found: out.len() as u64,
        });
    }
    let kernel = Kernel::for_type(ty)?;
    // Row-major by weight row, so each task owns a contiguous slice; one
    // weight row stays in cache while it meets every activation row.
    // A few tasks per thread: a decode step runs ~200 products of a few
    // hundred microseconds each, where per-task overhead would dominate.
    let tasks = rayon::current_num_threads().max(1) * 4;
    let chunk = rows.div_ceil(tasks).max(16);
    let by_row: Vec<f32> = if t == 1 {
        let mut v = vec![0f32; rows];
        v.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
            let mut scratch = Vec::new();
            for (k, o) in o.iter_mut().enumerate() {
                let r = ci * chunk + k;
                *o = kernel.dot(
                    &w[r * row_bytes..(r + 1) * row_bytes],
                    x.row(0),
                    cols,
                    &mut scratch,
                );
            }
        });
        v
    } else {
        let mut v = vec![0f32; rows * t];
        v.par_chunks_mut(chunk * t).enumerate().for_each(|(ci, o)| {
            let mut scratch = Vec::new();
            for (k, o) in o.chunks_exact_mut(t).enumerate() {
                let r = ci * chunk + k;
                let wr = &w[r * row_bytes..(r + 1) * row_bytes];
                let mut ti = 0;
                // Four activation rows per pass over the weight row: its
                // blocks are unpacked once for all four.
                while ti + 4 <= t {
                    let rows4 = [x.row(ti), x.row(ti + 1), x.row(ti + 2), x.row(ti + 3)];
                    if let Some(d) = kernel.dot4(wr, rows4) {
                        o[ti..ti + 4].copy_from_slice(&d);
                    } else {
                        for (j, a) in rows4.iter().enumerate() {
                            o[ti + j] = kernel.dot(wr, a, cols, &mut scratch);
                        }
                    }
                    ti += 4;
                }
                for (tj, o) in o.iter_mut().enumerate().skip(ti) {
                    *o = kernel.dot(wr, x.row(tj), cols, &mut scratch);
                }
            }
        });
        v
    };
    if t == 1 {
        out.copy_from_slice(&by_row);
    } else {
        for r in 0..rows {
            for ti in 0..t {
                out[ti * rows + r] = by_row[r * t + ti];
            }
        }
    }
    Ok(())
}

/// One row · one activation row.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    /// Dequantize the row, then an f32 dot.
    Dequant(GgmlType),
}

impl Kernel {
    fn for_type(ty: GgmlType) -> Result<Self> {
        Ok(match ty {
            GgmlType::F32 => Self::F32,
            GgmlType::F16 => Self::F16,
            GgmlType::Q4_0 => Self::Q4_0,
            GgmlType::Q4_1 => Self::Q4_1,
            GgmlType::Q5_0 => Self::Q5_0,
            GgmlType::Q5_1 => Self::Q5_1,
            GgmlType::Q8_0 => Self::Q8_0,
            other if crate::is_supported(other) => Self::Dequant(other),
            other => {
                return Err(Error::Unsupported {
                    ty: other,
                    op: "matmul",
                });
            }
        })
    }

    /// Four dot products of one weight row, where a tiled kernel exists.
    #[inline]
    fn dot4(self, w: &[u8], a: [&[u8]; 4]) -> Option<[f32; 4]> {
        #[cfg(target_arch = "x86_64")]
        if simd::available() {
            // SAFETY: as in `dot`.
            unsafe {
                match self {
                    Self::Q4_1 => return Some(simd::q4_1_q8_1_x4(w, a)),
                    Self::Q4_0 => return Some(simd::q8_0_like_x4::<true>(w, a)),
                    Self::Q8_0 => return Some(simd::q8_0_like_x4::<false>(w, a)),
                    _ => {}
                }
            }
        }
        let _ = (w, a);
        None
    }

    #[inline]
    fn dot(self, w: &[u8], a: &[u8], cols: usize, scratch: &mut Vec<f32>) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if simd::available() {
            // SAFETY: `available()` checked AVX2, FMA and F16C; the slices
            // have the lengths `matmul` checked.
            unsafe {
                match self {
                    Self::Q4_0 => return simd::q8_0_like::<true>(w, a),
                    Self::Q4_1 => return simd::q4_1_q8_1(w, a),
                    Self::Q8_0 => return simd::q8_0_like::<false>(w, a),
                    Self::F16 => return simd::f16_f16(w, a),
                    Self::F32 => return simd::f32_f32(w, a),
                    _ => {}
                }
            }
        }
        match self {
            Self::F32 => scalar::f32_f32(w, a),
            Self::F16 => scalar::f16_f16(w, a),
            Self::Q4_0 => scalar::q4_0_q8_0(w, a),
            Self::Q4_1 => scalar::q4_1_q8_1(w, a),
            Self::Q5_0 => scalar::q5_0_q8_0(w, a),
            Self::Q5_1 => scalar::q5_1_q8_1(w, a),
            Self::Q8_0 => scalar::q8_0_q8_0(w, a),
            Self::Dequant(ty) => {
                scratch.resize(cols, 0.0);
                if crate::dequantize_row_into(ty, w, scratch).is_err() {
                    return f32::NAN;
                }
                let mut s = 0f32;
                for (x, y) in scratch.iter().zip(a.chunks_exact(4)) {
                    s += x * f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
                }
                s
            }
        }
    }
}

/// Rounds every value to the nearest half (ties to even) and back, in
/// place: `x ← f32(f16(x))`, the F16C unit's conversion where available.
pub fn round_to_f16(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: `available()` checked F16C and AVX.
        unsafe { simd::round_to_f16(x) };
        return;
    }
    for v in x {
        *v = f16_to_f32(f32_to_f16(*v));
    }
}

fn half(b: &[u8], off: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[off], b[off + 1]]))
}

/// Portable kernels: the definitions.
mod scalar {
    use super::{Q8_0_BYTES, Q8_1_BYTES, half};
    use crate::{BlockFormat, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};

    pub(super) fn f32_f32(w: &[u8], a: &[u8]) -> f32 {
        let mut s = 0f32;
        for (x, y) in w.chunks_exact(4).zip(a.chunks_exact(4)) {
            s += f32::from_le_bytes([x[0], x[1], x[2], x[3]])
                * f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        }
        s
    }

    pub(super) fn f16_f16(w: &[u8], a: &[u8]) -> f32 {
        let mut s = 0f32;
        for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
            s += half(x, 0) * half(y, 0);
        }
        s
    }

    fn i8s(a: &[u8]) -> impl Iterator<Item = i32> + '_ {
        a.iter().map(|&b| i32::from(b as i8))
    }

    pub(super) fn q4_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
        let mut s = 0f32;
        for (x, y) in w
            .chunks_exact(Q4_0::TYPE_SIZE)
            .zip(a.chunks_exact(Q8_0_BYTES))
        {
            let ya = &y[2..34];
            let mut isum = 0i32;
            for (j, q) in x[2..18].iter().enumerate() {
                isum += (i32::from(q & 0x0f) - 8) * i32::from(ya[j] as i8)
                    + (i32::from(q >> 4) - 8) * i32::from(ya[j + 16] as i8);
            }
            s += isum as f32 * (half(x, 0) * half(y, 0));
        }
        s
    }

    pub(super) fn q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
        let mut s = 0f32;
        for (x, y) in w
            .chunks_exact(Q4_1::TYPE_SIZE)
            .zip(a.chunks_exact(Q8_1_BYTES))
        {
            let ya = &y[4..36];
            let mut isum = 0i32;
            for (j, q) in x[4..20].iter().enumerate() {
                isum += i32::from(q & 0x0f) * i32::from(ya[j] as i8)
                    + i32::from(q >> 4) * i32::from(ya[j + 16] as i8);
            }
            s += (half(x, 0) * half(y, 0)) * isum as f32 + half(x, 2) * half(y, 2);
        }
        s
    }

    fn q5_values(qh: u32, qs: &[u8], j: usize) -> (i32, i32) {
        let lo = i32::from(qs[j] & 0x0f) | (((qh >> j) & 1) << 4) as i32;
        let hi = i32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
        (lo, hi)
    }

    pub(super) fn q5_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
        let mut s = 0f32;
        for (x, y) in w
            .chunks_exact(Q5_0::TYPE_SIZE)
            .zip(a.chunks_exact(Q8_0_BYTES))
        {
            let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
            let ya = &y[2..34];
            let mut isum = 0i32;
            for j in 0..16 {
                let (lo, hi) = q5_values(qh, &x[6..22], j);
                isum +=
                    (lo - 16) * i32::from(ya[j] as i8) + (hi - 16) * i32::from(ya[j + 16] as i8);
            }
            s += isum as f32 * (half(x, 0) * half(y, 0));
        }
        s
    }

    pub(super) fn q5_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
        let mut s = 0f32;
        for (x, y) in w
            .chunks_exact(Q5_1::TYPE_SIZE)
            .zip(a.chunks_exact(Q8_1_BYTES))
        {
            let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
            let ya = &y[4..36];
            let mut isum = 0i32;
            for j in 0..16 {
                let (lo, hi) = q5_values(qh, &x[8..24], j);
                isum += lo * i32::from(ya[j] as i8) + hi * i32::from(ya[j + 16] as i8);
            }
            s += (half(x, 0) * half(y, 0)) * isum as f32 + half(x, 2) * half(y, 2);
        }
        s
    }

    pub(super) fn q8_0_q8_0(w: &[u8], a: &[u8]) -> f32 {
        let mut s = 0f32;
        for (x, y) in w
            .chunks_exact(Q8_0::TYPE_SIZE)
            .zip(a.chunks_exact(Q8_0_BYTES))
        {
            let isum: i32 = i8s(&x[2..34]).zip(i8s(&y[2..34])).map(|(p, q)| p * q).sum();
            s += isum as f32 * (half(x, 0) * half(y, 0));
        }
        s
    }
}

/// AVX2 + FMA + F16C kernels (same sums, eight or thirty-two lanes at a time).
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Q8_0_BYTES, Q8_1_BYTES};

    /// The half at `b[off..off + 2]`, converted by the F16C unit.
    #[inline]
    #[target_feature(enable = "f16c")]
    fn half(b: &[u8], off: usize) -> f32 {
        let h = i32::from(u16::from_le_bytes([b[off], b[off + 1]]));
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)))
    }

    pub(super) fn available() -> bool {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 32 nibbles of 16 bytes: low nibbles in lanes 0..16, high in 16..32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller passes 16 readable bytes.
        let b = unsafe { _mm_loadu_si128(p.cast()) };
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
        _mm256_set_m128i(hi, lo)
    }

    /// Σ u·s over 32 lanes (u unsigned ≤ 127·… without saturation), as 8 i32 → f32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn dot_us(u: __m256i, s: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(u, s);
        let p32 = _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
        _mm256_cvtepi32_ps(p32)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1_q8_1(w: &[u8], a: &[u8]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for (x, y) in w.chunks_exact(20).zip(a.chunks_exact(Q8_1_BYTES)) {
            // SAFETY: x has 20 bytes (16 at 4..), y 36 (32 at 4..).
            unsafe {
                let q = nibbles(x.as_ptr().add(4));
                let v = _mm256_loadu_si256(y.as_ptr().add(4).cast());
                let d = _mm256_set1_ps(half(x, 0) * half(y, 0));
                acc = _mm256_fmadd_ps(d, dot_us(q, v), acc);
            }
            mins += half(x, 2) * half(y, 2);
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { hsum(acc) + mins }
    }

    /// [`q4_1_q8_1`] against four activation rows at once.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1_q8_1_x4(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = [0f32; 4];
        for (b, x) in w.chunks_exact(20).enumerate() {
            let o = b * Q8_1_BYTES;
            // SAFETY: x has 20 bytes (16 at 4..); every activation row has
            // as many 36-byte blocks as the weight row has 20-byte blocks.
            unsafe {
                let q = nibbles(x.as_ptr().add(4));
                let (dw, mw) = (half(x, 0), half(x, 2));
                for k in 0..4 {
                    let y = &a[k][o..o + Q8_1_BYTES];
                    let v = _mm256_loadu_si256(y.as_ptr().add(4).cast());
                    let d = _mm256_set1_ps(dw * half(y, 0));
                    acc[k] = _mm256_fmadd_ps(d, dot_us(q, v), acc[k]);
                    mins[k] += mw * half(y, 2);
                }
            }
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { [0, 1, 2, 3].map(|k| hsum(acc[k]) + mins[k]) }
    }

    /// Q4_0 (`NIBBLES`) or Q8_0 weights against four Q8_0 activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_like_x4<const NIBBLES: bool>(w: &[u8], a: [&[u8]; 4]) -> [f32; 4] {
        let bs = if NIBBLES { 18 } else { 34 };
        let mut acc = [_mm256_setzero_ps(); 4];
        for (b, x) in w.chunks_exact(bs).enumerate() {
            let o = b * Q8_0_BYTES;
            // SAFETY: x has `bs` bytes (16 or 32 at 2..); every activation
            // row has as many 34-byte blocks as the weight row has blocks.
            unsafe {
                let q = if NIBBLES {
                    _mm256_sub_epi8(nibbles(x.as_ptr().add(2)), _mm256_set1_epi8(8))
                } else {
                    _mm256_loadu_si256(x.as_ptr().add(2).cast())
                };
                let aq = _mm256_sign_epi8(q, q);
                let dw = half(x, 0);
                for k in 0..4 {
                    let y = &a[k][o..o + Q8_0_BYTES];
                    let v = _mm256_loadu_si256(y.as_ptr().add(2).cast());
                    let d = _mm256_set1_ps(dw * half(y, 0));
                    acc[k] = _mm256_fmadd_ps(d, dot_us(aq, _mm256_sign_epi8(v, q)), acc[k]);
                }
            }
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { [0, 1, 2, 3].map(|k| hsum(acc[k])) }
    }

    /// Q4_0 (`NIBBLES`, stored value minus 8) or Q8_0 weights against one
    /// Q8_0 activation row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0_like<const NIBBLES: bool>(w: &[u8], a: &[u8]) -> f32 {
        let bs = if NIBBLES { 18 } else { 34 };
        let mut acc = _mm256_setzero_ps();
        for (x, y) in w.chunks_exact(bs).zip(a.chunks_exact(Q8_0_BYTES)) {
            // SAFETY: x has `bs` bytes (16 or 32 at 2..), y 34 (32 at 2..).
            unsafe {
                let q = if NIBBLES {
                    _mm256_sub_epi8(nibbles(x.as_ptr().add(2)), _mm256_set1_epi8(8))
                } else {
                    _mm256_loadu_si256(x.as_ptr().add(2).cast())
                };
                let v = _mm256_loadu_si256(y.as_ptr().add(2).cast());
                let d = _mm256_set1_ps(half(x, 0) * half(y, 0));
                // |q|·sign(v, q): unsigned × signed without changing the product.
                let p = dot_us(_mm256_sign_epi8(q, q), _mm256_sign_epi8(v, q));
                acc = _mm256_fmadd_ps(d, p, acc);
            }
        }
        // SAFETY: AVX2 is enabled for this function.
        unsafe { hsum(acc) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn f16_f16(w: &[u8], a: &[u8]) -> f32 {
        let n = w.len() / 2;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 16 bytes inside `w`/`a` (i + 8 ≤ n).
        unsafe {
            while i + 32 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o = (i + 8 * k) * 2;
                    let x = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(o).cast()));
                    let y = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(o).cast()));
                    *acc = _mm256_fmadd_ps(x, y, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(i * 2).cast()));
                let y = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i * 2).cast()));
                acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut total = hsum(s);
            while i < n {
                total += half(w, 2 * i) * half(a, 2 * i);
                i += 1;
            }
            total
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn round_to_f16(x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds 8 floats.
            unsafe {
                let v = _mm256_loadu_ps(c.as_ptr());
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        for v in chunks.into_remainder() {
            let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(*v));
            *v = _mm_cvtss_f32(_mm_cvtph_ps(h));
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn f32_f32(w: &[u8], a: &[u8]) -> f32 {
        let n = w.len() / 4;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 32 bytes inside `w`/`a` (i + 8 ≤ n).
        unsafe {
            while i + 32 <= n {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let o = (i + 8 * k) * 4;
                    let x = _mm256_loadu_ps(w.as_ptr().add(o).cast());
                    let y = _mm256_loadu_ps(a.as_ptr().add(o).cast());
                    *acc = _mm256_fmadd_ps(x, y, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                let x = _mm256_loadu_ps(w.as_ptr().add(i * 4).cast());
                let y = _mm256_loadu_ps(a.as_ptr().add(i * 4).cast());
                acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut total = hsum(s);
            while i < n {
                let o = i * 4;
                total += f32::from_le_bytes([w[o], w[o + 1], w[o + 2], w[o + 3]])
                    * f32::from_le_bytes([a[o], a[o + 1], a[o + 2], a[o + 3]]);
                i += 1;
            }
            total
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every kernel equals the f64 dot of the dequantized operands.
    #[test]
    fn products_equal_dequantized_math() {
        let (rows, cols, t) = (37, 256, 3);
        let w = lcg(rows * cols, 1);
        let x = lcg(t * cols, 2);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q6_K,
        ] {
            let wq = if ty == GgmlType::F32 {
                w.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                quantize(ty, &w, cols).unwrap()
            };
            let wd = crate::dequantize(ty, &wq, rows * cols).unwrap();
            let fmt = ActivationFormat::for_weights(ty);
            let acts = Activations::new(fmt, &x, cols).unwrap();
            // The activations as the kernel sees them.
            let xd: Vec<f32> = match fmt {
                ActivationFormat::F32 => x.clone(),
                ActivationFormat::F16 => x.iter().map(|v| f16_to_f32(f32_to_f16(*v))).collect(),
                ActivationFormat::Q8_0 | ActivationFormat::Q8_1 => {
                    let bs = if fmt == ActivationFormat::Q8_0 {
                        34
                    } else {
                        36
                    };
                    let off = bs - 32;
                    acts.bytes
                        .chunks_exact(bs)
                        .flat_map(|b| {
                            let d = half(b, 0);
                            b[off..].iter().map(move |&q| f32::from(q as i8) * d)
                        })
                        .collect()
                }
            };
            let mut out = vec![0f32; t * rows];
            matmul(ty, &wq, rows, cols, &acts, &mut out).unwrap();
            for ti in 0..t {
                for r in 0..rows {
                    let want: f64 = (0..cols)
                        .map(|c| f64::from(wd[r * cols + c]) * f64::from(xd[ti * cols + c]))
                        .sum();
                    let got = f64::from(out[ti * rows + r]);
                    let tol = 1e-4 * (1.0 + want.abs())
                        + if fmt == ActivationFormat::Q8_1 {
                            // s = d·Σq is stored as a half.
                            5e-3
                        } else {
                            0.0
                        };
                    assert!(
                        (got - want).abs() <= tol,
                        "{ty:?} row {r} tok {ti}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_equals_portable() {
        let cols = 512;
        let w = lcg(cols * 4, 3);
        let x = lcg(cols, 4);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
        ] {
            let wq = if ty == GgmlType::F32 {
                w.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                quantize(ty, &w, cols).unwrap()
            };
            let acts = Activations::new(ActivationFormat::for_weights(ty), &x, cols).unwrap();
            let k = Kernel::for_type(ty).unwrap();
            let rb = wq.len() / 4;
            for r in 0..4 {
                let row = &wq[r * rb..(r + 1) * rb];
                let portable = match k {
                    Kernel::F32 => scalar::f32_f32(row, acts.row(0)),
                    Kernel::F16 => scalar::f16_f16(row, acts.row(0)),
                    Kernel::Q4_0 => scalar::q4_0_q8_0(row, acts.row(0)),
                    Kernel::Q4_1 => scalar::q4_1_q8_1(row, acts.row(0)),
                    Kernel::Q8_0 => scalar::q8_0_q8_0(row, acts.row(0)),
                    _ => unreachable!(),
                };
                let fast = k.dot(row, acts.row(0), cols, &mut Vec::new());
                assert!(
                    (fast - portable).abs() <= 1e-4 * (1.0 + portable.abs()),
                    "{ty:?}: {fast} vs {portable}"
                );
            }
        }
    }

    /// The four-row tiles give the single-row kernels' sums.
    #[test]
    fn tiles_equal_single_rows() {
        let (rows, cols, t) = (5, 128, 7);
        let w = lcg(rows * cols, 5);
        let x = lcg(t * cols, 6);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let wq = quantize(ty, &w, cols).unwrap();
            let acts = Activations::new(ActivationFormat::for_weights(ty), &x, cols).unwrap();
            let mut all = vec![0f32; t * rows];
            matmul(ty, &wq, rows, cols, &acts, &mut all).unwrap();
            for ti in 0..t {
                let one = Activations::new(
                    ActivationFormat::for_weights(ty),
                    &x[ti * cols..(ti + 1) * cols],
                    cols,
                )
                .unwrap();
                let mut out = vec![0f32; rows];
                matmul(ty, &wq, rows, cols, &one, &mut out).unwrap();
                for r in 0..rows {
                    let (a, b) = (all[ti * rows + r], out[r]);
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{ty:?} {ti} {r}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn f16_rounding_equals_the_portable_conversion() {
        let mut x = lcg(1003, 9);
        x.extend([0.0, -0.0, 65504.0, 65520.0, 1e-8, -3.0e-5, f32::INFINITY]);
        let want: Vec<f32> = x.iter().map(|v| f16_to_f32(f32_to_f16(*v))).collect();
        round_to_f16(&mut x);
        assert_eq!(x, want);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let acts = Activations::new(ActivationFormat::Q8_1, &[0.5; 64], 32).unwrap();
        let w = quantize(GgmlType::Q4_1, &[0.1; 64], 32).unwrap();
        let mut out = vec![0f32; 4];
        assert!(matmul(GgmlType::Q4_1, &w, 2, 32, &acts, &mut out).is_ok());
        assert!(matmul(GgmlType::Q4_1, &w[1..], 2, 32, &acts, &mut out).is_err());
        assert!(matmul(GgmlType::Q8_0, &w, 2, 32, &acts, &mut out).is_err());
        assert!(matmul(GgmlType::Q4_1, &w, 2, 32, &acts, &mut out[1..]).is_err());
        assert!(Activations::new(ActivationFormat::Q8_0, &[0.0; 48], 48).is_err());
    }
}
