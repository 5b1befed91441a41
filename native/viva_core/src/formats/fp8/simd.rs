//! The fp8 (E4M3, blocked scales) row dots and expansion, AVX-512 and AVX2 (the portable
//! lane loops are in linear.rs): f32 activations (x·2^60, blocks summed before their scale),
//! bf16 activations (`vdpbf16ps`, or f32 FMA on bf16-rounded weights), and the exact
//! dequantization of a row. E4M3 in the dots → f32 by integer ops alone (sign to bit 31,
//! exponent+mantissa to bits 26..20: value·2^-120, f32 subnormals for E4M3's), with x taken as
//! x·2^60 ([`fp8_x`]) so the products stay normal; `vcvtph2ps` (E4M3's fields as an f16,
//! value/256) was the fp8 dot's bottleneck on Zen 4 and stays only in the exact dequantization
//! ([`fp8_row_to_f32`]).
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
use crate::backend::cpu::simd::{bf16_round256, bf16_round512, hsum256};
use crate::backend::cpu::simd::{avx2, avx512, avx512_bf16, bf16_round};

/// One fp8 row dequantized to f32 into `dst` (k = dst.len() values), exactly as
/// `PackedFp8::get` (code value × scale, one rounding). `false` (dst untouched) without AVX-512.
pub fn fp8_row_to_f32(codes: &[u8], scales: &[f32], block: usize, dst: &mut [f32]) -> bool {
    let k = dst.len();
    if !avx512() || !fp8_row_fits(codes.len(), scales.len(), block, k.div_ceil(16) * 16, k) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F present; code loads stay below codes.len() (whole 16-vectors, checked
    // above), stores below k, scale indexes below k.div_ceil(block).
    unsafe {
        fp8_row_to_f32_avx512(codes, scales, block, dst);
        return true;
    }
    #[allow(unreachable_code)]
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn fp8_row_to_f32_avx512(codes: &[u8], scales: &[f32], block: usize, dst: &mut [f32]) {
    let k = dst.len();
    let shift = scale_shift(block, k);
    let mut j = 0;
    while 16 * (j + 1) <= k {
        // (value / 256) · (scale · 256): both factors exact, one rounding, = value · scale
        let v = _mm512_mul_ps(load_e4m3(codes.as_ptr().add(16 * j)), scale16(scales, j >> shift));
        _mm512_storeu_ps(dst.as_mut_ptr().add(16 * j), v);
        j += 1;
    }
    for c in 16 * j..k {
        dst[c] = super::codec::e4m3_decode(codes[c]) * scales[c / block];
    }
}

/// Σ bf16(w[c])·x[c] for an fp8 row (`Activations::Bf16`): each weight dequantized as
/// `PackedFp8::get`, rounded to bf16 (nearest even), multiplied with x given as bf16 (`xb`, k)
/// in `vdpbf16ps`: the products of gemm's bf16 kernel, so decode and prefill agree (weights
/// are formed as value·scale·2^-60 and the sum scaled back, so a |value·scale| below 2^-66
/// reads as 0). `None` without AVX512_BF16, when the slices are short, or when the sum is not
/// finite (a scale ≥ 2^68 overflows here; the caller's portable path then decides).
pub fn dot_fp8_bf16(codes: &[u8], scales: &[f32], block: usize, xb: &[u16]) -> Option<f32> {
    let k = xb.len();
    if !avx512_bf16() || !fp8_row_fits(codes.len(), scales.len(), block, k, k) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512_BF16/F present; code and x loads are whole 16-vectors below k ≤
    // codes.len() (checked above), scale indexes below k.div_ceil(block).
    return Some(unsafe { dot_fp8_bf16_avx512(codes, scales, block, xb) }).filter(|v| v.is_finite());
    #[allow(unreachable_code)]
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
pub(super) unsafe fn dot_fp8_bf16_avx512(codes: &[u8], scales: &[f32], block: usize, xb: &[u16]) -> f32 {
    let k = xb.len();
    let shift = scale_shift(block, k);
    let (cp, xp) = (codes.as_ptr(), xb.as_ptr());
    // 16 weights of vector j as f32 value·scale·2^-60 (one rounding, as value·scale)
    let w = |j: usize| _mm512_mul_ps(load_e4m3_biased(cp.add(16 * j)), _mm512_set1_ps(*scales.get_unchecked(j >> shift) * X_SHIFT));
    let ldx = |i: usize| -> __m512bh { std::mem::transmute(_mm512_loadu_si512(xp.add(i) as *const __m512i)) };
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut j = 0; // 16-code vector index
    while 16 * (j + 4) <= k {
        _mm_prefetch(cp.wrapping_add(16 * j + PREFETCH_AHEAD) as *const i8, _MM_HINT_T0);
        a0 = _mm512_dpbf16_ps(a0, _mm512_cvtne2ps_pbh(w(j + 1), w(j)), ldx(16 * j));
        a1 = _mm512_dpbf16_ps(a1, _mm512_cvtne2ps_pbh(w(j + 3), w(j + 2)), ldx(16 * j + 32));
        j += 4;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) * X_SHIFT + fp8_bf16_tail(codes, scales, block, 16 * j..k, |c| f32::from_bits((xb[c] as u32) << 16))
}

/// [`dot_fp8_bf16`]'s products where `vdpbf16ps` is missing: x given as its bf16 values in f32
/// (`xr`, k), each weight formed as there (value·scale·2^-60, one rounding), rounded to bf16 in
/// registers by [`bf16_bits`]' rule and multiplied in f32 FMA (bf16 × bf16 products are exact).
/// AVX-512F, else AVX2; `None` elsewhere, for rows [`dot_fp8`] does not take, or when the sum is
/// not finite (the caller's portable path then decides). Without it such rows were expanded and
/// rounded one by one: 4-8x slower than the f32-activation dot.
pub fn dot_fp8_bf16r(codes: &[u8], scales: &[f32], block: usize, xr: &[f32]) -> Option<f32> {
    let k = xr.len();
    if !fp8_row_fits(codes.len(), scales.len(), block, k, k) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            // SAFETY: AVX-512F present; code and x loads are whole 16-vectors below k ≤
            // codes.len() (checked above), scale indexes below k.div_ceil(block).
            return Some(unsafe { dot_fp8_bf16r_avx512(codes, scales, block, xr) }).filter(|v| v.is_finite());
        }
        if avx2() {
            // SAFETY: AVX2/FMA present (checked by `avx2`); reads as above, 8 at a time.
            return Some(unsafe { dot_fp8_bf16r_avx2(codes, scales, block, xr) }).filter(|v| v.is_finite());
        }
    }
    None
}

/// The bf16-weight fp8 dots' scalar tail over codes `cols`: bf16(value·scale) (as
/// `PackedFp8::get`, rounded) times x's bf16 value `x(c)`.
pub(super) fn fp8_bf16_tail(codes: &[u8], scales: &[f32], block: usize, cols: std::ops::Range<usize>, x: impl Fn(usize) -> f32) -> f32 {
    cols.map(|c| bf16_round(super::codec::e4m3_decode(codes[c]) * scales[c / block]) * x(c)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dot_fp8_bf16r_avx512(codes: &[u8], scales: &[f32], block: usize, xr: &[f32]) -> f32 {
    let k = xr.len();
    let shift = scale_shift(block, k);
    let (cp, xp) = (codes.as_ptr(), xr.as_ptr());
    // 16 weights of vector j: bf16(value·scale)·2^-60
    let w = |j: usize| bf16_round512::<false>(_mm512_mul_ps(load_e4m3_biased(cp.add(16 * j)), _mm512_set1_ps(*scales.get_unchecked(j >> shift) * X_SHIFT)));
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut j = 0; // 16-code vector index
    while 16 * (j + 4) <= k {
        _mm_prefetch(cp.wrapping_add(16 * j + PREFETCH_AHEAD) as *const i8, _MM_HINT_T0);
        for (u, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(w(j + u), _mm512_loadu_ps(xp.add(16 * (j + u))), *a);
        }
        j += 4;
    }
    while 16 * (j + 1) <= k {
        acc[0] = _mm512_fmadd_ps(w(j), _mm512_loadu_ps(xp.add(16 * j)), acc[0]);
        j += 1;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) * X_SHIFT + fp8_bf16_tail(codes, scales, block, 16 * j..k, |c| xr[c])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_fp8_bf16r_avx2(codes: &[u8], scales: &[f32], block: usize, xr: &[f32]) -> f32 {
    let k = xr.len();
    let shift = scale_shift(block, k);
    let (cp, xp) = (codes.as_ptr(), xr.as_ptr());
    // 8 weights from code c (c a multiple of 8, so one 16-code vector's scale): as the AVX-512 body
    let w = |c: usize| bf16_round256(_mm256_mul_ps(load_e4m3_biased8(cp.add(c)), _mm256_set1_ps(*scales.get_unchecked((c >> 4) >> shift) * X_SHIFT)));
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut c = 0;
    while c + 32 <= k {
        _mm_prefetch(cp.wrapping_add(c + PREFETCH_AHEAD) as *const i8, _MM_HINT_T0);
        for (u, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(w(c + 8 * u), _mm256_loadu_ps(xp.add(c + 8 * u)), *a);
        }
        c += 32;
    }
    while c + 16 <= k {
        acc[0] = _mm256_fmadd_ps(w(c), _mm256_loadu_ps(xp.add(c)), acc[0]);
        acc[1] = _mm256_fmadd_ps(w(c + 8), _mm256_loadu_ps(xp.add(c + 8)), acc[1]);
        c += 16;
    }
    hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) * X_SHIFT + fp8_bf16_tail(codes, scales, block, c..k, |c| xr[c])
}

/// Whether one fp8 row (`codes`, `scales` long) with `block` codes per scale suits the AVX-512
/// kernels for k values: at least `need` codes, a scale for every block, blocks that are whole
/// 16-code vectors and (below k) a power of two of them, so vector j's scale is j >> shift.
pub(super) fn fp8_row_fits(codes: usize, scales: usize, block: usize, need: usize, k: usize) -> bool {
    codes >= need && scales >= k.div_ceil(block).max(1) && block >= 16 && block.is_multiple_of(16) && (block >= k || (block / 16).is_power_of_two())
}

/// The shift from a 16-code vector index to its scale index (31 when one block covers k).
pub(super) fn scale_shift(block: usize, k: usize) -> u32 {
    if block >= k {
        31
    } else {
        (block / 16).trailing_zeros()
    }
}

/// 2^60: the factor [`fp8_x`] applies to x and [`dot_fp8`] takes back out of its sum.
pub(super) const X_SHIFT: f32 = (1u64 << 60) as f32;
/// Largest |x| [`fp8_x`] takes: x·2^60 times the largest code (480) stays below f32's max.
pub(super) const X_MAX: f32 = (1u64 << 56) as f32;

/// x prepared for [`dot_fp8`] (x·2^60, exact) into `dst`; `false` (dst not to be used: the
/// portable dot takes x itself) without AVX-512 or AVX2 or when an |x| is ≥ 2^56 or not
/// finite. One preparation serves every row of a linear.
pub fn fp8_x(x: &[f32], dst: &mut Vec<f32>) -> bool {
    if !(avx512() || avx2()) || !x.iter().all(|v| v.abs() < X_MAX) {
        return false;
    }
    dst.clear();
    dst.extend(x.iter().map(|v| v * X_SHIFT));
    true
}

/// Σ_c decode(code_c)·scale(c)·x_c over one fp8 row (see pack.rs for the layout):
/// `codes` ≥ k, `scales` the row's blocks_per_row scales, `block` codes per scale, `xs` = x
/// prepared by [`fp8_x`] (k = xs.len()). Blocks are summed in f32 before their scale (segments
/// of at most 128 codes), four segments in flight; a |product| below 2^-66 is flushed.
pub fn dot_fp8(codes: &[u8], scales: &[f32], block: usize, xs: &[f32]) -> Option<f32> {
    let k = xs.len();
    if !fp8_row_fits(codes.len(), scales.len(), block, k, k) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            // SAFETY: as `dot16`; segment and vector scale indexes (c / block for c < k) are
            // below scales.len() by the check above.
            return Some(unsafe { dot_fp8_avx512(codes, scales, block, xs) });
        }
        if avx2() {
            // SAFETY: AVX2/FMA present (checked by `avx2`); reads as above.
            return Some(unsafe { dot_fp8_avx2(codes, scales, block, xs) });
        }
    }
    None
}

/// 16 E4M3 codes → 16 f32 of value·2^-120 (exact; E4M3 subnormals become f32 subnormals):
/// the sign-extended byte shifted left by 20 puts the sign in bits 31..27 and
/// exponent+mantissa in bits 26..20, the low bits of f32's exponent and the top of its
/// mantissa; masking bits 30..27 leaves the f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn load_e4m3_biased(p: *const u8) -> __m512 {
    let c = _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i));
    _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32(c, 20), _mm512_set1_epi32(0x87F0_0000u32 as i32)))
}

