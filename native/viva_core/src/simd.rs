//! AVX-512 row dot products for the decode GEMVs (one weight row · x), chosen at run time
//! (tuning.rs), with AVX2 twins where CPUs without AVX-512 need them (16-bit
//! weights, attention's q·k); `None` means "not here": the caller runs its portable lane loop,
//! which stays the `_ref`-tested fallback. Weights decode in registers:
//! bf16 → f32 by a 16-bit shift, f16 → f32 by `vcvtph2ps`. E4M3 in the dots → f32 by integer
//! ops alone (sign to bit 31, exponent+mantissa to bits 26..20: value·2^-120, f32 subnormals
//! for E4M3's), with x taken as x·2^60 ([`fp8_x`]) so the products stay normal; `vcvtph2ps`
//! (E4M3's fields as an f16, value/256) was the fp8 dot's bottleneck on Zen 4 and stays only in
//! the exact dequantization ([`fp8_row_to_f32`]). Four accumulators keep the FMA pipes busy;
//! loads are unaligned.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the AVX-512 paths run here (`tuning`: the CPU has AVX-512F, not `VIVA_NO_AVX512`).
#[inline]
pub fn avx512() -> bool {
    crate::tuning::get().avx512
}

/// Whether the AVX2 kernels (with FMA and F16C) run here (`tuning`): what CPUs without AVX-512
/// use before the portable lanes.
#[inline]
pub fn avx2() -> bool {
    crate::tuning::get().avx2
}

/// Whether AVX512_BF16 (`vdpbf16ps`, `vcvtneps2bf16`) runs here, on top of [`avx512`].
#[inline]
pub fn avx512_bf16() -> bool {
    crate::tuning::get().avx512_bf16
}

/// `dst[i]` = bf16 bits of `src[i]`, round to nearest even ([`bf16_round`]: as
/// `half::bf16::from_f32`, but f32 subnormals become 0, as `vcvtneps2bf16` reads them), on
/// every path. dst.len() = src.len().
pub fn f32_to_bf16(src: &[f32], dst: &mut [u16]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512_bf16() {
        // SAFETY: AVX512_BF16 is present; reads and writes stay below n (whole 16-steps).
        i = unsafe { f32_to_bf16_avx512(&src[..n], &mut dst[..n]) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 present (checked by `avx2`); the body is safe Rust.
        return unsafe { bf16_bits_avx2(&src[i..n], &mut dst[i..n]) };
    }
    for j in i..n {
        dst[j] = bf16_bits(src[j]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn bf16_bits_avx2(src: &[f32], dst: &mut [u16]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = bf16_bits(v);
    }
}

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
unsafe fn fp8_row_to_f32_avx512(codes: &[u8], scales: &[f32], block: usize, dst: &mut [f32]) {
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
        dst[c] = crate::quant::fp8::e4m3_decode(codes[c]) * scales[c / block];
    }
}

/// The 16-wide part of [`f32_to_bf16`]; returns how many it converted.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2")]
unsafe fn f32_to_bf16_avx512(src: &[f32], dst: &mut [u16]) -> usize {
    let mut i = 0;
    while i + 16 <= src.len() {
        let v = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(i)));
        _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, std::mem::transmute::<__m256bh, __m256i>(v));
        i += 16;
    }
    i
}

