//! FP8 E4M3 ("fn" variant, as `__nv_fp8_e4m3`): 1 sign, 4 exponent (bias 7), 3 mantissa bits,
//! no infinities, max ±448, NaN = S.1111.111. Weight-only prepack with per-output-channel or
//! K-blocked f32 scales.
//!
//! Packed layout (`PackedFp8`), chosen for the GEMV kernels:
//! - `codes`: (n, row_stride) u8, row-major; `row_stride = k` rounded up to 16 so every row starts
//!   16-byte aligned and a row is a whole number of 16-byte vectors (one `uint4` load on the GPU,
//!   one 128-bit load on AVX2). Padding codes are 0 (+0.0), so they add nothing to a dot product.
//! - `scales`: (n, blocks_per_row) f32, row-major, separate from the codes: with block 16 one
//!   16-byte code vector pairs with exactly one scale, and a warp walking a row reads its scales
//!   contiguously. Per-channel is one block spanning the row.
//! Element (r, c) ≈ decode(codes[r * row_stride + c]) * scales[r * blocks_per_row + c / block].
use std::sync::OnceLock;

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;
/// Code of +448 (S=0, E=1111, M=110).
const MAX_CODE: u8 = 0x7E;
/// Rows are padded to a multiple of this many codes (one 16-byte vector).
pub const ROW_ALIGN: usize = 16;

fn decode_table() -> &'static [f32; 256] {
    static TABLE: OnceLock<[f32; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0.0f32; 256];
        for (c, v) in t.iter_mut().enumerate() {
            *v = decode_exact(c as u8);
        }
        t
    })
}

/// Exact value of an E4M3 code (NaN for S.1111.111).
fn decode_exact(c: u8) -> f32 {
    let sign = if c & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = ((c >> 3) & 0x0F) as i32;
    let m = (c & 0x07) as f32;
    if e == 0x0F && c & 0x07 == 0x07 {
        return f32::NAN;
    }
    let mag = if e == 0 { m * 2f32.powi(-9) } else { (1.0 + m / 8.0) * 2f32.powi(e - 7) };
    sign * mag
}

/// E4M3 code → f32, exact (table lookup).
#[inline]
pub fn e4m3_decode(c: u8) -> f32 {
    decode_table()[c as usize]
}

/// Smallest normal E4M3 magnitude; below it the grid step is 2^-9.
const MIN_NORMAL: f32 = 1.0 / 64.0;

/// The cases both encoders share: NaN → `Err(0)`, |v| ≥ 448 → `Err(±max)`; else the sign bit
/// and |v| to round.
#[inline]
fn sign_and_magnitude(v: f32) -> std::result::Result<(u8, f32), u8> {
    if v.is_nan() {
        return Err(0);
    }
    let sign = if v.is_sign_negative() { 0x80 } else { 0 };
    let x = v.abs();
    if x >= E4M3_MAX {
        return Err(sign | MAX_CODE);
    }
    Ok((sign, x))
}

/// f32 → E4M3, round to nearest even, saturating: |v| ≥ 448 (and ±inf) → ±448. NaN → +0, so a
/// prepack never writes a NaN code. -0.0 → 0x80 (-0), which decodes to -0.0.
/// Bit arithmetic on the f32 (a few ns); `e4m3_encode_ref` is the search-based twin.
#[inline]
pub fn e4m3_encode(v: f32) -> u8 {
    let (sign, x) = match sign_and_magnitude(v) {
        Ok(split) => split,
        Err(code) => return code,
    };
    if x < MIN_NORMAL {
        // subnormal: code = x / 2^-9 rounded half to even (8 lands exactly on the first normal)
        return sign | (x * 512.0).round_ties_even() as u8;
    }
    // normal: keep 3 of f32's 23 mantissa bits, rounding the other 20 half to even; a carry
    // into the exponent is the correct next binade. Rebias the exponent from 127 to 7.
    let bits = x.to_bits();
    let rounded = bits + 0x7FFFF + ((bits >> 20) & 1);
    sign | ((rounded >> 20) - (120 << 3)) as u8
}

