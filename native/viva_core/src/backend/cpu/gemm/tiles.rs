//! The GEMM's inner kernels: weight rows expanded straight into tile-major bands, and the
//! 12-row × 32-token register tiles (AVX-512 f32 / `vdpbf16ps`, AVX2 f32, portable).
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::formats::tile::{at, tm_units, TileMode, RT};
use crate::formats::{bf16_at, Format};

/// Tokens per activation panel (two 512-bit vectors of f32).
pub(super) const NT: usize = 32;
/// k is padded with zeros to a multiple of this (a bf16 pair).
pub(super) const K_ALIGN: usize = 2;

/// Which tile kernel a GEMM runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kernel {
    /// Plain Rust lanes (any CPU): the fallback.
    Portable,
    /// AVX2 + FMA f32 (CPUs without AVX-512): the f32 tile as 6-row × 16-token register blocks.
    Avx2,
    /// AVX-512F f32 FMA.
    F32,
    /// `vdpbf16ps` on bf16-rounded activations and weights (`Activations::Bf16`); on a CPU
    /// without AVX512_BF16, the f32 tiles on the same rounded values.
    Bf16,
}

/// Rows r0..r0+rows of `w` (k columns) expanded straight into the tile-major band the tile
/// kernels read (`at::<true>`; kernel F32: exact f32 as `expand_row_f32`, kernel Bf16: bf16
/// pairs as `expand_row_bf16`), zeros past `rows` and past k: all rows_pad × tm_units(units)
/// elements of `dst` are written. Each tile's rows go through the format's
/// `Format::expand_tile_avx512` (one call per tile). A row's 16 units of one k block are one
/// 512-bit vector, so this costs what a row-major expansion does (~0.25 ns/weight, one core).
/// It replaced row-major expansion + a scalar reorder to [kp][RT] (~1.3 ns/weight: it only paid
/// from 4 token panels on, so pp32 ran its tiles from rows kp apart at 64 % of the FMA peak) —
/// pp32 +25-35 %, pp512 +7-17 % (TinyLlama, 2 Zen 4 cores, alternating runs).
/// `round` (kernel F32 only: bf16 numerics on the f32 tiles, CPUs without AVX512_BF16): each
/// value rounded to bf16 as `simd::bf16_round`, in registers.
/// `false` (dst partly written) without AVX-512 (AVX512_BF16 for `Kernel::Bf16`) or for a
/// weight whose `Format::tile_row` is `None`.
#[allow(clippy::too_many_arguments)]
pub(super) fn expand_tiled<F: Format>(kernel: Kernel, round: bool, w: &F, r0: usize, rows: usize, k: usize, kp: usize, dst: &mut [u32]) -> bool {
    let ok = match kernel {
        Kernel::F32 => crate::backend::cpu::simd::avx512(),
        Kernel::Bf16 => crate::backend::cpu::simd::avx512_bf16(),
        Kernel::Avx2 | Kernel::Portable => false,
    };
    // elements per tile row in dst: kp f32, or kp / 2 bf16 pairs
    let units = if kernel == Kernel::F32 { kp } else { kp / 2 };
    let (rows_pad, span) = (rows.div_ceil(RT) * RT, tm_units(units));
    if !ok || dst.len() < rows_pad * span || !kp.is_multiple_of(K_ALIGN) {
        return false;
    }
    let mode = match kernel {
        Kernel::F32 if round => TileMode::F32Rounded,
        Kernel::F32 => TileMode::F32,
        _ => TileMode::Bf16Pairs,
    };
    // whole 16-unit steps (16 columns, or 32 as 16 pairs); the rest element by element
    let per_unit = kp / units;
    let whole = k / (16 * per_unit) * 16;
    let mut src: [Option<F::Row<'_>>; RT] = [None; RT];
    for (t, tile) in dst[..rows_pad * span].chunks_exact_mut(RT * span).enumerate() {
        for (i, s) in src.iter_mut().enumerate() {
            let r = t * RT + i;
            *s = if r < rows {
                match w.tile_row(r0 + r) {
                    Some(v) => Some(v),
                    None => return false,
                }
            } else {
                None
            };
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the features were checked above; loads read units 0..whole of each row (k
        // values ≥ whole·per_unit, fp8 scales c >> shift < k.div_ceil(block)); stores write
        // whole·RT ≤ RT·units elements of `tile`.
        unsafe {
            F::expand_tile_avx512(&src, mode, whole, tile.as_mut_ptr())
        }
        for u in whole..span {
            for i in 0..RT {
                let r = t * RT + i;
                tile[at::<true>(i, u, span)] = if r >= rows || u >= units {
                    0
                } else if kernel == Kernel::F32 {
                    let v = if u < k { w.weight_at(r0 + r, u) } else { 0.0 };
                    if round { crate::backend::cpu::simd::bf16_round(v).to_bits() } else { v.to_bits() }
                } else {
                    let half = |c: usize| if c < k { bf16_at(w, r0 + r, c) as u32 } else { 0 };
                    half(2 * u) | half(2 * u + 1) << 16
                };
            }
        }
    }
    true
}

/// One f32 tile: dst[r][t] = w[r] · x[t] for the RT rows of `w` (layout `TM`, see [`at`]) and the
/// NT tokens of `panel` ([kp][NT]); prefetches `ahead` (one 64-byte line per k step, as far as kp reaches).
pub(super) fn tile_f32<const TM: bool>(kernel: Kernel, panel: &[f32], w: &[f32], kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
    assert!(panel.len() >= kp * NT && w.len() >= RT * kp);
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::F32 {
        // SAFETY: AVX-512F is present (linear_batch_with checked `simd::avx512`); every read is
        // inside `panel` (kp·NT) and `w` (RT·kp), asserted above; prefetches stay in `ahead`.
        unsafe { tile_f32_avx512::<TM>(panel.as_ptr(), w.as_ptr(), kp, ahead, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 && !TM {
        // SAFETY: AVX2/FMA are present (linear_batch_with checked `simd::avx2`); reads as above.
        unsafe { tile_f32_avx2(panel.as_ptr(), w.as_ptr(), kp, ahead, dst) };
        return;
    }
    let _ = (kernel, ahead);
    *dst = [[0f32; NT]; RT];
    for c in 0..kp {
        let xs = &panel[c * NT..(c + 1) * NT];
        for (r, d) in dst.iter_mut().enumerate() {
            let wv = w[at::<TM>(r, c, kp)];
            for (o, &xv) in d.iter_mut().zip(xs) {
                *o += wv * xv;
            }
        }
    }
}

/// One bf16 tile (AVX512_BF16 only; linear_batch_with never picks it elsewhere): `panel` is
/// [kp/2][NT] bf16 pairs, `w` RT rows of kp bf16 (pair p of row r at 2·at(r, p), see [`at`]).
/// Prefetches `ahead` as [`tile_f32`] (one line per k pair).
pub(super) fn tile_bf16<const TM: bool>(panel: &[u32], w: &[u16], kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
    assert!(panel.len() >= kp / 2 * NT && w.len() >= RT * kp && kp % 2 == 0);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512_BF16/F are present (checked by linear_batch_with); reads stay inside the
    // slices (asserted above; row r's pair p is at 2·at(r, p) < RT·kp); prefetches stay in `ahead`.
    unsafe {
        tile_bf16_avx512::<TM>(panel.as_ptr(), w.as_ptr(), kp, ahead, dst)
    }
}

/// Prefetch of line `i` of `ahead` into L2, when there is one.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn prefetch_line(ahead: &[u8], i: usize) {
    if i * 64 < ahead.len() {
        _mm_prefetch(ahead.as_ptr().add(i * 64) as *const i8, _MM_HINT_T1);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn tile_f32_avx512<const TM: bool>(panel: *const f32, w: *const f32, kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
    let mut acc = [[_mm512_setzero_ps(); 2]; RT];
    for c in 0..kp {
        prefetch_line(ahead, c);
        let x0 = _mm512_loadu_ps(panel.add(c * NT));
        let x1 = _mm512_loadu_ps(panel.add(c * NT + 16));
        for r in 0..RT {
            let b = _mm512_set1_ps(*w.add(at::<TM>(r, c, kp)));
            acc[r][0] = _mm512_fmadd_ps(b, x0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(b, x1, acc[r][1]);
        }
    }
    for r in 0..RT {
        _mm512_storeu_ps(dst[r].as_mut_ptr(), acc[r][0]);
        _mm512_storeu_ps(dst[r].as_mut_ptr().add(16), acc[r][1]);
    }
}

/// [`tile_f32_avx512`] for AVX2 (row-major `w`): the 12 × 32 tile as four 6-row × 16-token
/// blocks, so each block's 12 accumulators, 2 panel vectors and a broadcast fit the 16 ymm
/// registers (the whole tile would spill); each block re-reads its rows from cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_f32_avx2(panel: *const f32, w: *const f32, kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
    const R: usize = RT / 2;
    for half in 0..2 {
        for th in 0..NT / 16 {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            let first = half == 0 && th == 0;
            for c in 0..kp {
                if first {
                    prefetch_line(ahead, c);
                }
                let x0 = _mm256_loadu_ps(panel.add(c * NT + th * 16));
                let x1 = _mm256_loadu_ps(panel.add(c * NT + th * 16 + 8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let b = _mm256_set1_ps(*w.add((half * R + r) * kp + c));
                    a[0] = _mm256_fmadd_ps(b, x0, a[0]);
                    a[1] = _mm256_fmadd_ps(b, x1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let d = dst[half * R + r].as_mut_ptr().add(th * 16);
                _mm256_storeu_ps(d, a[0]);
                _mm256_storeu_ps(d.add(8), a[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
pub(super) unsafe fn tile_bf16_avx512<const TM: bool>(panel: *const u32, w: *const u16, kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
    let mut acc = [[_mm512_setzero_ps(); 2]; RT];
    for p in 0..kp / 2 {
        prefetch_line(ahead, p);
        let x0: __m512bh = std::mem::transmute(_mm512_loadu_si512(panel.add(p * NT) as *const __m512i));
        let x1: __m512bh = std::mem::transmute(_mm512_loadu_si512(panel.add(p * NT + 16) as *const __m512i));
        for r in 0..RT {
            let pair = std::ptr::read_unaligned(w.add(2 * at::<TM>(r, p, kp / 2)) as *const i32);
            let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], b, x0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], b, x1);
        }
    }
    for r in 0..RT {
        _mm512_storeu_ps(dst[r].as_mut_ptr(), acc[r][0]);
        _mm512_storeu_ps(dst[r].as_mut_ptr().add(16), acc[r][1]);
    }
}