/// Σ w[i]·x[i] for a bf16 row (`row`: 2k little-endian bytes, any alignment) against x rounded
/// to bf16 (`xb`, k; `Activations::Bf16`), summed in f32: one `vdpbf16ps` per 32 weights. `None`
/// without AVX512_BF16.
pub fn dot_bf16_bf16(row: &[u8], xb: &[u16]) -> Option<f32> {
    let k = xb.len();
    if !avx512_bf16() || row.len() < 2 * k {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512_BF16 present; loads stay below 2k bytes of row and k u16 of xb.
    return Some(unsafe { dot_bf16_bf16_avx512(row.as_ptr(), xb) });
    #[allow(unreachable_code)]
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn dot_bf16_bf16_avx512(row: *const u8, xb: &[u16]) -> f32 {
    let ld = |p: *const u16| -> __m512bh { std::mem::transmute(_mm512_loadu_si512(p as *const __m512i)) };
    let (k, x, w16) = (xb.len(), xb.as_ptr(), row as *const u16);
    // two independent chains (64 weights per step) hide vdpbf16ps' latency
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    // no software prefetch: one sequential stream per core is what the hardware prefetcher
    // serves best (measured on Zen 4: 27 vs 21 GB/s on one core with a 1–2 KB prefetch)
    while i + 64 <= k {
        a0 = _mm512_dpbf16_ps(a0, ld(w16.add(i)), ld(x.add(i)));
        a1 = _mm512_dpbf16_ps(a1, ld(w16.add(i + 32)), ld(x.add(i + 32)));
        i += 64;
    }
    if i + 32 <= k {
        a0 = _mm512_dpbf16_ps(a0, ld(w16.add(i)), ld(x.add(i)));
        i += 32;
    }
    let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    let up = |b: u16| f32::from_bits((b as u32) << 16);
    while i < k {
        sum += up(std::ptr::read_unaligned(w16.add(i))) * up(*x.add(i));
        i += 1;
    }
    sum
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
unsafe fn dot_fp8_bf16_avx512(codes: &[u8], scales: &[f32], block: usize, xb: &[u16]) -> f32 {
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
fn fp8_bf16_tail(codes: &[u8], scales: &[f32], block: usize, cols: std::ops::Range<usize>, x: impl Fn(usize) -> f32) -> f32 {
    cols.map(|c| bf16_round(crate::quant::fp8::e4m3_decode(codes[c]) * scales[c / block]) * x(c)).sum()
}

/// 16 f32 rounded to bf16 (as f32) by [`bf16_round`]'s rule: nearest even by adding 0x7FFF plus
/// the kept LSB. `EXACT`: bit for bit as [`bf16_round`] on every input (a zero exponent → signed
/// zero, NaN → its quiet bf16 NaN: the add alone could carry a NaN into the sign or out of the
/// word) — the GEMM's rounded weights. Otherwise finite and infinite values only, a zero
/// exponent → +0 — the fp8 dots, whose weights (value · a finite scale) are never NaN and whose
/// sums ±0 does not change; five ops fewer, ~35 % of that decode dot's time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn bf16_round512<const EXACT: bool>(v: __m512) -> __m512 {
    let b = _mm512_castps_si512(v);
    let hi = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let up = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)), lsb);
    if !EXACT {
        let normal = _mm512_test_epi32_mask(b, _mm512_set1_epi32(0x7F80_0000));
        return _mm512_castsi512_ps(_mm512_maskz_and_epi32(normal, up, hi));
    }
    let zero_exp = _mm512_testn_epi32_mask(b, _mm512_set1_epi32(0x7F80_0000));
    let r = _mm512_mask_and_epi32(_mm512_and_si512(up, hi), zero_exp, b, _mm512_set1_epi32(i32::MIN));
    let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(b, _mm512_set1_epi32(i32::MAX)), _mm512_set1_epi32(0x7F80_0000));
    // (b & 0xFFFF0000) | 0x00400000: the quiet bit, as bf16_bits
    let quiet = _mm512_ternarylogic_epi32::<0xEA>(b, hi, _mm512_set1_epi32(0x0040_0000));
    _mm512_castsi512_ps(_mm512_mask_mov_epi32(r, nan, quiet))
}

/// [`bf16_round512`] (its finite form: the AVX2 fp8 dot) on 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bf16_round256(v: __m256) -> __m256 {
    let b = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
    let up = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), lsb), _mm256_set1_epi32(0xFFFF_0000u32 as i32));
    let zero_exp = _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7F80_0000)), _mm256_setzero_si256());
    _mm256_castsi256_ps(_mm256_andnot_si256(zero_exp, up))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_fp8_bf16r_avx512(codes: &[u8], scales: &[f32], block: usize, xr: &[f32]) -> f32 {
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
unsafe fn dot_fp8_bf16r_avx2(codes: &[u8], scales: &[f32], block: usize, xr: &[f32]) -> f32 {
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

/// `v` rounded to bf16 (nearest even) as f32, as `vcvtneps2bf16` does it: f32 subnormals
/// become (signed) zero. The scalar twin of the bf16 paths' rounding.
#[inline]
pub fn bf16_round(v: f32) -> f32 {
    f32::from_bits((bf16_bits(v) as u32) << 16)
}

/// The bf16 bits of [`bf16_round`]`(v)`, branch-free so slice loops vectorise: NaN → quiet NaN
/// (as `half` and `vcvtneps2bf16`), zero exponent → signed zero, else round to nearest even by
/// adding 0x7FFF plus the kept LSB (a carry is the next binade, or inf).
#[inline(always)]
pub fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let out = if b & 0x7FFF_FFFF > 0x7F80_0000 {
        (b >> 16) | 0x40
    } else if b & 0x7F80_0000 == 0 {
        (b >> 16) & 0x8000
    } else {
        rounded
    };
    out as u16
}

/// Σ a[i]·b[i] (attention's q·k), AVX-512, else the 16-lane body compiled for AVX2+FMA, else
/// that body on the baseline target.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F present; loads stay below n in both slices.
        return unsafe { dot_f32_avx512(&a[..n], &b[..n]) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2/FMA present (checked by `avx2`); the body is safe Rust.
        return unsafe { dot_f32_lanes_avx2(&a[..n], &b[..n]) };
    }
    dot_f32_lanes(&a[..n], &b[..n])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_f32_lanes_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_lanes(a, b)
}