/// Reference twin of [`e4m3_encode`]: nearest code by search over the decode table.
pub fn e4m3_encode_ref(v: f32) -> u8 {
    let (sign, x) = match sign_and_magnitude(v) {
        Ok(split) => split,
        Err(code) => return code,
    };
    // Non-negative codes 0..=0x7E are ordered by value: binary search for the largest code ≤ x,
    // then pick the nearer of it and the next one, the even code (mantissa LSB 0) on a tie.
    let t = decode_table();
    let (mut lo, mut hi) = (0u8, MAX_CODE); // invariant: t[lo] <= x < t[hi]
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if t[mid as usize] <= x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (dlo, dhi) = (x - t[lo as usize], t[hi as usize] - x);
    let code = if dlo < dhi || (dlo == dhi && lo & 1 == 0) { lo } else { hi };
    sign | code
}

/// How scales are grouped along K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// One scale per output row.
    PerChannel,
    /// One scale per `n` consecutive K elements of a row: 16 (the default), 32, 64 or 128.
    Block(usize),
}

impl Blocking {
    pub const DEFAULT: Blocking = Blocking::Block(16);

    pub fn new(block: usize) -> Result<Self> {
        match block {
            16 | 32 | 64 | 128 => Ok(Blocking::Block(block)),
            _ => Err(Error::invalid_option("block_size", block)),
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
    pub row_stride: usize,
    pub blocks_per_row: usize,
    /// (n, row_stride)
    pub codes: Vec<u8>,
    /// (n, blocks_per_row)
    pub scales: Vec<f32>,
}

impl PackedFp8 {
    /// Quantizes `w` (n × k, row-major, [out, in]): scale = absmax / 448 per (row, block)
    /// (1.0 for an all-zero block, so no 0/0), codes = encode(w / scale).
    pub fn prepack(w: &[f32], n: usize, k: usize, blocking: Blocking) -> Result<Self> {
        if n == 0 || k == 0 || w.len() != n * k {
            return Err(Error::ShapeMismatch { name: "fp8 weight".into(), expected: vec![n, k], got: vec![w.len()] });
        }
        let block = match blocking {
            Blocking::PerChannel => k,
            Blocking::Block(b) => b,
        };
        let row_stride = k.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let blocks_per_row = k.div_ceil(block);
        let mut codes = vec![0u8; n * row_stride];
        let mut scales = vec![0f32; n * blocks_per_row];
        // rows are independent: quantize them across the rayon pool
        codes.par_chunks_mut(row_stride).zip(scales.par_chunks_mut(blocks_per_row)).enumerate().for_each(
            |(r, (row_codes, row_scales))| {
                let row = &w[r * k..(r + 1) * k];
                for ((chunk, dst), scale) in row.chunks(block).zip(row_codes.chunks_mut(block)).zip(row_scales.iter_mut()) {
                    let absmax = chunk.iter().fold(0.0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
                    *scale = if absmax > 0.0 { absmax / E4M3_MAX } else { 1.0 };
                    for (c, &v) in dst.iter_mut().zip(chunk) {
                        *c = e4m3_encode(v / *scale);
                    }
                }
            },
        );
        Ok(PackedFp8 { n, k, blocking, block, row_stride, blocks_per_row, codes, scales })
    }

    /// Element (r, c) dequantized.
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

/// Largest |w − dequant(w)| allowed for an element of a block with scale `s`: E4M3 has 3
/// mantissa bits, so round-to-nearest errs by at most half an ulp, ≤ 2^-4 of the value's binade
/// top (≤ 448·2^-4·s = 28·s at the top); in the subnormal range the step is 2^-9, so the error
/// is ≤ 2^-10·s. Relative to |w|: ≤ |w|·2^-4 for normals, plus 2^-10·s absolute.
pub fn error_bound(w: f32, scale: f32) -> f32 {
    w.abs() * 2f32.powi(-4) + scale * 2f32.powi(-10)
}
