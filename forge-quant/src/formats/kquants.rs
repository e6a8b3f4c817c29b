//! Shared pieces of the k-quant (super-block of 256) reference quantizers.
//!
//! These follow llama.cpp's `ggml-quants.c` reference algorithms operation by
//! operation, in `f32`, in the same order and without fused multiply-adds, so
//! that the bytes they produce equal `quantize_row_q*_K_ref` exactly. Every
//! `a*b*c` below is `(a*b)*c`, as in C, and int→float conversions happen where C
//! converts.

/// Values per super-block.
pub(super) const QK_K: usize = 256;

/// Groups whose largest magnitude is below this quantize to zero.
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, through the float adder: adding `1.5·2^23`
/// leaves the integer in the low mantissa bits. Exact for `|f| ≤ 2^22 − 1`;
/// larger or non-finite inputs give a deterministic meaningless value, as in C.
#[inline(always)]
pub(super) fn nearest_int(f: f32) -> i32 {
    let v = f + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// The value of largest magnitude, strict `>` from zero (C's loop: an
/// all-zero group returns `(0, 0)`; NaNs are skipped).
///
/// The largest magnitude is exact whatever the order, so it is found in eight
/// independent lanes; the first element of that magnitude then gives the
/// signed value, which is where C's strict `>` scan stops updating.
#[inline(always)]
fn absmax_from_zero(x: &[f32; 16]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the SSE2 intrinsics are available on every x86_64 target; the
    // loads read 4 f32 at offsets 0, 4, 8 and 12 of `x`, unaligned.
    let (amax, first) = unsafe {
        use std::arch::x86_64::{
            _mm_and_ps, _mm_castsi128_ps, _mm_cmpeq_ps, _mm_cvtss_f32, _mm_loadu_ps, _mm_max_ps,
            _mm_movehl_ps, _mm_movemask_ps, _mm_set1_epi32, _mm_set1_ps, _mm_shuffle_ps,
        };
        let abs = _mm_castsi128_ps(_mm_set1_epi32(0x7fff_ffff));
        let p = x.as_ptr();
        let v = [0, 4, 8, 12].map(|o| _mm_and_ps(_mm_loadu_ps(p.add(o)), abs));
        // maxps(a, m) is `if a > m { a } else { m }`: with the NaN-free
        // accumulator second, NaN lanes never win
        let mut m = _mm_set1_ps(0.0);
        for vk in v {
            m = _mm_max_ps(vk, m);
        }
        let m = _mm_max_ps(_mm_movehl_ps(m, m), m);
        let m = _mm_max_ps(_mm_shuffle_ps::<0b01>(m, m), m);
        let amax = _mm_cvtss_f32(m);
        let a = _mm_set1_ps(amax);
        let mut first = 0u32;
        for (k, vk) in v.into_iter().enumerate() {
            first |= (_mm_movemask_ps(_mm_cmpeq_ps(vk, a)) as u32) << (4 * k);
        }
        (amax, first)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (amax, first) = {
        let mut lanes = [0f32; 8];
        for c in x.chunks_exact(8) {
            for (m, &v) in lanes.iter_mut().zip(c) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let mut amax = lanes[0];
        for &m in &lanes[1..] {
            amax = if m > amax { m } else { amax };
        }
        let mut first = 0u32;
        for (j, v) in x.iter().enumerate() {
            first |= u32::from(v.abs() == amax) << j;
        }
        (amax, first)
    };
    if amax == 0.0 {
        return (0.0, 0.0);
    }
    (x[first.trailing_zeros() as usize & 15], amax)
}

/// [`make_qkx2_quants`] for four groups at once, in lockstep: `x[i][g]` and
/// `w[i][g]` are value `i` of group `g`, and `l_out[g]` receives group `g`'s
/// levels. Every group runs exactly C's sequence of f32 operations; the four
/// groups only share the loop, so their in-order sums form four independent
/// chains (one vector lane each) instead of one serial chain. Returns
/// `(scale, −min)` per group.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn make_qkx2_quants_x4<const N: usize>(
    nmax: i32,
    x: &[[f32; 4]; N],
    w: &[[f32; 4]; N],
    l_out: &mut [[u8; N]; 4],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> [(f32, f32); 4] {
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = [0f32; 4];
    for g in 0..4 {
        sum_x[g] = sum_w[g] * x[0][g];
    }
    for i in 1..N {
        for g in 0..4 {
            let v = x[i][g];
            min[g] = if v < min[g] { v } else { min[g] };
            max[g] = if v > max[g] { v } else { max[g] };
            sum_w[g] += w[i][g];
            sum_x[g] += w[i][g] * v;
        }
    }
    let mut flat = [false; 4];
    for g in 0..4 {
        if min[g] > 0.0 {
            min[g] = 0.0;
        }
        flat[g] = max[g] == min[g];
    }
    let nmax_f = nmax as f32;
    let mut scale = [0f32; 4];
    let mut iscale = [0f32; 4];
    for g in 0..4 {
        iscale[g] = nmax_f / (max[g] - min[g]);
        scale[g] = 1.0 / iscale[g];
    }
    let mut lt = [[0u8; 4]; N];
    let mut best_error = [0f32; 4];
    for i in 0..N {
        for g in 0..4 {
            let l = nearest_int(iscale[g] * (x[i][g] - min[g])).clamp(0, nmax) as u8;
            lt[i][g] = l;
            let diff = scale[g] * f32::from(l) + min[g] - x[i][g];
            best_error[g] += w[i][g] * err(diff);
        }
    }
    if nstep >= 1 {
        for is in 0..=nstep {
            let mut sum_l = [0f32; 4];
            let mut sum_l2 = [0f32; 4];
            let mut sum_xl = [0f32; 4];
            let mut aux = [[0u8; 4]; N];
            for g in 0..4 {
                iscale[g] = (rmin + rdelta * is as f32 + nmax_f) / (max[g] - min[g]);
            }
            for i in 0..N {
                for g in 0..4 {
                    let l = nearest_int(iscale[g] * (x[i][g] - min[g])).clamp(0, nmax) as u8;
                    aux[i][g] = l;
                    let lf = f32::from(l);
                    let wi = w[i][g];
                    sum_l[g] += wi * lf;
                    sum_l2[g] += wi * lf * lf;
                    sum_xl[g] += wi * lf * x[i][g];
                }
            }
            let mut ok = [false; 4];
            let mut this_scale = [0f32; 4];
            let mut this_min = [0f32; 4];
            for g in 0..4 {
                let det = sum_w[g] * sum_l2[g] - sum_l[g] * sum_l[g];
                ok[g] = det > 0.0 && !flat[g];
                this_scale[g] = (sum_w[g] * sum_xl[g] - sum_x[g] * sum_l[g]) / det;
                this_min[g] = (sum_l2[g] * sum_x[g] - sum_l[g] * sum_xl[g]) / det;
                if this_min[g] > 0.0 {
                    this_min[g] = 0.0;
                    this_scale[g] = sum_xl[g] / sum_l2[g];
                }
            }
            if !ok.iter().any(|&o| o) {
                continue;
            }
            let mut cur_error = [0f32; 4];
            for i in 0..N {
                for g in 0..4 {
                    let diff = this_scale[g] * f32::from(aux[i][g]) + this_min[g] - x[i][g];
                    cur_error[g] += w[i][g] * err(diff);
                }
            }
            for g in 0..4 {
                if ok[g] && cur_error[g] < best_error[g] {
                    for i in 0..N {
                        lt[i][g] = aux[i][g];
                    }
                    best_error[g] = cur_error[g];
                    scale[g] = this_scale[g];
                    min[g] = this_min[g];
                }
            }
        }
    }
    let mut out = [(0f32, 0f32); 4];
    for g in 0..4 {
        if flat[g] {
            l_out[g].fill(0);
            out[g] = (0.0, -min[g]);
        } else {
            for i in 0..N {
                l_out[g][i] = lt[i][g];
            }
            out[g] = (scale[g], -min[g]);
        }
    }
    out
}

/// Asymmetric fit `x ≈ scale·L + min` with `L ∈ 0..=nmax`, minimising the
/// weighted error over a grid of `nstep + 1` trial inverse scales
/// (llama.cpp `make_qkx2_quants`). Returns `(scale, −min)`; `min ≤ 0`.
///
/// The one-group form, kept as the reference that
/// [`make_qkx2_quants_x4`] is tested against.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    l_aux: &mut [u8; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..N {
        l_out[i] = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
    }
    for i in 0..N {
        let diff = scale * f32::from(l_out[i]) + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let mut sum_l = 0f32;
        let mut sum_l2 = 0f32;
        let mut sum_xl = 0f32;
        // levels first (vectorizes), then the sums in C's order
        for i in 0..N {
            l_aux[i] = nearest_int(iscale * (x[i] - min)).clamp(0, nmax) as u8;
        }
        for i in 0..N {
            let lf = f32::from(l_aux[i]);
            let w = weights[i];
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..N {
                let diff = this_scale * l_aux[i] as f32 + this_min - x[i];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out.copy_from_slice(l_aux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Symmetric fit `x ≈ scale·(L − nmax)` with `L ∈ 0..2·nmax`, weights `x²`,
/// refined by coordinate descent (llama.cpp `make_q3_quants` with
/// `do_rmse = true`). An all-zero group gives `L = 0` and scale 0.
///
/// The per-value products `w·x` and `w` are computed once up front (C
/// recomputes the same f32 values each time), the first levels and their
/// products vectorize, and the sums keep C's order.
#[inline(always)]
pub(super) fn make_q3_quants(nmax: i32, x: &[f32; 16], l_out: &mut [i8; 16]) -> f32 {
    let (max, amax) = absmax_from_zero(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut w = [0f32; 16];
    let mut wx = [0f32; 16];
    let mut lf = [0f32; 16];
    for i in 0..16 {
        let l = nearest_int(iscale * x[i]).max(-nmax).min(nmax - 1);
        l_out[i] = l as i8;
        w[i] = x[i] * x[i];
        wx[i] = w[i] * x[i];
        lf[i] = l as f32;
    }
    let mut sumlx = 0f32;
    let mut suml2 = 0f32;
    for i in 0..16 {
        sumlx += wx[i] * lf[i];
        suml2 += w[i] * lf[i] * lf[i];
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..16 {
            let li = f32::from(l_out[i]);
            let mut slx = sumlx - wx[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w[i] * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).max(-nmax).min(nmax - 1);
                if new_l != i32::from(l_out[i]) {
                    let nl = new_l as f32;
                    slx += wx[i] * nl;
                    sl2 += w[i] * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l += nmax as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// Symmetric fit with weights `x²` over 19 trial scales around `−nmax/max`
/// (llama.cpp `make_qx_quants` with `rmse_type = 1` and no importance
/// weights). `L = l + nmax ∈ 0..2·nmax`; an all-zero group gives `L = 0`.
///
/// C runs the first pass (`is = 0`) and then the trials `is = −9..=9` one after
/// the other, each summing over the group in order. Here all 19 scales are
/// summed side by side (one accumulator pair per trial, each still summed in
/// the group's order, so every sum is the same f32 value); that turns 19
/// serial add chains into vector lanes. The sequential choice of the best
/// trial is then replayed on the sums, and the winner's levels recomputed.
#[inline(always)]
pub(super) fn make_qx_quants(nmax: i32, x: &[f32; 16], l_out: &mut [u8; 16]) -> f32 {
    /// Trials `is = −9..=9` at lane `is + 9`, padded to a whole number of vectors.
    const LANES: usize = 20;
    let (max, amax) = absmax_from_zero(x);
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let mut iscale = [0f32; LANES];
    for (t, s) in iscale.iter_mut().enumerate() {
        // lane 9 (is = 0) is C's first pass: nmax + 0.1·0 == nmax exactly
        *s = -(nmax_f + 0.1 * (t as i32 - 9) as f32) / max;
    }
    let mut sumlx = [0f32; LANES];
    let mut suml2 = [0f32; LANES];
    for &xi in x {
        let w = xi * xi;
        let wx = w * xi;
        for t in 0..LANES {
            let lf = nearest_int(iscale[t] * xi).clamp(-nmax, nmax - 1) as f32;
            sumlx[t] += wx * lf;
            suml2[t] += w * lf * lf;
        }
    }
    let mut best_t = 9;
    let mut scale = if suml2[9] != 0.0 {
        sumlx[9] / suml2[9]
    } else {
        0.0
    };
    let mut best = scale * sumlx[9];
    for t in (0..9).chain(10..19) {
        if suml2[t] > 0.0 && sumlx[t] * sumlx[t] > best * suml2[t] {
            best_t = t;
            scale = sumlx[t] / suml2[t];
            best = scale * sumlx[t];
        }
    }
    let is = iscale[best_t];
    for (l, &xi) in l_out.iter_mut().zip(x) {
        *l = (nearest_int(is * xi).clamp(-nmax, nmax - 1) + nmax) as u8;
    }
    scale
}

/// Dequantizes one 64-value chunk of Q4_K (`FIFTH = false`) or Q5_K: value
/// `l < 32` is `d1 · q1 − m1` with `q1` the low nibble of `q[l]`, value
/// `32 + l` is `d2 · q2 − m2` with `q2` its high nibble; for Q5_K bit 0 of
/// `h[l]` is `q1`'s fifth bit and bit 1 `q2`'s. One f32 multiply, then a
/// subtract, as in C.
///
/// On x86_64 this is SSE2 intrinsics (part of the x86_64 baseline, so no
/// runtime detection): LLVM's auto-vectorizer loads only four or eight quant
/// bytes at a time here, while one 16-byte load unpacked to four `i32x4` is
/// about half the instructions. `cvtdq2ps`, `mulps` and `subps` round exactly
/// as the scalar `f32` operations, so the results are the same bits as the
/// portable loop.
#[inline(always)]
pub(super) fn dequant_chunk<const FIFTH: bool>(
    q: &[u8; 32],
    h: &[u8; 32],
    (d1, m1, d2, m2): (f32, f32, f32, f32),
    out: &mut [f32; 64],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the SSE2 intrinsics are available on every x86_64 target; the
    // loads read 16 bytes at offsets 0 and 16 of `q` and `h`, and `affine16`
    // writes 16 f32 at offsets 0, 16, 32 and 48 of `out`, all unaligned.
    unsafe {
        use std::arch::x86_64::{
            __m128i, _mm_and_si128, _mm_loadu_si128, _mm_or_si128, _mm_set1_epi8, _mm_set1_ps,
            _mm_slli_epi16, _mm_srli_epi16,
        };
        let (d1v, m1v) = (_mm_set1_ps(d1), _mm_set1_ps(m1));
        let (d2v, m2v) = (_mm_set1_ps(d2), _mm_set1_ps(m2));
        let (nib, bit) = (_mm_set1_epi8(0x0f), _mm_set1_epi8(0x10));
        let o = out.as_mut_ptr();
        for k in 0..2 {
            let v = _mm_loadu_si128(q.as_ptr().add(16 * k).cast::<__m128i>());
            // 16-bit shifts move bits across the byte boundary; the masks drop them
            let mut lo = _mm_and_si128(v, nib);
            let mut hi = _mm_and_si128(_mm_srli_epi16(v, 4), nib);
            if FIFTH {
                let hv = _mm_loadu_si128(h.as_ptr().add(16 * k).cast::<__m128i>());
                lo = _mm_or_si128(lo, _mm_and_si128(_mm_slli_epi16(hv, 4), bit));
                hi = _mm_or_si128(hi, _mm_and_si128(_mm_slli_epi16(hv, 3), bit));
            }
            sse2::affine16(lo, d1v, m1v, o.add(16 * k));
            sse2::affine16(hi, d2v, m2v, o.add(32 + 16 * k));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let (o1, o2) = out.split_at_mut(32);
        for (((a, b), &v), &hb) in o1.iter_mut().zip(o2).zip(q).zip(h) {
            let (mut q1, mut q2) = (v & 0x0f, v >> 4);
            if FIFTH {
                q1 |= (hb & 1) << 4;
                q2 |= (hb & 2) << 3;
            }
            *a = d1 * f32::from(q1) - m1;
            *b = d2 * f32::from(q2) - m2;
        }
    }
}

/// SSE2 building blocks (x86_64 baseline).
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128, __m128i, _mm_cvtepi32_ps, _mm_mul_ps, _mm_setzero_si128, _mm_storeu_ps, _mm_sub_ps,
        _mm_unpackhi_epi8, _mm_unpackhi_epi16, _mm_unpacklo_epi8, _mm_unpacklo_epi16,
    };

    /// Writes `d · q[i] − m` for the 16 bytes of `v` to `out[0..16]`.
    ///
    /// # Safety
    /// `out` must be valid for 16 f32 writes (no alignment needed).
    #[inline(always)]
    pub(super) unsafe fn affine16(v: __m128i, d: __m128, m: __m128, out: *mut f32) {
        // SAFETY: SSE2 is always available on x86_64; the caller guarantees
        // 16 writable f32 at `out`.
        unsafe {
            let z = _mm_setzero_si128();
            let (lo, hi) = (_mm_unpacklo_epi8(v, z), _mm_unpackhi_epi8(v, z));
            let words = [
                _mm_unpacklo_epi16(lo, z),
                _mm_unpackhi_epi16(lo, z),
                _mm_unpacklo_epi16(hi, z),
                _mm_unpackhi_epi16(hi, z),
            ];
            for (i, w) in words.into_iter().enumerate() {
                _mm_storeu_ps(
                    out.add(4 * i),
                    _mm_sub_ps(_mm_mul_ps(d, _mm_cvtepi32_ps(w)), m),
                );
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) from Q4_K/Q5_K's 12 packed
/// scale bytes (llama.cpp `get_scale_min_k4`).
#[inline(always)]
pub(super) fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The eight sub-block scales `d · sc_j` and mins `dmin · m_j` of a Q4_K/Q5_K
/// super-block (the products C forms per sub-block, unpacked all at once).
#[inline(always)]
pub(super) fn scales_mins_k4(d: f32, dmin: f32, q: &[u8; 12]) -> ([f32; 8], [f32; 8]) {
    let mut dl = [0f32; 8];
    let mut ml = [0f32; 8];
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, q);
        dl[j] = d * f32::from(sc);
        ml[j] = dmin * f32::from(m);
    }
    (dl, ml)
}

/// Packs eight 6-bit scales and mins into Q4_K/Q5_K's 12 bytes (the inverse of
/// [`get_scale_min_k4`]).
#[inline(always)]
pub(super) fn put_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The shared body of the Q4_K and Q5_K reference quantizers: per 32-value
/// sub-block an asymmetric fit with weights `sqrt(mean x²) + |x|`, then 6-bit
/// scales and mins under f16 super-scales, then the final levels against the
/// rounded scales. Returns `(d, dmin, scales, L)` with `L ∈ 0..=nmax`.
pub(super) fn quantize_qk_asym(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (u16, u16, [u8; 12], [u8; QK_K]) {
    use crate::float::{f16_to_f32, f32_to_f16};

    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for b in 0..2 {
        // four groups side by side: xt[l][g] is value l of group 4b + g
        let mut xt = [[0f32; 4]; 32];
        let mut wt = [[0f32; 4]; 32];
        for g in 0..4 {
            let j = 4 * b + g;
            let xs: &[f32; 32] = x[32 * j..32 * j + 32].try_into().expect("32 values");
            let mut sum_x2 = 0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for l in 0..32 {
                xt[l][g] = xs[l];
                wt[l][g] = av_x + xs[l].abs();
            }
        }
        let mut ls = [[0u8; 32]; 4];
        let fits = make_qkx2_quants_x4(nmax, &xt, &wt, &mut ls, rmin, 0.1, nstep, false);
        for g in 0..4 {
            let j = 4 * b + g;
            levels[32 * j..32 * j + 32].copy_from_slice(&ls[g]);
            let (scale, min) = fits[g];
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // C stores nearest_int's int into a uint8_t (wrapping), then MIN(63, ·)
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = put_scale_min_k4(&ls, &lm);
    let d = f32_to_f16(max_scale / 63.0);
    let dmin = f32_to_f16(max_min / 63.0);
    let (df, dminf) = (f16_to_f32(d), f16_to_f32(dmin));
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dl = df * f32::from(sc);
        if dl == 0.0 {
            continue;
        }
        let dm = dminf * f32::from(m);
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / dl).clamp(0, nmax);
            levels[32 * j + ii] = l as u8;
        }
    }
    (d, dmin, packed, levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4), -2);
        assert_eq!(nearest_int(4_194_303.0), 4_194_303);
        // non-finite input: no panic, some value
        let _ = nearest_int(f32::NAN);
        let _ = nearest_int(f32::INFINITY);
    }

    #[test]
    fn lane_absmax_equals_the_scan() {
        fn scan(x: &[f32; 16]) -> (f32, f32) {
            let (mut max, mut amax) = (0f32, 0f32);
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            (max, amax)
        }
        let specials = [0.0, -0.0, 1.0, -1.0, 3.0, -3.0, f32::NAN, f32::INFINITY];
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200_000 {
            let mut x = [0f32; 16];
            let exotic = s & 1 == 0;
            for v in &mut x {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *v = if exotic {
                    specials[(s % 8) as usize]
                } else {
                    (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                };
            }
            let (a, b) = absmax_from_zero(&x);
            let (c, d) = scan(&x);
            assert_eq!(
                (a.to_bits(), b.to_bits()),
                (c.to_bits(), d.to_bits()),
                "{x:?}"
            );
        }
    }

    fn qkx2_x4_case<const N: usize>(nmax: i32, rmin: f32, nstep: i32, use_mad: bool) {
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for round in 0..3000 {
            let mut xs = [[0f32; N]; 4];
            for (g, xg) in xs.iter_mut().enumerate() {
                let kind = (next() % 6) as usize;
                for v in xg.iter_mut() {
                    let r = (next() >> 40) as f32 / (1u64 << 24) as f32;
                    *v = match kind {
                        0 => 0.0,
                        1 => 0.25,
                        2 => r + 0.5,
                        3 => -r,
                        _ => (r - 0.5) * (1 + round % 7 + g) as f32,
                    };
                }
            }
            let mut xt = [[0f32; 4]; N];
            let mut wt = [[0f32; 4]; N];
            let mut ws = [[0f32; N]; 4];
            for g in 0..4 {
                for i in 0..N {
                    xt[i][g] = xs[g][i];
                    ws[g][i] = xs[g][i].abs() + 0.01 * (i % 3) as f32;
                    wt[i][g] = ws[g][i];
                }
            }
            let mut l4 = [[0u8; N]; 4];
            let fits = make_qkx2_quants_x4(nmax, &xt, &wt, &mut l4, rmin, 0.1, nstep, use_mad);
            for g in 0..4 {
                let (mut l1, mut aux) = ([0u8; N], [0u8; N]);
                let (a, b) = make_qkx2_quants(
                    nmax, &xs[g], &ws[g], &mut l1, &mut aux, rmin, 0.1, nstep, use_mad,
                );
                assert_eq!(
                    (a.to_bits(), b.to_bits()),
                    (fits[g].0.to_bits(), fits[g].1.to_bits())
                );
                assert_eq!(l1, l4[g]);
            }
        }
    }

    #[test]
    fn qkx2_four_groups_equal_one_at_a_time() {
        qkx2_x4_case::<16>(3, -0.5, 15, true);
        qkx2_x4_case::<32>(15, -1.0, 20, false);
        qkx2_x4_case::<32>(31, -0.5, 15, false);
        qkx2_x4_case::<32>(15, -1.0, 0, false);
    }

    #[test]
    fn scale_min_packing_round_trips() {
        let ls = [0, 1, 62, 63, 17, 32, 63, 5];
        let lm = [63, 0, 31, 8, 48, 63, 1, 40];
        let p = put_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &p), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