/// The portable q·k: 16 independent lanes (equal lengths).
#[inline(always)]
fn dot_f32_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let mut acc = [0f32; 16];
    for (x, y) in a[..n].chunks_exact(16).zip(b[..n].chunks_exact(16)) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail = n - n % 16;
    acc.iter().sum::<f32>() + a[tail..n].iter().zip(&b[tail..n]).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_f32_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i + 16)), _mm512_loadu_ps(b.as_ptr().add(i + 16)), a1);
        i += 32;
    }
    if i + 16 <= n {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), a0);
        i += 16;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// 16-bit weight kinds of [`dot16`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Half {
    Bf16,
    F16,
}

/// Σ w[i]·x[i] for a row of k = x.len() 16-bit weights starting at `row` (little-endian bytes,
/// any alignment; `row.len()` ≥ 2k).
pub fn dot16(row: &[u8], kind: Half, x: &[f32]) -> Option<f32> {
    if row.len() < 2 * x.len() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if avx512() {
            // SAFETY: AVX-512F/AVX2/FMA are present (checked by `avx512`); every load stays
            // inside `row` (2k bytes) and `x` (k floats).
            return Some(unsafe { dot16_avx512(row.as_ptr(), kind, x) });
        }
        if avx2() {
            // SAFETY: AVX2/FMA/F16C are present (checked by `avx2`); loads as above.
            return Some(unsafe { dot16_avx2(row.as_ptr(), kind, x) });
        }
    }
    None
}

/// [`dot16`] for a bf16 row held as u16 values (the `Bf16` weight format).
pub fn dot_bf16(row: &[u16], x: &[f32]) -> Option<f32> {
    dot16(u16_le_bytes(row)?, Half::Bf16, x)
}

/// The bytes of bf16 bits held as u16 — the little-endian encoding the kernels read — on a
/// little-endian target (`None` elsewhere).
pub fn u16_le_bytes(v: &[u16]) -> Option<&[u8]> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    // SAFETY: the u16s are initialised and any byte pattern is a valid u8; the view covers
    // exactly the slice's 2·len bytes and borrows it.
    Some(unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2) })
}

/// Whether one fp8 row (`codes`, `scales` long) with `block` codes per scale suits the AVX-512
/// kernels for k values: at least `need` codes, a scale for every block, blocks that are whole
/// 16-code vectors and (below k) a power of two of them, so vector j's scale is j >> shift.
fn fp8_row_fits(codes: usize, scales: usize, block: usize, need: usize, k: usize) -> bool {
    codes >= need && scales >= k.div_ceil(block).max(1) && block >= 16 && block % 16 == 0 && (block >= k || (block / 16).is_power_of_two())
}

/// The shift from a 16-code vector index to its scale index (31 when one block covers k).
fn scale_shift(block: usize, k: usize) -> u32 {
    if block >= k {
        31
    } else {
        (block / 16).trailing_zeros()
    }
}

/// 2^60: the factor [`fp8_x`] applies to x and [`dot_fp8`] takes back out of its sum.
const X_SHIFT: f32 = (1u64 << 60) as f32;
/// Largest |x| [`fp8_x`] takes: x·2^60 times the largest code (480) stays below f32's max.
const X_MAX: f32 = (1u64 << 56) as f32;

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