/// [`load_e4m3_biased`] for 8 codes in 256-bit registers (the AVX2 fp8 dots).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn load_e4m3_biased8(p: *const u8) -> __m256 {
    let c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i));
    _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32::<20>(c), _mm256_set1_epi32(0x87F0_0000u32 as i32)))
}

/// Scale `b` times 256 (the E4M3-as-f16 bias), broadcast.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn scale16(scales: &[f32], b: usize) -> __m512 {
    _mm512_set1_ps(*scales.get_unchecked(b) * 256.0)
}

/// 16 E4M3 codes → 16 f32 of value/256 (exact). Sign-extending the byte puts the sign in bits
/// 15..8; shifted left by 7 it fills bits 15 and 14 and the exponent+mantissa land in bits 13..7:
/// clearing bit 14 leaves the f16 bits of value/256.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn load_e4m3(p: *const u8) -> __m512 {
    let c = _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i));
    _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(c, 7), _mm256_set1_epi16(0xBFFFu16 as i16)))
}

/// Bytes ahead of the current position that the fp8 row dots prefetch (the next row is contiguous,
/// so the stream runs on across rows). 2 KB measured best for the fp8 decode GEMV from DRAM
/// (k = 2048 and 5632, Zen 4; 1 KB was 5–10 % slower on down_proj).
pub(super) const PREFETCH_AHEAD: usize = 2048;

