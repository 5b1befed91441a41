//! Batched linears for the prompt pass: `out (m × n) = x (m × k) · Wᵀ` for a [`Linear`] in any
//! weight format, one GEMM instead of m GEMVs.
//!
//! Shape of the work (outer-product form, so no horizontal sums): the activations are packed
//! once per GEMM into panels of `NT` tokens, k-major (`[k][NT]` f32, or `[k/2][NT]` bf16 pairs),
//! so one 512-bit load is 16 tokens' values at one k. W's rows are split into bands of
//! `BAND_ROWS` (one rayon task each); a task expands its rows once into a thread-local buffer,
//! straight into tile-major order ([`expand_tiled`]: f32, or bf16 pairs for the bf16 kernel;
//! each 12-row tile as k blocks of 16 units × 12 rows, one 512-bit store per row and block),
//! then for every
//! 12-row × 32-token tile keeps 24 accumulators (row r × 16 tokens) in registers for the whole
//! k: per k step (one k in f32, a k pair in bf16) 2 panel loads, 12 broadcasts of a weight and
//! 24 multiply-adds. Bytes from L2 per multiply-add stay ~7, well under its bandwidth. Each
//! band writes its rows of the transposed result (n × m), transposed back at the end. While a
//! band computes, its tiles prefetch the next band's stored weights (one line per k step), so
//! that band's expansion reads cache instead of waiting on DRAM: at m = 32 the wait was a large
//! part of a band (pp32 +9 % fp8/f32, +28 % bf16/bf16, medians of 3 A/B pairs on 2 Zen 4 cores).
//!
//! Numerics follow the model's [`Activations`]:
//! - `F32` (default): f32 activations, weights expanded to f32 exactly (fp8: code · scale, one
//!   rounding, as the decode dot), f32 FMA: the decode GEMV's arithmetic in another summation
//!   order, so `generate` (batched prompt) and a `decode_step` loop give the same tokens,
//!   `native` keeps HF parity and `bf16` stays identical to `native` on a bf16 checkpoint.
//! - `Bf16`: activations and expanded weights rounded to bf16 (nearest even), products summed
//!   in f32 by `vdpbf16ps` (2.7× the f32 FMA rate measured here); the decode GEMV makes the
//!   same products (linear::linear). Without AVX512_BF16 the f32 tiles run on the rounded values
//!   (rounded in registers as the band is expanded tile-major: pp32 +50-70 %, pp512 +30 % on
//!   TinyLlama over rounding row-major rows, `VIVA_NO_AVX512_BF16=1` on 2 Zen 4 cores).
//!
//! `linear_batch_ref` is the plain twin (f64 sums over `weight_at`); tests compare every kernel.
use std::cell::RefCell;

use rayon::prelude::*;

use crate::formats::tile::{tm_units, RT};
use crate::formats::{dispatch, expand_row_bf16, Activations, Format, Linear};

mod tiles;
pub use tiles::Kernel;
use tiles::*;
#[cfg(test)]
mod tests;

/// Weight rows per rayon task: a whole number of micro-tiles.
const BAND_ROWS: usize = 4 * RT;

/// The kernel `linear_batch` uses under `act` on this CPU.
pub fn kernel_for(act: Activations) -> Kernel {
    match act {
        Activations::Bf16 => Kernel::Bf16,
        Activations::F32 if crate::backend::cpu::simd::avx512() => Kernel::F32,
        Activations::F32 if crate::backend::cpu::simd::avx2() => Kernel::Avx2,
        Activations::F32 => Kernel::Portable,
    }
}

/// Reusable buffers of one prompt pass's GEMMs (grown on demand, never shrunk).
#[derive(Default)]
pub struct GemmBuf {
    panels_f32: Vec<f32>, // (m_pad / NT, kp, NT)
    panels_bf16: Vec<u32>, // (m_pad / NT, kp / 2, NT) bf16 pairs, element 2p in the low half
    out_t: Vec<f32>,       // (n, m_pad)
    out_tt: Vec<f32>,      // (m_pad, n) when m < m_pad
}