/// Σ_c decode(code_c)·scale(c)·x_c over one fp8 row (see quant/fp8.rs for the layout):
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
unsafe fn load_e4m3_biased(p: *const u8) -> __m512 {
    let c = _mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i));
    _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32(c, 20), _mm512_set1_epi32(0x87F0_0000u32 as i32)))
}

/// [`load_e4m3_biased`] for 8 codes in 256-bit registers (the AVX2 fp8 dots).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn load_e4m3_biased8(p: *const u8) -> __m256 {
    let c = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i));
    _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32::<20>(c), _mm256_set1_epi32(0x87F0_0000u32 as i32)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn load16(p: *const u8, kind: Half) -> __m512 {
    let h = _mm256_loadu_si256(p as *const __m256i);
    match kind {
        Half::Bf16 => _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)),
        Half::F16 => _mm512_cvtph_ps(h),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot16_avx512(row: *const u8, kind: Half, x: &[f32]) -> f32 {
    let k = x.len();
    let xp = x.as_ptr();
    let (mut a0, mut a1, mut a2, mut a3) = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
    let mut i = 0;
    // no software prefetch, as in dot_bf16_bf16
    while i + 64 <= k {
        a0 = _mm512_fmadd_ps(load16(row.add(2 * i), kind), _mm512_loadu_ps(xp.add(i)), a0);
        a1 = _mm512_fmadd_ps(load16(row.add(2 * (i + 16)), kind), _mm512_loadu_ps(xp.add(i + 16)), a1);
        a2 = _mm512_fmadd_ps(load16(row.add(2 * (i + 32)), kind), _mm512_loadu_ps(xp.add(i + 32)), a2);
        a3 = _mm512_fmadd_ps(load16(row.add(2 * (i + 48)), kind), _mm512_loadu_ps(xp.add(i + 48)), a3);
        i += 64;
    }
    while i + 16 <= k {
        a0 = _mm512_fmadd_ps(load16(row.add(2 * i), kind), _mm512_loadu_ps(xp.add(i)), a0);
        i += 16;
    }
    let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    while i < k {
        let b = u16::from_le_bytes([*row.add(2 * i), *row.add(2 * i + 1)]);
        let w = match kind {
            Half::Bf16 => f32::from_bits((b as u32) << 16),
            Half::F16 => half::f16::from_bits(b).to_f32(),
        };
        sum += w * x[i];
        i += 1;
    }
    sum
}

/// The sum of a 256-bit register's 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum256(v: __m256) -> f32 {
    let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps::<1>(h, h)))
}

/// [`dot16_avx512`] in 256-bit registers (CPUs without AVX-512): 8 weights per FMA, four
/// accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot16_avx2(row: *const u8, kind: Half, x: &[f32]) -> f32 {
    let (k, xp) = (x.len(), x.as_ptr());
    let ld = |i: usize| -> __m256 {
        let h = _mm_loadu_si128(row.add(2 * i) as *const __m128i);
        match kind {
            Half::Bf16 => _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)),
            Half::F16 => _mm256_cvtph_ps(h),
        }
    };
    let (mut a0, mut a1, mut a2, mut a3) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 32 <= k {
        a0 = _mm256_fmadd_ps(ld(i), _mm256_loadu_ps(xp.add(i)), a0);
        a1 = _mm256_fmadd_ps(ld(i + 8), _mm256_loadu_ps(xp.add(i + 8)), a1);
        a2 = _mm256_fmadd_ps(ld(i + 16), _mm256_loadu_ps(xp.add(i + 16)), a2);
        a3 = _mm256_fmadd_ps(ld(i + 24), _mm256_loadu_ps(xp.add(i + 24)), a3);
        i += 32;
    }
    while i + 8 <= k {
        a0 = _mm256_fmadd_ps(ld(i), _mm256_loadu_ps(xp.add(i)), a0);
        i += 8;
    }
    let mut sum = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    while i < k {
        let b = u16::from_le_bytes([*row.add(2 * i), *row.add(2 * i + 1)]);
        let w = match kind {
            Half::Bf16 => f32::from_bits((b as u32) << 16),
            Half::F16 => half::f16::from_bits(b).to_f32(),
        };
        sum += w * x[i];
        i += 1;
    }
    sum
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
const PREFETCH_AHEAD: usize = 2048;