/// Σ over `n` 16-code vectors from code/x offset `c` of w'·x' (value·x·2^-60): one chain, a
/// multiply then FMAs (its scale is applied by the caller).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn segment(cp: *const u8, xp: *const f32, c: usize, n: usize) -> __m512 {
    let mut p = _mm512_mul_ps(load_e4m3_biased(cp.add(c)), _mm512_loadu_ps(xp.add(c)));
    for v in 1..n {
        p = _mm512_fmadd_ps(load_e4m3_biased(cp.add(c + 16 * v)), _mm512_loadu_ps(xp.add(c + 16 * v)), p);
    }
    p
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn dot_fp8_avx512(codes: &[u8], scales: &[f32], block: usize, xs: &[f32]) -> f32 {
    let k = xs.len();
    let (cp, xp) = (codes.as_ptr(), xs.as_ptr());
    // code c's scale index: c >> sh (blocks are 16·2^i codes, or one block covers k)
    let sh = scale_shift(block, k) + 4;
    let scale = |c: usize| _mm512_set1_ps(*scales.get_unchecked(c >> sh));
    // segments of one scale, at most 8 vectors (one chain each; four chains in flight)
    let seg = block.min(128);
    let nv = seg / 16;
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut c = 0;
    while c + 4 * seg <= k {
        for l in (0..4 * seg).step_by(64) {
            _mm_prefetch(cp.wrapping_add(c + l + PREFETCH_AHEAD) as *const i8, _MM_HINT_T0);
        }
        for (u, a) in acc.iter_mut().enumerate() {
            let cu = c + u * seg;
            *a = _mm512_fmadd_ps(segment(cp, xp, cu, nv), scale(cu), *a);
        }
        c += 4 * seg;
    }
    while c + 16 <= k {
        acc[0] = _mm512_fmadd_ps(segment(cp, xp, c, 1), scale(c), acc[0]);
        c += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) * X_SHIFT + fp8_tail(codes, scales, block, xs, c)
}

