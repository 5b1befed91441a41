//! The decode GEMV driver: `out = W x` for a linear in any weight format under either
//! `Activations`, dispatched once per call to the format's code (formats/): f32 activations run
//! the format's own matvec; bf16 activations round x once and run the format's fast row dot,
//! else the portable bf16 row dot below. `linear_ref` is the plain twin the tests compare
//! against.
use std::cell::RefCell;

use crate::backend::cpu::par::par_rows;
use crate::backend::cpu::simd;
use crate::formats::{dispatch, expand_row_bf16, Activations, Format, Linear};

thread_local! {
    /// The calling thread's x rounded to bf16 (`Activations::Bf16`), reused across calls:
    /// no allocation per token.
    /// With it, those bf16 values as f32 where `vdpbf16ps` is missing.
    static XT: RefCell<(Vec<u16>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// One weight row as bf16 (k) for [`bf16_row_dot`].
    static ROW: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// `out = W x` for a linear in any weight format, with the model's [`Activations`]; fused
/// parts come out stacked in order.
pub fn linear(w: &Linear, x: &[f32], out: &mut [f32], act: Activations) {
    match act {
        Activations::Bf16 => dispatch!(w, f => linear_bf16(f, x, out)),
        Activations::F32 => dispatch!(w, f => f.matvec_f32(x, out)),
    }
}

/// [`linear`] of `b` vectors at once (a batched decode step): xs (b, k), out (n, b), row r's b
/// results together. Under f32 activations the weights stream from memory once for all b and
/// each result is bit for bit `linear`'s for that vector alone; bf16 activations run `linear`
/// per vector (the same results, the weights read b times).
pub fn linear_multi(w: &Linear, xs: &[f32], b: usize, out: &mut [f32], act: Activations) {
    match act {
        Activations::F32 => dispatch!(w, f => f.matvec_f32_multi(xs, b, out)),
        Activations::Bf16 => {
            let (n, k) = w.shape();
            let mut col = vec![0f32; n];
            for j in 0..b {
                linear(w, &xs[j * k..(j + 1) * k], &mut col, act);
                for (r, &v) in col.iter().enumerate() {
                    out[r * b + j] = v;
                }
            }
        }
    }
}

/// [`linear`] under `Activations::Bf16`: x rounded to bf16 once, then every row
/// Σ bf16(w)·bf16(x) summed in f32 — one `vdpbf16ps` per 32 bf16 weights; fp8 dequantized and
/// rounded in registers (without AVX512_BF16 too: f32 FMA against x's bf16 values); other rows
/// (f16/f32 natives, bf16 without AVX512_BF16) through `bf16_row_dot`.
fn linear_bf16<F: Format>(w: &F, x: &[f32], out: &mut [f32]) {
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
        simd::f32_to_bf16(x, xb);
        if !simd::avx512_bf16() {
            // no vdpbf16ps: x's bf16 values as f32 against the row's bf16 values in the f32 dot
            // (AVX-512 / AVX2): the same products, exact in f32
            xr.clear();
            xr.extend(xb.iter().map(|&v| f32::from_bits((v as u32) << 16)));
        }
        let (xb, xr) = (&xb[..], &xr[..]);
        par_rows(out, n * k, |r| w.dot_bf16_act(r, xb, xr).unwrap_or_else(|| bf16_row_dot(w, r, xb, xr)));
    });
}

/// Row `r` of `w` rounded to bf16 (`expand_row_bf16`, as the prefill tiles see it) dotted with
/// `xb` (x as bf16): through `simd::dot16` against `xr` (xb's values as f32, when given) on
/// CPUs with AVX-512 or AVX2, else in 8 f32 lanes: the portable form of the bf16-activation
/// products.
fn bf16_row_dot<F: Format>(w: &F, r: usize, xb: &[u16], xr: &[f32]) -> f32 {
    let k = xb.len();
    if !xr.is_empty() {
        if let Some(v) = w.bf16_row_bytes(r).and_then(|row| simd::dot16(row, simd::Half::Bf16, xr)) {
            return v;
        }
    }
    ROW.with(|b| {
        // re-entered on this thread: a buffer of its own
        let (mut tls, mut own) = (b.try_borrow_mut(), Vec::new());
        let row = tls.as_deref_mut().unwrap_or(&mut own);
        row.resize(k, 0);
        expand_row_bf16(w, r, row);
        if !xr.is_empty() {
            if let Some(v) = simd::dot_bf16(row, xr) {
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

/// Reference twin of [`linear`]: one thread, f64 sums of `weight_at · x`, both factors
/// rounded to bf16 first under `Activations::Bf16`.
pub fn linear_ref(w: &Linear, x: &[f32], act: Activations) -> Vec<f32> {
    let (n, k) = w.shape();
    let r = |v: f32| if act == Activations::Bf16 { simd::bf16_round(v) } else { v };
    (0..n).map(|row| (0..k).map(|c| r(w.weight_at(row, c)) as f64 * r(x[c]) as f64).sum::<f64>() as f32).collect()
}
