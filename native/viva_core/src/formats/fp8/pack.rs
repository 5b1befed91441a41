//! The `fp8` format's packing: weight-only E4M3 with per-output-channel or K-blocked f32
//! scales.
//!
//! # Packed layout (`PackedFp8`), chosen for the GEMV kernels
//! - `codes`: (n, row_stride) u8, row-major. `row_stride` = k rounded up to 16 so every row is a
//!   whole number of 16-byte vectors and starts at a 16-byte offset: one `uint4` load per lane on
//!   the GPU (the device allocation is 256-byte aligned), one 128-bit load on AVX2/AVX-512 (host
//!   `Vec`s are not 16-aligned: use unaligned loads, as fast as aligned ones on current x86).
//!   Codes past k are 0 (+0.0), so a kernel may run over whole vectors: the tail adds nothing.
//! - `scales`: (n, blocks_per_row) f32, row-major, in their own array. Blocks are 16/32/64/128
//!   codes, a multiple of the 16-byte vector, so vector j of a row (codes 16j..16j+16) lies in
//!   exactly one block, `16j / block`; with block 16 vector j pairs with scale j. A warp whose
//!   lane l loads vector j = l + 32i reads scales j: 32 consecutive f32, one coalesced 128-byte
//!   load beside the codes' 512. Interleaving the scales into the code stream (llama.cpp's Q8_0
//!   style, 16 + 4 bytes) would break the 16-byte alignment of every other block.
//! - K not a multiple of the block: allowed. The last block of a row is short (its scale comes
//!   from its real elements only) and its codes are followed by the zero padding; the formula
//!   `16j / block` still names its scale. Per-channel: `block` = k, `blocks_per_row` = 1.
//! - Dequantizing in registers: `e4m3_to_f16_bits` is a shift and a mask (f16 has 5 exponent
//!   and 10 mantissa bits: E4M3's fields fit, subnormals included), then F16C `vcvtph2ps` or
//!   the GPU's f16 path, times 2^8 (fold it into the block scale). On sm_89+ the hardware
//!   `cvt.rn.f16x2.e4m3x2` gives the value directly. Without F16C, `e4m3_decode_arith` is the
//!   branch-free f32 form the compiler vectorises.
//!
//! Element (r, c) ≈ decode(codes[r · row_stride + c]) · scales[r · blocks_per_row + c / block].
use rayon::prelude::*;

use super::codec::*;
use crate::error::{Error, Result};

/// How scales are grouped along K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// One scale per output row.
    PerChannel,
    /// One scale per `n` consecutive K elements of a row: 16 (the default), 32, 64 or 128.
    /// Build it with [`Blocking::new`]; `prepack` rejects any other size.
    Block(usize),
}

impl Blocking {
    pub const DEFAULT: Blocking = Blocking::Block(16);
    /// The block sizes a kernel may assume: multiples of the 16-byte vector.
    pub const BLOCK_SIZES: [usize; 4] = [16, 32, 64, 128];

    /// `InvalidOption{block_size}` unless `block` is 16, 32, 64 or 128.
    pub fn new(block: usize) -> Result<Self> {
        if Self::BLOCK_SIZES.contains(&block) {
            Ok(Blocking::Block(block))
        } else {
            Err(Error::invalid_option("block_size", block))
        }
    }

    /// K elements per scale for a row of `k` (validates a hand-built `Block(b)`).
    pub fn block_len(self, k: usize) -> Result<usize> {
        match self {
            Blocking::PerChannel => Ok(k),
            Blocking::Block(b) => Blocking::new(b).map(|_| b),
        }
    }
}

/// A prepacked [n, k] weight (HF layout [out, in]); see the module docs for the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedFp8 {
    pub n: usize,
    pub k: usize,
    pub blocking: Blocking,
    /// K elements per scale (k for per-channel).
    pub block: usize,
    /// Codes per row in memory: k rounded up to `ROW_ALIGN`.
    pub row_stride: usize,
    /// ceil(k / block)
    pub blocks_per_row: usize,
    /// (n, row_stride)
    pub codes: Vec<u8>,
    /// (n, blocks_per_row)
    pub scales: Vec<f32>,
}