/// The fp8 dots' last k % 16 codes (from `c`, all in the last vector's block): value·x·2^60,
/// scaled back.
pub(super) fn fp8_tail(codes: &[u8], scales: &[f32], block: usize, xs: &[f32], c: usize) -> f32 {
    if c >= xs.len() {
        return 0.0;
    }
    let tail: f32 = (c..xs.len()).map(|i| super::codec::e4m3_decode(codes[i]) * xs[i]).sum();
    tail * (1.0 / X_SHIFT) * scales[c / block]
}

/// [`dot_fp8_avx512`] in 256-bit registers: the same integer decode 8 codes at a time, a
/// 16-code vector as two 8-lane chains. (The autovectorised portable dot, compiled for AVX2,
/// decodes by a select between normal and subnormal forms: ~2x slower.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_fp8_avx2(codes: &[u8], scales: &[f32], block: usize, xs: &[f32]) -> f32 {
    let k = xs.len();
    let (cp, xp) = (codes.as_ptr(), xs.as_ptr());
    let sh = scale_shift(block, k) + 4;
    let scale = |c: usize| _mm256_set1_ps(*scales.get_unchecked(c >> sh));
    let ld = |c: usize| load_e4m3_biased8(cp.add(c));
    // Σ over n 16-code vectors from c, one scale
    let segment = |c: usize, n: usize| {
        let (mut p0, mut p1) = (_mm256_mul_ps(ld(c), _mm256_loadu_ps(xp.add(c))), _mm256_mul_ps(ld(c + 8), _mm256_loadu_ps(xp.add(c + 8))));
        for v in 1..n {
            let o = c + 16 * v;
            p0 = _mm256_fmadd_ps(ld(o), _mm256_loadu_ps(xp.add(o)), p0);
            p1 = _mm256_fmadd_ps(ld(o + 8), _mm256_loadu_ps(xp.add(o + 8)), p1);
        }
        _mm256_add_ps(p0, p1)
    };
    let seg = block.min(128);
    let nv = seg / 16;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut c = 0;
    while c + 4 * seg <= k {
        for l in (0..4 * seg).step_by(64) {
            _mm_prefetch(cp.wrapping_add(c + l + PREFETCH_AHEAD) as *const i8, _MM_HINT_T0);
        }
        for (u, a) in acc.iter_mut().enumerate() {
            let cu = c + u * seg;
            *a = _mm256_fmadd_ps(segment(cu, nv), scale(cu), *a);
        }
        c += 4 * seg;
    }
    while c + 16 <= k {
        acc[0] = _mm256_fmadd_ps(segment(c, 1), scale(c), acc[0]);
        c += 16;
    }
    hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) * X_SHIFT + fp8_tail(codes, scales, block, xs, c)
}
