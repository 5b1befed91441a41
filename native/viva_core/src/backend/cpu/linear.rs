//! The decode GEMV: `out = W x` for a linear in any weight format under either `Activations`,
//! rows split across the rayon pool (bf16/f16 rows through `simd::dot16`, fp8 through
//! `quant::linear`'s row dot), with the plain `_ref` twins the tests compare against.
use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;

use crate::backend::cpu::ops::PARALLEL_MIN_WORK;
use crate::quant::linear::{dot_fp8_row, fp8_input};
use crate::tensor::{DType, TensorView};
use crate::weights::{Activations, Linear};

/// Output rows per rayon task: big enough to amortise scheduling, small enough to balance.
const ROWS_PER_TASK: usize = 32;

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
    let simd = match dtype {
        DType::BF16 => crate::backend::cpu::simd::dot16(row, crate::backend::cpu::simd::Half::Bf16, x),
        DType::F16 => crate::backend::cpu::simd::dot16(row, crate::backend::cpu::simd::Half::F16, x),
        DType::F32 => None,
    };
    if let Some(v) = simd {
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

/// `out[r] = row_dot(r)` for every row, split across the rayon pool when `work` (multiply-adds)
/// is large enough to pay for waking it. One row at a time: measured on Zen 4, four interleaved
/// row streams per core read DRAM ~35% slower than one.
fn par_rows(out: &mut [f32], work: usize, row_dot: impl Fn(usize) -> f32 + Sync) {
    let rows = |(chunk, outs): (usize, &mut [f32])| {
        for (i, o) in outs.iter_mut().enumerate() {
            *o = row_dot(chunk * ROWS_PER_TASK + i);
        }
    };
    if work < PARALLEL_MIN_WORK {
        out.chunks_mut(ROWS_PER_TASK).enumerate().for_each(rows);
    } else {
        out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(rows);
    }
}

/// `out = W x` for W [out.len(), x.len()] (HF layout), rows split across the rayon pool.
/// bf16 rows go through `simd::dot16` (bf16 → f32 by a shift, f32 FMA: the products are exact,
/// so this is the f32 dot in another order). It replaced three `vdpbf16ps` over x split into
/// three bf16 terms: that reads x three times per row, and at k = 5632 (down_proj) x no longer
/// stays in L1 (measured on Zen 4, 2 cores: down_proj GEMV 20 vs 16 GB/s, decode +5 %).
pub fn matvec(w: &TensorView, x: &[f32], out: &mut [f32]) {
    debug_assert_eq!(w.numel(), out.len() * x.len());
    let row_bytes = x.len() * w.dtype.size();
    let (bytes, dtype) = (w.bytes(), w.dtype);
    par_rows(out, w.numel(), |r| dot_row(&bytes[r * row_bytes..(r + 1) * row_bytes], dtype, x));
}

thread_local! {
    /// The calling thread's x prepared for the fp8 dots (x·2^60, `simd::fp8_x`), reused.
    static XS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The calling thread's x rounded to bf16 (`Activations::Bf16`), reused across calls:
    /// no allocation per token.
    /// With it, those bf16 values as f32 where `vdpbf16ps` is missing.
    static XT: std::cell::RefCell<(Vec<u16>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `out = W x` for a linear in any weight format, with the model's [`Activations`]; fused
/// parts come out stacked in order.
pub fn linear(w: &Linear, x: &[f32], out: &mut [f32], act: Activations) {
    if act == Activations::Bf16 {
        return linear_bf16(w, x, out);
    }
    match w {
        Linear::Native(parts) if parts.len() == 1 => matvec(&parts[0], x, out),
        // fused parts (q·k·v, gate·up) as one parallel loop over all their rows
        Linear::Native(parts) => par_rows(out, out.len() * x.len(), |r| match crate::weights::native_row(parts, r) {
            Some((p, pr)) => {
                let row_bytes = x.len() * p.dtype.size();
                dot_row(&p.bytes()[pr * row_bytes..(pr + 1) * row_bytes], p.dtype, x)
            }
            None => f32::NAN,
        }),
        Linear::Bf16 { k, data, .. } => {
            let k = *k;
            par_rows(out, data.len(), |r| dot_lanes_bf16(&data[r * k..(r + 1) * k], x));
        }
        Linear::Fp8(p) => XS.with(|b| {
            // re-entered on this thread (a pool job running a linear): a buffer of its own
            let (mut tls, mut own) = (b.try_borrow_mut(), Vec::new());
            let xs = fp8_input(x, tls.as_deref_mut().unwrap_or(&mut own));
            par_rows(out, p.n * p.k, |r| dot_fp8_row(p, r, x, xs))
        }),
    }
}

/// [`linear`] under `Activations::Bf16`: x rounded to bf16 once, then every row
/// Σ bf16(w)·bf16(x) summed in f32 — one `vdpbf16ps` per 32 bf16 weights; fp8 dequantized and
/// rounded in registers (without AVX512_BF16 too: f32 FMA against x's bf16 values); other rows
/// (f16/f32 natives, bf16 without AVX512_BF16) through `bf16_row_dot`.
fn linear_bf16(w: &Linear, x: &[f32], out: &mut [f32]) {
    let (n, k) = w.shape();
    debug_assert_eq!((out.len(), x.len()), (n, k));
    XT.with(|b| {
        // re-entered on this thread (a pool job running a linear while this one waits in
        // par_rows): buffers of its own
        let (mut tls, mut own) = (b.try_borrow_mut(), (Vec::new(), Vec::new()));
        let (xb, xr) = match tls.as_deref_mut() {
            Ok(bufs) => (&mut bufs.0, &mut bufs.1),
            Err(_) => (&mut own.0, &mut own.1),
        };
        xb.resize(k, 0);
        crate::backend::cpu::simd::f32_to_bf16(x, xb);
        if !crate::backend::cpu::simd::avx512_bf16() {
            // no vdpbf16ps: x's bf16 values as f32 against the row's bf16 values in the f32 dot
            // (AVX-512 / AVX2): the same products, exact in f32
            xr.clear();
            xr.extend(xb.iter().map(|&v| f32::from_bits((v as u32) << 16)));
        }
        let (xb, xr) = (&xb[..], &xr[..]);
        par_rows(out, n * k, |r| {
            let fast = match w {
                Linear::Fp8(p) => {
                    let (codes, scales) = p.row(r);
                    if xr.is_empty() {
                        crate::backend::cpu::simd::dot_fp8_bf16(codes, scales, p.block, xb)
                    } else {
                        crate::backend::cpu::simd::dot_fp8_bf16r(codes, scales, p.block, xr)
                    }
                }
                _ if !xr.is_empty() => None,
                _ => crate::weights::bf16_row_bytes(w, r, k).and_then(|row| crate::backend::cpu::simd::dot_bf16_bf16(row, xb)),
            };
            fast.unwrap_or_else(|| bf16_row_dot(w, r, xb, xr))
        });
    });
}

thread_local! {
    /// One weight row as bf16 (k) for [`bf16_row_dot`].
    static ROW: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Row `r` of `w` rounded to bf16 (gemm's `expand_row_bf16`, as the prefill tiles see it)
/// dotted with `xb` (x as bf16): through `simd::dot16` against `xr` (xb's values as f32, when
/// given) on CPUs with AVX-512 or AVX2, else in 8 f32 lanes: the portable form of the
/// bf16-activation products.
fn bf16_row_dot(w: &Linear, r: usize, xb: &[u16], xr: &[f32]) -> f32 {
    let k = xb.len();
    if !xr.is_empty() {
        if let Some(v) = crate::weights::bf16_row_bytes(w, r, k).and_then(|row| crate::backend::cpu::simd::dot16(row, crate::backend::cpu::simd::Half::Bf16, xr)) {
            return v;
        }
    }
    ROW.with(|b| {
        let mut row = b.borrow_mut();
        row.resize(k, 0);
        crate::weights::expand_row_bf16(w, r, &mut row);
        if !xr.is_empty() {
            if let Some(v) = crate::backend::cpu::simd::dot_bf16(&row, xr) {
                return v;
            }
        }
        const L: usize = 8;
        let mut acc = [0f32; L];
        let up = |b: u16| f32::from_bits((b as u32) << 16);
        let (mut wc, mut xc) = (row.chunks_exact(L), xb.chunks_exact(L));
        for (ws, xs) in (&mut wc).zip(&mut xc) {
            for l in 0..L {
                acc[l] += up(ws[l]) * up(xs[l]);
            }
        }
        let tail: f32 = wc.remainder().iter().zip(xc.remainder()).map(|(&w, &x)| up(w) * up(x)).sum();
        acc.iter().sum::<f32>() + tail
    })
}

/// Reference twin of [`linear`]: one thread, f64 sums of `gemm::weight_at · x`, both factors
/// rounded to bf16 first under `Activations::Bf16`.
pub fn linear_ref(w: &Linear, x: &[f32], act: Activations) -> Vec<f32> {
    let (n, k) = w.shape();
    let r = |v: f32| if act == Activations::Bf16 { crate::backend::cpu::simd::bf16_round(v) } else { v };
    (0..n).map(|row| (0..k).map(|c| r(crate::weights::weight_at(w, row, c)) as f64 * r(x[c]) as f64).sum::<f64>() as f32).collect()
}

/// bf16 bits · x: AVX-512 when present, else 8 lanes (see `dot_lanes`).
#[inline]
fn dot_lanes_bf16(row: &[u16], x: &[f32]) -> f32 {
    if let Some(v) = crate::backend::cpu::simd::dot_bf16(row, x) {
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
