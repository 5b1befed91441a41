//! `fp8`: E4M3 weight-only with per-channel or K-blocked f32 scales (the default format,
//! block 16). codec.rs: the E4M3 code; pack.rs: [`PackedFp8`] and its prepack; simd.rs: the
//! AVX-512/AVX2 row dots and dequantization; linear.rs: the row dot with its portable lanes
//! and the low-level linears with their `_ref` twins. Device: the codes and scales as packed
//! here (`WeightKind::Fp8`, kernels/gemv.cu), packed on the device by kernels/quant.cu
//! bit-identically to [`PackedFp8::prepack`].
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

use super::native::native_row;
use super::tile::{TileMode, RT};
use super::format::{DeviceLayout, DeviceTarget, Format, WeightKind};
use crate::backend::cpu::par::par_rows_multi;
use crate::error::Result;
use crate::tensor::TensorView;

pub mod codec;
pub mod linear;
pub mod pack;
pub mod simd;
#[cfg(test)]
mod tests;

pub use codec::*;
pub use pack::*;

impl Default for Blocking {
    fn default() -> Self {
        Blocking::DEFAULT
    }
}

/// One stored row for the tile expansion: codes, scales, and the shift from a column to its
/// scale (c >> shift).
#[derive(Clone, Copy)]
pub struct Fp8Row<'a> {
    codes: &'a [u8],
    scales: &'a [f32],
    shift: u32,
}

thread_local! {
    /// The calling thread's vectors prepared for the fp8 dots (x·2^60, `simd::fp8_x`), reused.
    static XS: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

impl Format for PackedFp8 {
    type Params = Blocking;
    type Row<'a> = Fp8Row<'a>;

    /// Row by row from the parts: no fused n × k f32 copy (its page faults were a large part
    /// of a GGUF load).
    fn pack(parts: &[&TensorView], n: usize, k: usize, blocking: Blocking) -> Result<Self> {
        PackedFp8::prepack_rows(n, k, blocking, |r, row| {
            if let Some((p, pr)) = native_row(parts, r) {
                p.read_f32_into(pr * k, row);
            }
        })
    }

    fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    fn nbytes(&self) -> usize {
        PackedFp8::nbytes(self)
    }

    fn weight_at(&self, r: usize, c: usize) -> f32 {
        self.get(r, c)
    }

    fn expand_row_f32(&self, r: usize, dst: &mut [f32]) {
        let (codes, scales) = self.row(r);
        if simd::fp8_row_to_f32(codes, scales, self.block, dst) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::backend::cpu::simd::avx2() {
            // SAFETY: AVX2/FMA present (checked by `avx2`); the body is safe Rust.
            return unsafe { row_f32_avx2(codes, scales, self.block, dst) };
        }
        row_f32(codes, scales, self.block, dst)
    }

    fn matvec_f32_multi(&self, xs: &[f32], b: usize, out: &mut [f32]) {
        let (b, k) = (b.max(1), self.k);
        XS.with(|bufs| {
            // re-entered on this thread (a pool job running a linear): buffers of its own
            let (mut tls, mut own) = (bufs.try_borrow_mut(), Vec::new());
            let bufs = tls.as_deref_mut().unwrap_or(&mut own);
            bufs.resize_with(b, Vec::new);
            // each vector prepared once for the fast dot (when it takes them)
            let ready: Vec<bool> = bufs.iter_mut().enumerate().map(|(j, buf)| linear::fp8_input(&xs[j * k..(j + 1) * k], buf).is_some()).collect();
            let bufs = &bufs[..];
            par_rows_multi(out, b, self.n * k * b, |r, j| {
                let prep = ready[j].then(|| &bufs[j][..]);
                linear::dot_fp8_row(self, r, &xs[j * k..(j + 1) * k], prep)
            })
        })
    }

    fn dot_bf16_act(&self, r: usize, xb: &[u16], xr: &[f32]) -> Option<f32> {
        let (codes, scales) = self.row(r);
        if xr.is_empty() {
            simd::dot_fp8_bf16(codes, scales, self.block, xb)
        } else {
            simd::dot_fp8_bf16r(codes, scales, self.block, xr)
        }
    }

    fn row_span(&self, r0: usize, r1: usize) -> &[u8] {
        if r0 >= r1 {
            return &[];
        }
        &self.codes[r0 * self.row_stride..r1 * self.row_stride]
    }

    /// One scale per 16-vector, found by a shift (a division per vector doubled the
    /// expansion): power-of-two blocks of whole vectors, or one block for the row.
    fn tile_row(&self, r: usize) -> Option<Fp8Row<'_>> {
        let (block, k) = (self.block, self.k);
        if !(block >= k || (block >= 16 && block.is_power_of_two())) {
            return None;
        }
        let (codes, scales) = self.row(r);
        let shift = if block >= k { usize::BITS - 1 } else { block.trailing_zeros() };
        Some(Fp8Row { codes, scales, shift })
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn expand_tile_avx512(rows: &[Option<Fp8Row<'_>>; RT], mode: TileMode, whole: usize, dst: *mut u32) {
        tile_avx512(rows, mode, whole, dst)
    }

    fn device_layout(&self) -> Result<DeviceLayout<'_>> {
        self.validate()?;
        Ok(DeviceLayout::Scaled {
            kind: WeightKind::Fp8,
            row_stride: self.row_stride,
            bpr: self.blocks_per_row,
            block: self.block,
            data: &self.codes,
            scales: &self.scales,
        })
    }

    fn device_target(blocking: Blocking, _src: WeightKind, k: usize) -> Result<DeviceTarget> {
        Ok(DeviceTarget { kind: WeightKind::Fp8, block: blocking.block_len(k)? })
    }
}

/// 16 f32 of a row from column `c0`: (value / 256) · (scale · 256), one rounding, as
/// `simd::fp8_row_to_f32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn f32x16(s: Fp8Row, c0: usize) -> __m512 {
    _mm512_mul_ps(simd::load_e4m3(s.codes.as_ptr().add(c0)), simd::scale16(s.scales, c0 >> s.shift))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn tile_avx512(rows: &[Option<Fp8Row<'_>>; RT], mode: TileMode, whole: usize, dst: *mut u32) {
    super::tile::expand_rows_avx512!(rows, mode, whole, dst, |s, c| f32x16(s, c), |s, c| super::tile::pairs_of(f32x16(s, c), f32x16(s, c + 16)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn row_f32_avx2(codes: &[u8], scales: &[f32], block: usize, dst: &mut [f32]) {
    row_f32(codes, scales, block, dst)
}

/// An fp8 row as exact f32 (code value × its block's scale, one rounding) without AVX-512:
/// block by block with the branch-free decode, so the loop vectorises.
#[inline(always)]
fn row_f32(codes: &[u8], scales: &[f32], block: usize, dst: &mut [f32]) {
    for ((d, c), &s) in dst.chunks_mut(block).zip(codes.chunks(block)).zip(scales) {
        for (d, &c) in d.iter_mut().zip(c) {
            *d = e4m3_decode_arith(c) * s;
        }
    }
}
