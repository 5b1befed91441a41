//! The GEMM's tile-major weight layout, which every format's tile expansion writes
//! (backend/cpu/gemm reads it): a band's rows in tiles of `RT`, each tile as k blocks of `KB`
//! units × RT rows, one 512-bit store per row and block.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Weight rows per micro-tile (each broadcast against the token panel).
pub const RT: usize = 12;

/// Units (f32 values or bf16 pairs) per k block of the tile-major layout: one 512-bit vector.
pub const KB: usize = 16;

/// What a tile expansion writes per unit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TileMode {
    /// Exact f32 (as `expand_row_f32`).
    F32,
    /// f32 rounded to bf16 values (`simd::bf16_round`): bf16 numerics on the f32 tiles.
    F32Rounded,
    /// bf16 pairs (as `expand_row_bf16`), for `vdpbf16ps`.
    Bf16Pairs,
}

/// A tile-major tile row's length for `units` units: whole k blocks.
pub fn tm_units(units: usize) -> usize {
    units.div_ceil(KB) * KB
}

/// Index of unit (r, c) in a tile's RT rows: tile-major (`TM`, [kp / KB][RT][KB]: a k step's RT
/// broadcasts come from RT lines that the next KB - 1 steps reuse) or row-major ([RT][kp]).
#[inline(always)]
pub fn at<const TM: bool>(r: usize, c: usize, kp: usize) -> usize {
    if TM {
        (c / KB) * (RT * KB) + r * KB + c % KB
    } else {
        r * kp + c
    }
}

/// 16 bf16 pairs from two vectors of 16 f32 (columns c..c+16 and c+16..c+32), each rounded to
/// nearest even (`vcvtneps2bf16`, as `simd::f32_to_bf16`).
/// # Safety
/// AVX-512F and AVX512_BF16 present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
pub unsafe fn pairs_of(lo: __m512, hi: __m512) -> __m512i {
    let lo: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(lo));
    let hi: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(hi));
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

/// The body of a format's `Format::expand_tile_avx512`, inside a function with
/// `#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]`: `$f32x16(row, c0)` gives 16
/// exact f32 of a row from column c0, `$pairs16(row, c0)` 16 bf16 pairs from column c0.
/// Row by row: one stream of codes (and scales) at a time, which the hardware prefetcher
/// follows; the 12 rows side by side were 2x slower (12 streams of each).
macro_rules! expand_rows_avx512 {
    ($rows:expr, $mode:expr, $whole:expr, $dst:expr, $f32x16:expr, $pairs16:expr) => {{
        use std::arch::x86_64::*;
        use $crate::formats::tile::{TileMode, KB, RT};
        for (i, s) in $rows.iter().enumerate() {
            let mut u = 0;
            while u < $whole {
                // block u / KB starts at (u / KB)·RT·KB = u·RT
                let v = match (s, $mode) {
                    (None, _) => _mm512_setzero_si512(),
                    (Some(s), TileMode::F32Rounded) => _mm512_castps_si512($crate::backend::cpu::simd::bf16_round512::<true>($f32x16(*s, u))),
                    (Some(s), TileMode::F32) => _mm512_castps_si512($f32x16(*s, u)),
                    (Some(s), TileMode::Bf16Pairs) => $pairs16(*s, 2 * u),
                };
                _mm512_storeu_si512($dst.add(u * RT + i * KB) as *mut __m512i, v);
                u += KB;
            }
        }
    }};
}
pub(crate) use expand_rows_avx512;