/// Σ over `n` 16-code vectors from code/x offset `c` of w'·x' (value·x·2^-60): one chain, a
/// multiply then FMAs (its scale is applied by the caller).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn segment(cp: *const u8, xp: *const f32, c: usize, n: usize) -> __m512 {
    let mut p = _mm512_mul_ps(load_e4m3_biased(cp.add(c)), _mm512_loadu_ps(xp.add(c)));
    for v in 1..n {
        p = _mm512_fmadd_ps(load_e4m3_biased(cp.add(c + 16 * v)), _mm512_loadu_ps(xp.add(c + 16 * v)), p);
    }
    p
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_fp8_avx512(codes: &[u8], scales: &[f32], block: usize, xs: &[f32]) -> f32 {
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
fn fp8_tail(codes: &[u8], scales: &[f32], block: usize, xs: &[f32], c: usize) -> f32 {
    if c >= xs.len() {
        return 0.0;
    }
    let tail: f32 = (c..xs.len()).map(|i| crate::quant::fp8::e4m3_decode(codes[i]) * xs[i]).sum();
    tail * (1.0 / X_SHIFT) * scales[c / block]
}

/// [`dot_fp8_avx512`] in 256-bit registers: the same integer decode 8 codes at a time, a
/// 16-code vector as two 8-lane chains. (The autovectorised portable dot, compiled for AVX2,
/// decodes by a select between normal and subnormal forms: ~2x slower.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_fp8_avx2(codes: &[u8], scales: &[f32], block: usize, xs: &[f32]) -> f32 {
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

/// e^x for 16 lanes, x ≤ 0 (softmax after max subtraction; -inf/very negative give 0):
/// x = n·ln2 + r with |r| ≤ ln2/2, e^r by the Cephes expf polynomial (≤ 2 ulp), times 2^n by
/// `vscalefps` (which also underflows correctly).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn exp512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.500_000_0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(y, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Result};
    use crate::quant::fp8::{Blocking, PackedFp8};

    /// [`exp512`] on a slice (for its test).
    fn exp_slice(x: &mut [f32]) -> bool {
        if !avx512() || x.len() % 16 != 0 {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F present; whole 16-lane chunks of x.
        unsafe {
            for c in x.chunks_exact_mut(16) {
                _mm512_storeu_ps(c.as_mut_ptr(), exp512(_mm512_loadu_ps(c.as_ptr())));
            }
            return true;
        }
        #[allow(unreachable_code)]
        false
    }

    /// Named tolerance: relative to Σ|w·x| (different summation order only).
    const RTOL: f32 = 1e-5;

    fn close(a: f32, b: f32, mag: f32) -> bool {
        (a - b).abs() <= RTOL * mag + 1e-30
    }

    /// Every dot16 kernel this CPU runs (AVX-512, AVX2) against the scalar sum.
    #[test]
    fn dot16_matches_the_scalar_dot_on_odd_lengths() -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        type Kern = unsafe fn(*const u8, Half, &[f32]) -> f32;
        #[cfg(target_arch = "x86_64")]
        let kernels: Vec<(&str, Kern)> = [("avx512", avx512(), dot16_avx512 as Kern), ("avx2", avx2(), dot16_avx2 as Kern)]
            .into_iter()
            .filter(|k| k.1)
            .map(|(n, _, f)| (n, f))
            .collect();
        #[cfg(not(target_arch = "x86_64"))]
        let kernels: Vec<(&str, fn())> = Vec::new();
        if kernels.is_empty() {
            eprintln!("no AVX-512 or AVX2: skipped");
            return Ok(());
        }
        for k in [1usize, 15, 16, 17, 63, 64, 65, 200, 2048, 5632 + 3] {
            let x: Vec<f32> = (0..k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 31.0).collect();
            let w: Vec<f32> = (0..k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 77.0).collect();
            for kind in [Half::Bf16, Half::F16] {
                let bits: Vec<u16> = w
                    .iter()
                    .map(|&v| match kind {
                        Half::Bf16 => half::bf16::from_f32(v).to_bits(),
                        Half::F16 => half::f16::from_f32(v).to_bits(),
                    })
                    .collect();
                let dec = |b: u16| match kind {
                    Half::Bf16 => half::bf16::from_bits(b).to_f32(),
                    Half::F16 => half::f16::from_bits(b).to_f32(),
                };
                // an odd byte offset: the kernel must not assume alignment
                let mut bytes = vec![0u8];
                bytes.extend(bits.iter().flat_map(|b| b.to_le_bytes()));
                let want: f32 = bits.iter().zip(&x).map(|(&b, v)| dec(b) * v).sum();
                let mag: f32 = bits.iter().zip(&x).map(|(&b, v)| (dec(b) * v).abs()).sum();
                assert!(dot16(&bytes[1..], kind, &x).is_some_and(|got| close(got, want, mag)), "{kind:?} k={k}");
                #[cfg(target_arch = "x86_64")]
                for (name, f) in &kernels {
                    // SAFETY: the kernel's features are present (filtered above); 2k bytes, k floats.
                    let got = unsafe { f(bytes[1..].as_ptr(), kind, &x) };
                    assert!(close(got, want, mag), "{name} {kind:?} k={k}: {got} vs {want}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn dot_fp8_matches_the_dequantized_row_for_every_blocking() -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        type Kern = unsafe fn(&[u8], &[f32], usize, &[f32]) -> f32;
        #[cfg(target_arch = "x86_64")]
        let kernels: Vec<(&str, Kern)> = [("avx512", avx512(), dot_fp8_avx512 as Kern), ("avx2", avx2(), dot_fp8_avx2 as Kern)]
            .into_iter()
            .filter(|k| k.1)
            .map(|(n, _, f)| (n, f))
            .collect();
        #[cfg(not(target_arch = "x86_64"))]
        let kernels: Vec<(&str, fn())> = Vec::new();
        if kernels.is_empty() {
            eprintln!("no AVX-512 or AVX2: skipped");
            return Ok(());
        }
        for k in [16usize, 33, 100, 256, 2048, 5632] {
            let n = 3;
            let w: Vec<f32> = (0..n * k).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 3000.0).collect();
            let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
            for b in [Blocking::DEFAULT, Blocking::new(32)?, Blocking::new(128)?, Blocking::PerChannel] {
                let p = PackedFp8::prepack(&w, n, k, b)?;
                if b == Blocking::PerChannel && k % 16 != 0 {
                    continue; // per-channel blocks are k wide: only multiples of 16 take this path
                }
                for r in 0..n {
                    let (codes, scales) = p.row(r);
                    let want: f32 = (0..k).map(|c| p.get(r, c) * x[c]).sum();
                    let mag: f32 = (0..k).map(|c| (p.get(r, c) * x[c]).abs()).sum();
                    let mut xs = Vec::new();
                    assert!(fp8_x(&x, &mut xs));
                    let got = dot_fp8(codes, scales, p.block, &xs).ok_or_else(|| Error::Internal("no SIMD dot".into()))?;
                    assert!(close(got, want, mag), "{b:?} k={k} row {r}: {got} vs {want}");
                    #[cfg(target_arch = "x86_64")]
                    for (name, f) in &kernels {
                        // SAFETY: the kernel's features are present (filtered above); the row
                        // fits (dot_fp8 took it).
                        let got = unsafe { f(codes, scales, p.block, &xs) };
                        assert!(close(got, want, mag), "{name} {b:?} k={k} row {r}: {got} vs {want}");
                    }
                }
            }
        }
        Ok(())
    }


    /// The vector exp against f64 on [-104, 0] (and -inf): relative error ≤ 3 ulp (f32).
    #[test]
    fn exp512_is_accurate_on_the_softmax_range() {
        let mut x: Vec<f32> = (0..16 * 4096).map(|i| -104.0 * i as f32 / (16.0 * 4096.0)).collect();
        x[5] = f32::NEG_INFINITY;
        let want: Vec<f64> = x.iter().map(|&v| (v as f64).exp()).collect();
        if !exp_slice(&mut x) {
            eprintln!("no AVX-512: skipped");
            return;
        }
        for (i, (&g, &w)) in x.iter().zip(&want).enumerate() {
            let ulp = (w as f32).abs() * f32::EPSILON;
            assert!((g as f64 - w).abs() <= 3.0 * ulp as f64 + 1e-44, "exp at {i}: {g} vs {w}");
        }
    }

    /// The branch-free bf16 rounding against `half` (subnormals flushed, its documented twin) on
    /// a sweep of bit patterns (every sign, exponent and rounding case, NaN, inf, subnormals),
    /// and `f32_to_bf16` (AVX-512 BF16 / AVX2 / scalar, whichever runs) against both.
    #[test]
    fn bf16_rounding_matches_half_on_every_kind_of_value() {
        let twin = |v: f32| if v.is_subnormal() { ((v.to_bits() >> 16) & 0x8000) as u16 } else { half::bf16::from_f32(v).to_bits() };
        let vals: Vec<f32> = (0..=u32::MAX / 4099).map(|i| f32::from_bits(i.wrapping_mul(4099) ^ (i & 0xFFFF))).chain([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE, 1e-40]).collect();
        let mut got = vec![0u16; vals.len()];
        f32_to_bf16(&vals, &mut got);
        for (&v, &g) in vals.iter().zip(&got) {
            let want = twin(v);
            if v.is_nan() {
                assert!(half::bf16::from_bits(bf16_bits(v)).is_nan() && half::bf16::from_bits(g).is_nan(), "{:#x}", v.to_bits());
                continue;
            }
            assert_eq!(bf16_bits(v), want, "{:#x}", v.to_bits());
            assert_eq!(g, want, "f32_to_bf16 {:#x}", v.to_bits());
        }
    }

    /// The vector bf16 roundings against [`bf16_round`] on the same sweep: the exact form (the
    /// GEMM's rounded weights) bit for bit on every input, NaN payloads that the add would carry
    /// into the sign or out of the word included; the finite form (the fp8 dots, AVX-512 and
    /// AVX2) on non-NaN inputs, ±0 alike.
    #[test]
    fn vector_bf16_rounding_matches_the_scalar_rule() {
        let vals: Vec<f32> = (0..=u32::MAX / 4099)
            .map(|i| f32::from_bits(i.wrapping_mul(4099) ^ (i & 0xFFFF)))
            .chain([0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FFF_8000, 0xFF80_0001, 0x7F80_0000, 0x8000_0001, 0x7F7F_FFFF].map(f32::from_bits))
            .collect();
        #[cfg(target_arch = "x86_64")]
        for (name, on) in [("avx512 exact", avx512()), ("avx512", avx512()), ("avx2", avx2())] {
            if !on {
                continue;
            }
            let lanes = if name == "avx2" { 8 } else { 16 };
            for c in vals.chunks_exact(lanes) {
                let mut got = [0f32; 16];
                // SAFETY: the feature is present (checked above); loads/stores of `lanes` floats.
                unsafe {
                    match name {
                        "avx512 exact" => _mm512_storeu_ps(got.as_mut_ptr(), bf16_round512::<true>(_mm512_loadu_ps(c.as_ptr()))),
                        "avx512" => _mm512_storeu_ps(got.as_mut_ptr(), bf16_round512::<false>(_mm512_loadu_ps(c.as_ptr()))),
                        _ => _mm256_storeu_ps(got.as_mut_ptr(), bf16_round256(_mm256_loadu_ps(c.as_ptr()))),
                    }
                }
                for l in 0..lanes {
                    let want = bf16_round(c[l]);
                    if name == "avx512 exact" {
                        assert_eq!(got[l].to_bits(), want.to_bits(), "{name} {:#x}", c[l].to_bits());
                    } else if !c[l].is_nan() {
                        assert_eq!(got[l].abs().to_bits(), want.abs().to_bits(), "{name} {:#x}", c[l].to_bits());
                    }
                }
            }
        }
    }

    /// The bf16-activation dots (bf16 weights; fp8 rounded to bf16) against their scalar twin,
    /// Σ bf16_round(w)·bf16_round(x) in f64: the `vdpbf16ps` kernels where AVX512_BF16 runs, the
    /// fp8 f32-FMA kernels (AVX-512F, AVX2) wherever they run.
    #[test]
    fn bf16_activation_dots_match_the_rounded_products() -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        type Kern = unsafe fn(&[u8], &[f32], usize, &[f32]) -> f32;
        #[cfg(target_arch = "x86_64")]
        let fma_kernels: Vec<(&str, Kern)> = [("avx512", avx512(), dot_fp8_bf16r_avx512 as Kern), ("avx2", avx2(), dot_fp8_bf16r_avx2 as Kern)]
            .into_iter()
            .filter(|k| k.1)
            .map(|(n, _, f)| (n, f))
            .collect();
        #[cfg(not(target_arch = "x86_64"))]
        let fma_kernels: Vec<(&str, fn())> = Vec::new();
        if !avx512_bf16() && fma_kernels.is_empty() {
            eprintln!("no AVX-512 or AVX2: skipped");
            return Ok(());
        }
        for k in [16usize, 37, 64, 100, 2048, 5632 + 7] {
            let x: Vec<f32> = (0..k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 31.0 * (1.0 + i as f32 * 1e-3)).collect();
            let mut xb = vec![0u16; k];
            f32_to_bf16(&x, &mut xb);
            let xr: Vec<f64> = xb.iter().map(|&b| f32::from_bits((b as u32) << 16) as f64).collect();
            for (j, (&b, &v)) in xb.iter().zip(&x).enumerate() {
                assert_eq!(f32::from_bits((b as u32) << 16), bf16_round(v), "x[{j}]");
            }
            // bf16 weights
            let w: Vec<u16> = (0..k).map(|i| half::bf16::from_f32(((i * 53 % 97) as f32 - 48.0) / 77.0).to_bits()).collect();
            let bytes: Vec<u8> = w.iter().flat_map(|b| b.to_le_bytes()).collect();
            let want: f64 = w.iter().zip(&xr).map(|(&b, v)| f32::from_bits((b as u32) << 16) as f64 * v).sum();
            let mag: f64 = w.iter().zip(&xr).map(|(&b, v)| (f32::from_bits((b as u32) << 16) as f64 * v).abs()).sum();
            if avx512_bf16() {
                let got = dot_bf16_bf16(&bytes, &xb).ok_or_else(|| Error::Internal("no bf16 dot".into()))?;
                assert!(close(got, want as f32, mag as f32), "bf16 k={k}: {got} vs {want}");
            }
            // fp8 weights, every blocking
            let wf: Vec<f32> = (0..2 * k).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 3000.0).collect();
            let xr32: Vec<f32> = xr.iter().map(|&v| v as f32).collect();
            for b in [Blocking::DEFAULT, Blocking::new(32)?, Blocking::new(128)?, Blocking::PerChannel] {
                let p = PackedFp8::prepack(&wf, 2, k, b)?;
                let (codes, scales) = p.row(1);
                if !fp8_row_fits(codes.len(), scales.len(), p.block, k, k) {
                    continue; // per-channel with k % 16 ≠ 0: the callers' portable path
                }
                let want: f64 = (0..k).map(|c| bf16_round(p.get(1, c)) as f64 * xr[c]).sum();
                let mag: f64 = (0..k).map(|c| (p.get(1, c) as f64 * xr[c]).abs()).sum();
                if avx512_bf16() {
                    let got = dot_fp8_bf16(codes, scales, p.block, &xb).ok_or_else(|| Error::Internal("no fp8 bf16 dot".into()))?;
                    assert!(close(got, want as f32, mag as f32), "fp8 {b:?} k={k}: {got} vs {want}");
                }
                let got = dot_fp8_bf16r(codes, scales, p.block, &xr32).ok_or_else(|| Error::Internal("no fp8 bf16r dot".into()))?;
                assert!(close(got, want as f32, mag as f32), "fp8 f32-FMA {b:?} k={k}: {got} vs {want}");
                #[cfg(target_arch = "x86_64")]
                for (name, f) in &fma_kernels {
                    // SAFETY: the kernel's features are present (filtered above); the row fits.
                    let got = unsafe { f(codes, scales, p.block, &xr32) };
                    assert!(close(got, want as f32, mag as f32), "fp8 {name} {b:?} k={k}: {got} vs {want}");
                }
            }
        }
        Ok(())
    }

    /// fp8 rows dequantized in registers equal PackedFp8::get bit for bit.
    #[test]
    fn fp8_row_to_f32_is_exact() -> Result<()> {
        for k in [16usize, 37, 2048] {
            let w: Vec<f32> = (0..2 * k).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 3000.0).collect();
            for b in [Blocking::DEFAULT, Blocking::new(128)?] {
                let p = PackedFp8::prepack(&w, 2, k, b)?;
                let (codes, scales) = p.row(1);
                let mut got = vec![0f32; k];
                if !fp8_row_to_f32(codes, scales, p.block, &mut got) {
                    eprintln!("no AVX-512: skipped");
                    return Ok(());
                }
                for (c, g) in got.iter().enumerate() {
                    assert_eq!(g.to_bits(), p.get(1, c).to_bits(), "{b:?} k={k} col {c}");
                }
            }
        }
        Ok(())
    }
}