impl PackedFp8 {
    /// Quantizes `w` (n × k, row-major, [out, in]): scale = absmax / 448 per (row, block), the
    /// absmax over finite values (1.0 for an all-zero block, so no 0/0), codes = encode(w / scale):
    /// ±inf weights saturate to ±448·scale, NaN weights become 0, so the packed weight is finite.
    /// Errors: `ShapeMismatch` when w.len() ≠ n·k or n or k is 0; `InvalidOption` for a bad block.
    pub fn prepack(w: &[f32], n: usize, k: usize, blocking: Blocking) -> Result<Self> {
        if n == 0 || k == 0 || w.len() != n * k {
            return Err(Error::ShapeMismatch { name: "fp8 weight".into(), expected: vec![n, k], got: vec![w.len()] });
        }
        Self::prepack_rows(n, k, blocking, |r, row| row.copy_from_slice(&w[r * k..(r + 1) * k]))
    }

    /// [`prepack`](Self::prepack) of the n × k weight whose row r `fill(r, row)` writes (k
    /// values): fused parts and non-f32 tensors go straight in, without an n × k f32 copy.
    pub fn prepack_rows(n: usize, k: usize, blocking: Blocking, fill: impl Fn(usize, &mut [f32]) + Sync) -> Result<Self> {
        if n == 0 || k == 0 {
            return Err(Error::ShapeMismatch { name: "fp8 weight".into(), expected: vec![n, k], got: vec![n, k] });
        }
        let block = blocking.block_len(k)?;
        let row_stride = k.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let blocks_per_row = k.div_ceil(block);
        let mut codes = vec![0u8; n * row_stride]; // (n, row_stride), tail stays 0
        let mut scales = vec![0f32; n * blocks_per_row]; // (n, blocks_per_row)
        // rows are independent: quantize them across the rayon pool, one row buffer per task
        codes.par_chunks_mut(row_stride).zip(scales.par_chunks_mut(blocks_per_row)).enumerate().for_each_init(
            || vec![0f32; k],
            |row, (r, (row_codes, row_scales))| {
                fill(r, row);
                quantize_row(row, row_codes, row_scales, block)
            },
        );
        Ok(PackedFp8 { n, k, blocking, block, row_stride, blocks_per_row, codes, scales })
    }

    /// Checks the invariants the kernels rely on (the fields are public, so a hand-built or
    /// edited value could break them): O(1), run by every linear before it indexes.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Internal(format!("inconsistent PackedFp8 ({}×{}): {what}", self.n, self.k)));
        match self.blocking.block_len(self.k) {
            Ok(b) if b == self.block => {}
            _ => return bad("block does not match blocking"),
        }
        if self.n == 0 || self.k == 0 {
            return bad("empty");
        }
        if self.row_stride != self.k.div_ceil(ROW_ALIGN) * ROW_ALIGN || self.blocks_per_row != self.k.div_ceil(self.block) {
            return bad("row_stride / blocks_per_row");
        }
        if self.codes.len() != self.n * self.row_stride || self.scales.len() != self.n * self.blocks_per_row {
            return bad("codes / scales length");
        }
        Ok(())
    }

    /// Row `r`'s codes (row_stride of them, zero padded past k) and scales.
    #[inline]
    pub fn row(&self, r: usize) -> (&[u8], &[f32]) {
        (
            &self.codes[r * self.row_stride..(r + 1) * self.row_stride],
            &self.scales[r * self.blocks_per_row..(r + 1) * self.blocks_per_row],
        )
    }

    /// Element (r, c) dequantized (indexes like a slice: r < n, c < k).
    #[inline]
    pub fn get(&self, r: usize, c: usize) -> f32 {
        e4m3_decode(self.codes[r * self.row_stride + c]) * self.scales[r * self.blocks_per_row + c / self.block]
    }

    /// The whole weight back as f32 (n × k): the reference the linears are tested against.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for r in 0..self.n {
            out.extend((0..self.k).map(|c| self.get(r, c)));
        }
        out
    }

    /// Bytes the packed weight occupies (codes + scales).
    pub fn nbytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4
    }
}