thread_local! {
    /// One band of expanded weight rows per worker, row-major (rows_pad, kp), where
    /// [`expand_tiled`] does not run (no AVX-512, bf16 numerics on the f32 tiles).
    static BAND_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static BAND_BF16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
    /// One band straight from [`expand_tiled`], tile-major: (rows_pad, tm_units(kp)) f32 bits
    /// or (rows_pad, tm_units(kp / 2)) bf16 pairs, plus room to start on a 64-byte boundary.
    static BAND_TILED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `v`'s bits as f32 (the f32 tiles' view of a [`BAND_TILED`] band).
fn bits_as_f32(v: &[u32]) -> &[f32] {
    // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is an f32.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const f32, v.len()) }
}

/// `v` as its u16 halves, little-endian order (the bf16 tiles' view of a band of pairs).
fn pairs_as_u16(v: &[u32]) -> Option<&[u16]> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    // SAFETY: u16's alignment divides u32's, the view covers exactly the 2·len halves, and
    // any bits are a u16.
    Some(unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u16, v.len() * 2) })
}

/// `out (m × n) = x (m × k) · Wᵀ` with the kernel `kernel_for(act)`.
pub fn linear_batch(w: &Linear, x: &[f32], m: usize, out: &mut [f32], buf: &mut GemmBuf, act: Activations) {
    linear_batch_with(kernel_for(act), w, x, m, out, buf)
}

/// [`linear_batch`] with a chosen kernel (tests run each one). `F32` needs AVX-512F and `Avx2`
/// AVX2 + FMA (else the best f32 tiles here run); `Bf16` without AVX512_BF16 rounds the
/// operands and runs the f32 tiles.
pub fn linear_batch_with(kernel: Kernel, w: &Linear, x: &[f32], m: usize, out: &mut [f32], buf: &mut GemmBuf) {
    let (n, k) = w.shape();
    assert!(x.len() == m * k && out.len() == m * n, "linear_batch: x {} / out {} for m {m}, n {n}, k {k}", x.len(), out.len());
    // `round`: bf16 numerics on the f32 tiles
    let f32_tiles = kernel_for(Activations::F32);
    let (kernel, round) = match kernel {
        Kernel::Bf16 if !crate::backend::cpu::simd::avx512_bf16() => (f32_tiles, true),
        Kernel::F32 => (f32_tiles, false),
        Kernel::Avx2 if !crate::backend::cpu::simd::avx2() => (Kernel::Portable, false),
        k => (k, false),
    };
    if m == 0 || n == 0 {
        return;
    }
    dispatch!(w, f => linear_batch_format(f, kernel, round, x, m, out, buf))
}

