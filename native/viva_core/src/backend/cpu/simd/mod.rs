//! The generic SIMD helpers, chosen at run time (tuning.rs): ISA switches, bf16 rounding
//! (scalar, slice, 512/256-bit), the f32 dot (attention's q·k), the 16-bit row dots (bf16/f16
//! weights, used by the `native` and `bf16` formats), `exp` for softmax. AVX-512 with AVX2
//! twins where CPUs without AVX-512 need them; `None` means "not here": the caller runs its
//! portable lane loop, which stays the `_ref`-tested fallback. Weights decode in registers:
//! bf16 → f32 by a 16-bit shift, f16 → f32 by `vcvtph2ps`. Four accumulators keep the FMA
//! pipes busy; loads are unaligned. Format-specific kernels (fp8) live in their format's module.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(test)]
pub(crate) mod tests;

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
pub(crate) unsafe fn hsum256(v: __m256) -> f32 {
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
pub(crate) unsafe fn bf16_round256(v: __m256) -> __m256 {
    let b = _mm256_castps_si256(v);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
    let up = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), lsb), _mm256_set1_epi32(0xFFFF_0000u32 as i32));
    let zero_exp = _mm256_cmpeq_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x7F80_0000)), _mm256_setzero_si256());
    _mm256_castsi256_ps(_mm256_andnot_si256(zero_exp, up))
}
