//! `native`: the checkpoint's own bf16/f16/f32 tensors, memory-mapped, no copy (the HF parity
//! path). A fused linear keeps its parts and walks them in order. The matvec decodes rows in
//! registers (bf16/f16 rows through `simd::dot16`, f32 rows in 8 lanes); the plain
//! [`matvec_ref`] is its twin.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::borrow::Cow;
use std::sync::OnceLock;

use half::f16;

use super::tile::{TileMode, RT};
use super::format::{DeviceLayout, DeviceTarget, Format, WeightKind};
use crate::backend::cpu::par::par_rows_multi;
use crate::backend::cpu::simd::{self, Half};
use crate::error::{Error, Result};
use crate::tensor::{DType, TensorView};

/// Row blocks of the fused weight, in order, each a zero-copy view.
pub struct NativeLinear {
    pub parts: Vec<TensorView>,
}

/// One stored row: its raw little-endian bytes (k values) in the part's dtype.
#[derive(Clone, Copy)]
pub enum NativeRow<'a> {
    F32(&'a [u8]),
    Bf16(&'a [u8]),
    F16(&'a [u8]),
}

/// Row `r` of a fused native linear: the part that holds it and the row inside that part.
pub fn native_row<T: std::borrow::Borrow<TensorView>>(parts: &[T], r: usize) -> Option<(&TensorView, usize)> {
    let mut r = r;
    for p in parts.iter().map(|p| p.borrow()) {
        if r < p.shape[0] {
            return Some((p, r));
        }
        r -= p.shape[0];
    }
    None
}

impl NativeLinear {
    fn row(&self, r: usize) -> Option<(&TensorView, usize)> {
        native_row(&self.parts, r)
    }
}

impl Format for NativeLinear {
    type Params = ();
    type Row<'a> = NativeRow<'a>;
    const EMBED_AS_STORED: bool = true;

    fn pack(parts: &[&TensorView], _n: usize, _k: usize, _: ()) -> Result<Self> {
        Ok(NativeLinear { parts: parts.iter().map(|p| (*p).clone()).collect() })
    }

    fn shape(&self) -> (usize, usize) {
        (self.parts.iter().map(|p| p.shape[0]).sum(), self.parts.first().map_or(0, |p| p.shape[1]))
    }

    fn nbytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes().len()).sum()
    }

    fn weight_at(&self, r: usize, c: usize) -> f32 {
        self.row(r).map_or(f32::NAN, |(p, r)| p.get_f32(r * p.shape[1] + c))
    }

    fn expand_row_f32(&self, r: usize, dst: &mut [f32]) {
        if let Some((p, r)) = self.row(r) {
            p.read_f32_into(r * dst.len(), dst);
        }
    }

    fn bf16_row_bytes(&self, r: usize) -> Option<&[u8]> {
        match self.row(r) {
            Some((p, pr)) if p.dtype == DType::BF16 => {
                let k = p.shape[1];
                Some(&p.bytes()[pr * 2 * k..(pr + 1) * 2 * k])
            }
            _ => None,
        }
    }

    fn matvec_f32_multi(&self, xs: &[f32], b: usize, out: &mut [f32]) {
        if let [p] = &self.parts[..] {
            return matvec_multi(p, xs, b, out);
        }
        // fused parts (q·k·v, gate·up) as one parallel loop over all their rows
        let k = xs.len() / b.max(1);
        par_rows_multi(out, b, out.len() * k, |r, j| match self.row(r) {
            Some((p, pr)) => {
                let row_bytes = k * p.dtype.size();
                dot_row(&p.bytes()[pr * row_bytes..(pr + 1) * row_bytes], p.dtype, &xs[j * k..(j + 1) * k])
            }
            None => f32::NAN,
        })
    }

    fn row_span(&self, r0: usize, r1: usize) -> &[u8] {
        if r0 >= r1 {
            return &[];
        }
        match self.row(r0) {
            Some((p, pr)) => {
                let row_bytes = p.bytes().len() / p.shape[0].max(1);
                &p.bytes()[pr * row_bytes..(pr + r1 - r0).min(p.shape[0]) * row_bytes]
            }
            None => &[],
        }
    }

    fn tile_row(&self, r: usize) -> Option<NativeRow<'_>> {
        let (p, pr) = self.row(r)?;
        let (sz, k) = (p.dtype.size(), p.shape[1]);
        let bytes = p.bytes().get(pr * k * sz..(pr + 1) * k * sz)?;
        match p.dtype {
            _ if cfg!(target_endian = "big") => None,
            DType::F32 => Some(NativeRow::F32(bytes)),
            DType::BF16 => Some(NativeRow::Bf16(bytes)),
            DType::F16 => Some(NativeRow::F16(bytes)),
        }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn expand_tile_avx512(rows: &[Option<NativeRow<'_>>; RT], mode: TileMode, whole: usize, dst: *mut u32) {
        tile_avx512(rows, mode, whole, dst)
    }

    fn device_layout(&self) -> Result<DeviceLayout<'_>> {
        let first = self.parts.first().ok_or_else(|| Error::Internal("empty linear".into()))?;
        let kind = dtype_kind(first)?;
        if let Some(p) = self.parts.iter().find(|p| dtype_kind(p).ok() != Some(kind)) {
            return Err(Error::UnsupportedDtype { name: p.name.clone(), dtype: format!("{:?} mixed with {kind:?}", p.dtype) });
        }
        Ok(DeviceLayout::Dense { kind, blocks: self.parts.iter().map(|p| Cow::Borrowed(p.bytes())).collect() })
    }

    fn device_target(_: (), src: WeightKind, k: usize) -> Result<DeviceTarget> {
        Ok(DeviceTarget { kind: src, block: k })
    }
}