/// One row of `prepack`: per block, its scale, then every code. On x86-64 with AVX2/FMA/SSE4.1
/// the same body is compiled for them (rounding becomes one instruction instead of a libm call).
fn quantize_row(row: &[f32], codes: &mut [u8], scales: &mut [f32], block: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::tuning::get().avx512 && block.is_multiple_of(16) && codes.len() >= row.len() && scales.len() >= row.len().div_ceil(block) {
        // SAFETY: AVX-512F is present; the vector loop reads and writes whole blocks (whole
        // 16-vectors) below row.len() ≤ codes.len(), scales below row.len() / block.
        return unsafe { quantize_row_avx512(row, codes, scales, block) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::tuning::get().avx2 {
        // SAFETY: the CPU has AVX2, FMA and SSE4.1 (checked by `avx2`); the body is safe Rust.
        return unsafe { quantize_row_avx2(row, codes, scales, block) };
    }
    quantize_row_body(row, codes, scales, block)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,sse4.1")]
fn quantize_row_avx2(row: &[f32], codes: &mut [u8], scales: &mut [f32], block: usize) {
    quantize_row_body(row, codes, scales, block)
}

/// [`quantize_row_body`] 16 values at a time, bit for bit: the same absmax (finite values),
/// the same IEEE division w / scale, and [`e4m3_encode`]'s rounding in integer lanes
/// (subnormals: x·512 rounded half to even; normals: 3 mantissa bits kept, the other 20
/// rounded half to even; ≥ 448 saturates; NaN → 0). Replaced the scalar loop, a third of
/// a Q8_0 → fp8 load.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn quantize_row_avx512(row: &[f32], codes: &mut [u8], scales: &mut [f32], block: usize) {
    use std::arch::x86_64::*;
    let (rp, cp) = (row.as_ptr(), codes.as_mut_ptr());
    let abs = _mm512_set1_epi32(0x7FFF_FFFF);
    for (b, scale) in scales.iter_mut().enumerate().take(row.len() / block) {
        let c0 = b * block;
        // absmax over finite values (|w| < inf; NaN compares false)
        let mut m = _mm512_setzero_ps();
        for c in (c0..c0 + block).step_by(16) {
            let x = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(rp.add(c))), abs));
            m = _mm512_mask_max_ps(m, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(f32::INFINITY)), m, x);
        }
        let s = _mm512_reduce_max_ps(m) / E4M3_MAX;
        *scale = if s > 0.0 { s } else { 1.0 };
        let sv = _mm512_set1_ps(*scale);
        for c in (c0..c0 + block).step_by(16) {
            let v = _mm512_div_ps(_mm512_loadu_ps(rp.add(c)), sv);
            let bits = _mm512_castps_si512(v);
            let sign = _mm512_and_si512(_mm512_srli_epi32::<24>(bits), _mm512_set1_epi32(0x80));
            let xb = _mm512_and_si512(bits, abs);
            let x = _mm512_castsi512_ps(xb);
            // normal: bits + 0x7FFFF + bit 20, >> 20, rebias 127 → 7
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<20>(xb), _mm512_set1_epi32(1));
            let rounded = _mm512_add_epi32(_mm512_add_epi32(xb, _mm512_set1_epi32(0x7FFFF)), lsb);
            let normal = _mm512_sub_epi32(_mm512_srli_epi32::<20>(rounded), _mm512_set1_epi32((REBIAS << 3) as i32));
            // subnormal: x / 2^-9 (exact) rounded half to even
            let sub = _mm512_cvtps_epi32(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(1.0 / SUBNORMAL_STEP))));
            let small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(MIN_NORMAL));
            let big = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(E4M3_MAX));
            let mut code = _mm512_mask_blend_epi32(small, normal, sub);
            code = _mm512_mask_blend_epi32(big, code, _mm512_set1_epi32(MAX_CODE as i32));
            code = _mm512_or_si512(code, sign);
            code = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), code);
            _mm_storeu_si128(cp.add(c) as *mut __m128i, _mm512_cvtepi32_epi8(code));
        }
    }
    // a last, partial block
    let (whole, nb) = (row.len() / block * block, row.len() / block);
    if whole < row.len() {
        quantize_row_body(&row[whole..], &mut codes[whole..], &mut scales[nb..], block);
    }
}