/// [`linear_batch_with`] for one format, once the kernel and `round` (bf16 numerics on the f32
/// tiles) are chosen.
#[allow(clippy::too_many_arguments)]
fn linear_batch_format<F: Format>(w: &F, kernel: Kernel, round: bool, x: &[f32], m: usize, out: &mut [f32], buf: &mut GemmBuf) {
    let (n, k) = w.shape();
    let kp = k.div_ceil(K_ALIGN) * K_ALIGN;
    let m_pad = m.div_ceil(NT) * NT;
    pack_activations(kernel, round, x, m, k, kp, buf);
    buf.out_t.resize(n * m_pad, 0.0);
    let (pf, pb) = (&buf.panels_f32[..], &buf.panels_bf16[..]);
    buf.out_t[..n * m_pad].par_chunks_mut(BAND_ROWS * m_pad).enumerate().for_each(|(band, out_t)| {
        let r0 = band * BAND_ROWS;
        let rows = out_t.len() / m_pad;
        let rows_pad = rows.div_ceil(RT) * RT;
        // the next band's weights, pulled towards this core while this band computes: its
        // expansion then reads them from cache, not DRAM (a task runs the bands after its own)
        let next = w.row_span(r0 + rows, (r0 + rows + BAND_ROWS).min(n));
        let tiles = rows_pad / RT * (m_pad / NT);
        let share = |rt: usize, p: usize| {
            let (i, lines) = ((rt / RT) * (m_pad / NT) + p, next.len().div_ceil(64));
            next.get(i * lines / tiles * 64..((i + 1) * lines / tiles * 64).min(next.len())).unwrap_or(&[])
        };
        // `tm`: w is the band tile-major (expand_tiled), else row-major
        let tile_f = |wt: &[f32], tm: bool, rt: usize, p: usize, dst: &mut [[f32; NT]; RT]| {
            let x = &pf[p * kp * NT..(p + 1) * kp * NT];
            if tm {
                tile_f32::<true>(kernel, x, wt, kp, share(rt, p), dst)
            } else {
                tile_f32::<false>(kernel, x, wt, kp, share(rt, p), dst)
            }
        };
        let tile_b = |wt: &[u16], tm: bool, rt: usize, p: usize, dst: &mut [[f32; NT]; RT]| {
            let x = &pb[p * (kp / 2) * NT..(p + 1) * (kp / 2) * NT];
            if tm {
                tile_bf16::<true>(x, wt, kp, share(rt, p), dst)
            } else {
                tile_bf16::<false>(x, wt, kp, share(rt, p), dst)
            }
        };
        // the band straight into tile-major order (the AVX-512 kernels; bf16-rounded in
        // registers under `round`)
        if matches!(kernel, Kernel::F32 | Kernel::Bf16) {
            let done = BAND_TILED.with(|bt| {
                let mut tiled = bt.borrow_mut();
                let span = tm_units(if kernel == Kernel::F32 { kp } else { kp / 2 });
                // from a 64-byte boundary, so each k block of a row is one cache line
                let need = rows_pad * span + 16;
                if tiled.len() < need {
                    tiled.resize(need, 0);
                }
                let off = tiled.as_ptr().align_offset(64).min(16);
                let tiled = &mut tiled[off..off + rows_pad * span];
                if !expand_tiled(kernel, round, w, r0, rows, k, kp, tiled) {
                    return false;
                }
                match (kernel, pairs_as_u16(tiled)) {
                    (Kernel::F32, _) => {
                        let wf = bits_as_f32(tiled);
                        for_tiles(m_pad, rows, |rt, p, dst| tile_f(&wf[rt * span..(rt + RT) * span], true, rt, p, dst), out_t);
                    }
                    (_, Some(wb)) => for_tiles(m_pad, rows, |rt, p, dst| tile_b(&wb[2 * rt * span..2 * (rt + RT) * span], true, rt, p, dst), out_t),
                    (_, None) => return false,
                }
                true
            });
            if done {
                return;
            }
        }
        if kernel == Kernel::Bf16 {
            // the band's rows as bf16 (bf16 weights copied, the others rounded row by row)
            BAND_BF16.with(|bb| {
                let wb = &mut *bb.borrow_mut();
                wb.clear();
                wb.resize(rows_pad * kp, 0);
                for (i, dst) in wb.chunks_exact_mut(kp).take(rows).enumerate() {
                    expand_row_bf16(w, r0 + i, &mut dst[..k]);
                }
                for_tiles(m_pad, rows, |rt, p, dst| tile_b(&wb[rt * kp..(rt + RT) * kp], false, rt, p, dst), out_t);
            });
            return;
        }
        // the band's rows as exact f32 (rounded to bf16 values under `round`)
        BAND_F32.with(|bf| {
            let wf = &mut *bf.borrow_mut();
            wf.clear();
            wf.resize(rows_pad * kp, 0.0);
            for (i, dst) in wf.chunks_exact_mut(kp).take(rows).enumerate() {
                w.expand_row_f32(r0 + i, &mut dst[..k]);
                if round {
                    dst[..k].iter_mut().for_each(|v| *v = crate::backend::cpu::simd::bf16_round(*v));
                }
            }
            for_tiles(m_pad, rows, |rt, p, dst| tile_f(&wf[rt * kp..(rt + RT) * kp], false, rt, p, dst), out_t);
        });
    });
    // (n, m_pad) → (m_pad, n), blocked (convert::transpose_into); the first m rows are `out`
    let transposed = if m == m_pad {
        crate::convert::transpose_into(&buf.out_t[..n * m_pad], out, n, m_pad)
    } else {
        buf.out_tt.resize(m_pad * n, 0.0);
        let r = crate::convert::transpose_into(&buf.out_t[..n * m_pad], &mut buf.out_tt[..m_pad * n], n, m_pad);
        out.copy_from_slice(&buf.out_tt[..m * n]);
        r
    };
    debug_assert!(transposed.is_ok(), "sizes are n·m_pad by construction");
}