/// The kernel kind of a checkpoint tensor's dtype.
pub fn dtype_kind(t: &TensorView) -> Result<WeightKind> {
    match t.dtype {
        DType::BF16 => Ok(WeightKind::Bf16),
        DType::F16 => Ok(WeightKind::F16),
        DType::F32 => Ok(WeightKind::F32),
        #[allow(unreachable_patterns)]
        other => Err(Error::UnsupportedDtype { name: t.name.clone(), dtype: format!("{other:?}") }),
    }
}

/// 16 f32 of a row from column `c0` (exact).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn f32x16(s: NativeRow, c0: usize) -> __m512 {
    match s {
        NativeRow::F32(b) => _mm512_loadu_ps(b.as_ptr().add(4 * c0) as *const f32),
        NativeRow::Bf16(b) => simd::load16(b.as_ptr().add(2 * c0), Half::Bf16),
        NativeRow::F16(b) => simd::load16(b.as_ptr().add(2 * c0), Half::F16),
    }
}

/// 16 bf16 pairs of a row from column `c0`: bf16 bits as stored, the others rounded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn pairs16(s: NativeRow, c0: usize) -> __m512i {
    match s {
        NativeRow::Bf16(b) => _mm512_loadu_si512(b.as_ptr().add(2 * c0) as *const __m512i),
        s => super::tile::pairs_of(f32x16(s, c0), f32x16(s, c0 + 16)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn tile_avx512(rows: &[Option<NativeRow<'_>>; RT], mode: TileMode, whole: usize, dst: *mut u32) {
    super::tile::expand_rows_avx512!(rows, mode, whole, dst, |s, c| f32x16(s, c), |s, c| pairs16(s, c))
}

#[inline]
fn bf16_bits_to_f32(lo: u8, hi: u8) -> f32 {
    f32::from_bits((u16::from_le_bytes([lo, hi]) as u32) << 16)
}

/// f16 bits → f32 for all 65536 codes: without F16C at compile time `half` converts in software,
/// ~10× slower than this lookup.
fn f16_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_bits(b).to_f32()).collect())
}

