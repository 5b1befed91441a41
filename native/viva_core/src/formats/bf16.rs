//! `bf16`: every linear converted to bf16 once at load (bf16 copied, f16/f32 rounded to
//! nearest even), 2 bytes per weight, in memory of our own. Copied even from a BF16
//! checkpoint: decode from the mapped file's pages measured 15-20 % slower than from our own
//! memory (bf16-activation decode, TinyLlama GGUF, 3 alternating pairs on the 2-core VM),
//! though the views loaded in 0.5 s vs 3-10 s.
use std::borrow::Cow;

use half::bf16;

use super::tile::{TileMode, RT};
use super::format::{DeviceLayout, DeviceTarget, Format, WeightKind};
use crate::backend::cpu::par::par_rows_multi;
use crate::backend::cpu::simd;
use crate::error::Result;
use crate::tensor::{DType, TensorView};

/// A [n, k] linear as bf16 bits.
pub struct Bf16Linear {
    pub n: usize,
    pub k: usize,
    /// (n, k) bf16 bits
    pub data: Vec<u16>,
}

/// Appends `t` as bf16 bits (bf16 copied as is; f16/f32 rounded to nearest even).
pub fn extend_bf16(dst: &mut Vec<u16>, t: &TensorView) {
    match (t.dtype, t.f32_slice()) {
        (DType::BF16, _) => dst.extend(t.bytes().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]))),
        (_, Some(v)) => dst.extend(v.iter().map(|&v| bf16::from_f32(v).to_bits())),
        _ => dst.extend(t.to_f32_vec().into_iter().map(|v| bf16::from_f32(v).to_bits())),
    }
}

impl Bf16Linear {
    fn row(&self, r: usize) -> &[u16] {
        &self.data[r * self.k..(r + 1) * self.k]
    }
}

impl Format for Bf16Linear {
    type Params = ();
    type Row<'a> = &'a [u8];

    fn pack(parts: &[&TensorView], n: usize, k: usize, _: ()) -> Result<Self> {
        let mut data = Vec::with_capacity(n * k);
        for p in parts {
            extend_bf16(&mut data, p);
        }
        Ok(Bf16Linear { n, k, data })
    }

    fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    fn nbytes(&self) -> usize {
        self.data.len() * 2
    }

    fn weight_at(&self, r: usize, c: usize) -> f32 {
        f32::from_bits((self.data[r * self.k + c] as u32) << 16)
    }

    fn expand_row_f32(&self, r: usize, dst: &mut [f32]) {
        for (d, &b) in dst.iter_mut().zip(self.row(r)) {
            *d = f32::from_bits((b as u32) << 16);
        }
    }

    fn bf16_row_bytes(&self, r: usize) -> Option<&[u8]> {
        simd::u16_le_bytes(self.row(r))
    }

    fn matvec_f32_multi(&self, xs: &[f32], b: usize, out: &mut [f32]) {
        let k = self.k;
        par_rows_multi(out, b, self.data.len() * b, |r, j| dot_lanes_bf16(self.row(r), &xs[j * k..(j + 1) * k]));
    }

    fn row_span(&self, r0: usize, r1: usize) -> &[u8] {
        if r0 >= r1 {
            return &[];
        }
        simd::u16_le_bytes(&self.data[r0 * self.k..r1 * self.k]).unwrap_or(&[])
    }

    fn tile_row(&self, r: usize) -> Option<&[u8]> {
        simd::u16_le_bytes(self.row(r))
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn expand_tile_avx512(rows: &[Option<&[u8]>; RT], mode: TileMode, whole: usize, dst: *mut u32) {
        tile_avx512(rows, mode, whole, dst)
    }

    fn device_layout(&self) -> Result<DeviceLayout<'_>> {
        let bytes: Vec<u8> = self.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok(DeviceLayout::Dense { kind: WeightKind::Bf16, blocks: vec![Cow::Owned(bytes)] })
    }

    /// bf16 sources stay as they are; the others are rounded on the device (as here on the host).
    fn device_target(_: (), _src: WeightKind, k: usize) -> Result<DeviceTarget> {
        Ok(DeviceTarget { kind: WeightKind::Bf16, block: k })
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn tile_avx512(rows: &[Option<&[u8]>; RT], mode: TileMode, whole: usize, dst: *mut u32) {
    super::tile::expand_rows_avx512!(
        rows,
        mode,
        whole,
        dst,
        |b: &[u8], c0: usize| simd::load16(b.as_ptr().add(2 * c0), simd::Half::Bf16),
        |b: &[u8], c0: usize| _mm512_loadu_si512(b.as_ptr().add(2 * c0) as *const __m512i)
    )
}

/// bf16 bits · x: AVX-512 / AVX2 when present, else 8 lanes.
#[inline]
fn dot_lanes_bf16(row: &[u16], x: &[f32]) -> f32 {
    if let Some(v) = simd::dot_bf16(row, x) {
        return v;
    }
    const L: usize = 8;
    let mut acc = [0f32; L];
    let (mut xc, mut rc) = (x.chunks_exact(L), row.chunks_exact(L));
    for (xs, rs) in (&mut xc).zip(&mut rc) {
        for l in 0..L {
            acc[l] += f32::from_bits((rs[l] as u32) << 16) * xs[l];
        }
    }
    let tail: f32 = xc.remainder().iter().zip(rc.remainder()).map(|(v, &b)| f32::from_bits((b as u32) << 16) * v).sum();
    acc.iter().sum::<f32>() + tail
}