/// Columns per packing task (a whole number of bf16 pairs).
const PACK_COLS: usize = 256;

/// x (m × k) → k-major panels of NT tokens (zero rows past m, zero columns past k), in the
/// kernel's activation type (`round`: f32 panels of bf16-rounded values); split over
/// (panel, column range) tasks.
fn pack_activations(kernel: Kernel, round: bool, x: &[f32], m: usize, k: usize, kp: usize, buf: &mut GemmBuf) {
    let m_pad = m.div_ceil(NT) * NT;
    // task i: panel i / per_panel, columns c0..c1 of it
    let per_panel = kp.div_ceil(PACK_COLS);
    let cols = |i: usize| ((i % per_panel) * PACK_COLS, ((i % per_panel + 1) * PACK_COLS).min(kp));
    let tokens = |i: usize| (i / per_panel) * NT..((i / per_panel + 1) * NT).min(m);
    let tasks = m_pad / NT * per_panel;
    if kernel == Kernel::Bf16 {
        buf.panels_bf16.clear();
        buf.panels_bf16.resize(m_pad * kp / 2, 0);
        let chunks = split(&mut buf.panels_bf16, tasks, |i| (cols(i).1 - cols(i).0) / 2 * NT);
        chunks.into_par_iter().enumerate().for_each(|(i, dst)| {
            let (c0, c1) = cols(i);
            let mut row = [0u16; PACK_COLS];
            for t in tokens(i) {
                let src = &x[t * k + c0.min(k)..t * k + c1.min(k)];
                crate::backend::cpu::simd::f32_to_bf16(src, &mut row[..src.len()]);
                row[src.len()..c1 - c0].fill(0);
                for p in 0..(c1 - c0) / 2 {
                    dst[p * NT + t % NT] = row[2 * p] as u32 | (row[2 * p + 1] as u32) << 16;
                }
            }
        });
    } else {
        buf.panels_f32.clear();
        buf.panels_f32.resize(m_pad * kp, 0.0);
        let chunks = split(&mut buf.panels_f32, tasks, |i| (cols(i).1 - cols(i).0) * NT);
        chunks.into_par_iter().enumerate().for_each(|(i, dst)| {
            let (c0, c1) = cols(i);
            for t in tokens(i) {
                for (c, &v) in (c0..c1.min(k)).zip(&x[t * k + c0.min(k)..t * k + c1.min(k)]) {
                    dst[(c - c0) * NT + t % NT] = if round { crate::backend::cpu::simd::bf16_round(v) } else { v };
                }
            }
        });
    }
}

/// `buf` cut into `n` consecutive pieces, piece i `len(i)` long.
fn split<T>(buf: &mut [T], n: usize, len: impl Fn(usize) -> usize) -> Vec<&mut [T]> {
    let mut pieces = Vec::with_capacity(n);
    let mut rest = buf;
    for i in 0..n {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len(i));
        pieces.push(head);
        rest = tail;
    }
    pieces
}

/// Walks one band's tiles: `tile(row0, panel, dst)` computes rows row0..row0+RT (band-relative)
/// × tokens of `panel` into `dst` (RT × NT); rows past the band are padding, never stored.
fn for_tiles(m_pad: usize, rows: usize, mut tile: impl FnMut(usize, usize, &mut [[f32; NT]; RT]), out_t: &mut [f32]) {
    let mut dst = [[0f32; NT]; RT];
    for rt in (0..rows).step_by(RT) {
        for p in 0..m_pad / NT {
            tile(rt, p, &mut dst);
            for (r, d) in dst.iter().enumerate().take(rows - rt) {
                out_t[(rt + r) * m_pad + p * NT..(rt + r) * m_pad + (p + 1) * NT].copy_from_slice(d);
            }
        }
    }
}

/// Reference twin of [`linear_batch`]: each token's row through `linear::linear_ref` (f64 sums,
/// factors rounded to bf16 under `Activations::Bf16`), one thread.
pub fn linear_batch_ref(w: &Linear, x: &[f32], m: usize, act: Activations) -> Vec<f32> {
    let k = w.shape().1;
    (0..m).flat_map(|t| crate::backend::cpu::linear::linear_ref(w, &x[t * k..(t + 1) * k], act)).collect()
}