/// Dot product of a row of `size`-byte elements (decoded by `conv`) with `x`, in 8 independent
/// lanes so the compiler can vectorise it (one running sum would serialise every add).
#[inline(always)]
fn dot_lanes(row: &[u8], x: &[f32], size: usize, conv: impl Fn(&[u8]) -> f32) -> f32 {
    const L: usize = 8;
    let mut acc = [0f32; L];
    let (mut xc, mut rc) = (x.chunks_exact(L), row.chunks_exact(L * size));
    for (xs, rs) in (&mut xc).zip(&mut rc) {
        for l in 0..L {
            acc[l] += conv(&rs[l * size..(l + 1) * size]) * xs[l];
        }
    }
    let tail: f32 = xc.remainder().iter().zip(rc.remainder().chunks_exact(size)).map(|(v, b)| conv(b) * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// One row of a [out, in] weight (raw little-endian bytes) dotted with `x` (in).
#[inline]
fn dot_row(row: &[u8], dtype: DType, x: &[f32]) -> f32 {
    let fast = match dtype {
        DType::BF16 => simd::dot16(row, Half::Bf16, x),
        DType::F16 => simd::dot16(row, Half::F16, x),
        DType::F32 => None,
    };
    if let Some(v) = fast {
        return v;
    }
    match dtype {
        DType::BF16 => dot_lanes(row, x, 2, |b| bf16_bits_to_f32(b[0], b[1])),
        DType::F16 => {
            let t = f16_table();
            dot_lanes(row, x, 2, |b| t[u16::from_le_bytes([b[0], b[1]]) as usize])
        }
        DType::F32 => dot_lanes(row, x, 4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    }
}

/// `out = W x` for W [out.len(), x.len()] (HF layout), rows split across the rayon pool.
/// bf16 rows go through `simd::dot16` (bf16 → f32 by a shift, f32 FMA: the products are exact,
/// so this is the f32 dot in another order). It replaced three `vdpbf16ps` over x split into
/// three bf16 terms: that reads x three times per row, and at k = 5632 (down_proj) x no longer
/// stays in L1 (measured on Zen 4, 2 cores: down_proj GEMV 20 vs 16 GB/s, decode +5 %).
pub fn matvec(w: &TensorView, x: &[f32], out: &mut [f32]) {
    matvec_multi(w, x, 1, out)
}

/// [`matvec`] of `b` vectors: xs (b, k), out (n, b) (`par_rows_multi`).
pub fn matvec_multi(w: &TensorView, xs: &[f32], b: usize, out: &mut [f32]) {
    let k = xs.len() / b.max(1);
    debug_assert_eq!(w.numel() * b, out.len() * k);
    let row_bytes = k * w.dtype.size();
    let (bytes, dtype) = (w.bytes(), w.dtype);
    par_rows_multi(out, b, w.numel() * b, |r, j| dot_row(&bytes[r * row_bytes..(r + 1) * row_bytes], dtype, &xs[j * k..(j + 1) * k]));
}

/// Reference twin of [`matvec`]: one thread, element by element through `get_f32`.
pub fn matvec_ref(w: &TensorView, x: &[f32], out: &mut [f32]) {
    let k = x.len();
    for (r, o) in out.iter_mut().enumerate() {
        *o = (0..k).map(|c| w.get_f32(r * k + c) * x[c]).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn matvec_matches_reference_for_every_dtype() {
        let (rows, cols) = (37, 29);
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 263) as f32 - 131.0) / 97.0).collect();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let f32w = TensorView::from_f32("w", vec![rows, cols], &data);
        for w in [f32w.clone(), to_dtype(&f32w, DType::BF16), to_dtype(&f32w, DType::F16)] {
            let (mut a, mut b) = (vec![0.0; rows], vec![0.0; rows]);
            matvec(&w, &x, &mut a);
            matvec_ref(&w, &x, &mut b);
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{:?}: {p} vs {q}", w.dtype);
            }
        }
    }

    fn to_dtype(w: &TensorView, dtype: DType) -> TensorView {
        let v = w.to_f32_vec();
        let bytes: Vec<u8> = match dtype {
            DType::BF16 => v.iter().flat_map(|&f| half::bf16::from_f32(f).to_le_bytes()).collect(),
            DType::F16 => v.iter().flat_map(|&f| f16::from_f32(f).to_le_bytes()).collect(),
            DType::F32 => v.iter().flat_map(|&f| f.to_le_bytes()).collect(),
        };
        let len = bytes.len();
        TensorView::new("w".into(), dtype, w.shape.clone(), std::sync::Arc::new(crate::tensor::Storage::Heap(bytes)), 0, len)
    }
}