#[inline(always)]
fn quantize_row_body(row: &[f32], codes: &mut [u8], scales: &mut [f32], block: usize) {
    for ((chunk, dst), scale) in row.chunks(block).zip(codes.chunks_mut(block)).zip(scales.iter_mut()) {
        *scale = block_scale(chunk);
        for (c, &v) in dst.iter_mut().zip(chunk) {
            *c = e4m3_encode(v / *scale);
        }
    }
}

/// absmax / 448 over the block's finite values; 1.0 when that is 0 (all-zero block: codes 0,
/// no 0/0) or when it underflows f32 (|w| < ~1e-43: the codes then hold w · 1, i.e. 0).
pub fn block_scale(block: &[f32]) -> f32 {
    let absmax = block.iter().fold(0.0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    let s = absmax / E4M3_MAX;
    if s > 0.0 {
        s
    } else {
        1.0
    }
}

/// Largest |w − dequant(w)| for an element of a block with scale `s` (w finite, |w| ≤ 448·s, as
/// prepack guarantees). With v = w/s: in a normal binade [2^e, 2^(e+1)), e ≥ -6, the 3 mantissa
/// bits space codes 2^(e−3) apart, so rounding errs by at most 2^(e−4) ≤ |v|·2^-4; below 2^-6
/// (subnormals) the step is 2^-9, so the error is ≤ 2^-10. Hence |v − q| ≤ |v|·2^-4 + 2^-10,
/// times s. The f32 roundings of w/s and q·s (≤ 2^-24 relative each) fit in the slack: the
/// worst normal case is a midpoint, where |v| ≥ 2^e·(1 + 1/16), and 2^-10 covers the rest.
pub fn error_bound(w: f32, scale: f32) -> f32 {
    w.abs() * 2f32.powi(-4) + scale * 2f32.powi(-10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 row quantizer is bit-identical to the scalar body (its twin): every block
    /// size, a partial last block, per-channel rows, and values across the whole range —
    /// midpoints of E4M3 codes, subnormals of both formats, ±0, ±inf, NaN, blocks of zeros.
    #[test]
    fn simd_row_quantizer_matches_the_scalar_body() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, -1e-40, f32::MAX, 448.0, 464.0, 1.0 + 1.0 / 16.0, 1.0 / 1024.0];
        for (k, block) in [(256usize, 16usize), (256, 32), (256, 64), (256, 128), (80, 32), (48, 48), (64, 64)] {
            for trial in 0..200 {
                let row: Vec<f32> = (0..k)
                    .map(|i| {
                        let r = next();
                        match (trial % 4, r % 16) {
                            (0, _) if i < 16 => 0.0,
                            (1, 0) => specials[(r >> 8) as usize % specials.len()],
                            // any exponent, any mantissa: also exact E4M3 midpoints after scaling
                            _ => f32::from_bits((r >> 32) as u32 & 0x8000_0000 | ((r as u32 % 60 + 97) << 23) | (r >> 40) as u32 & 0x7F_FFFF),
                        }
                    })
                    .collect();
                let stride = k.div_ceil(ROW_ALIGN) * ROW_ALIGN;
                let (mut c1, mut s1) = (vec![0u8; stride], vec![0f32; k.div_ceil(block)]);
                let (mut c2, mut s2) = (c1.clone(), s1.clone());
                quantize_row(&row, &mut c1, &mut s1, block);
                quantize_row_body(&row, &mut c2, &mut s2, block);
                assert_eq!(s1.iter().map(|s| s.to_bits()).collect::<Vec<_>>(), s2.iter().map(|s| s.to_bits()).collect::<Vec<_>>(), "k{k} b{block}");
                assert_eq!(c1, c2, "k{k} b{block} trial {trial}");
            }
        }
    }
}
