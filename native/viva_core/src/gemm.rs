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
//!   same products (ops::linear). Without AVX512_BF16 the f32 tiles run on the rounded values
//!   (rounded in registers as the band is expanded tile-major: pp32 +50-70 %, pp512 +30 % on
//!   TinyLlama over rounding row-major rows, `VIVA_NO_AVX512_BF16=1` on 2 Zen 4 cores).
//!
//! `linear_batch_ref` is the plain twin (f64 sums over `weight_at`); tests compare every kernel.
use std::cell::RefCell;

use rayon::prelude::*;

use crate::quant::fp8::e4m3_decode_arith;
use crate::tensor::TensorView;
use crate::weights::{Activations, Linear};

/// Weight rows per micro-tile (each broadcast against the token panel).
const RT: usize = 12;
/// Weight rows per rayon task: a whole number of micro-tiles.
const BAND_ROWS: usize = 4 * RT;
/// Tokens per activation panel (two 512-bit vectors of f32).
const NT: usize = 32;
/// k is padded with zeros to a multiple of this (a bf16 pair).
const K_ALIGN: usize = 2;

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

/// The kernel `linear_batch` uses under `act` on this CPU.
pub fn kernel_for(act: Activations) -> Kernel {
    match act {
        Activations::Bf16 => Kernel::Bf16,
        Activations::F32 if crate::simd::avx512() => Kernel::F32,
        Activations::F32 if crate::simd::avx2() => Kernel::Avx2,
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
        Kernel::Bf16 if !crate::simd::avx512_bf16() => (f32_tiles, true),
        Kernel::F32 => (f32_tiles, false),
        Kernel::Avx2 if !crate::simd::avx2() => (Kernel::Portable, false),
        k => (k, false),
    };
    if m == 0 || n == 0 {
        return;
    }
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
        let next = row_span(w, r0 + rows, (r0 + rows + BAND_ROWS).min(n));
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
                expand_row_f32(w, r0 + i, &mut dst[..k]);
                if round {
                    dst[..k].iter_mut().for_each(|v| *v = crate::simd::bf16_round(*v));
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
                crate::simd::f32_to_bf16(src, &mut row[..src.len()]);
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
                    dst[(c - c0) * NT + t % NT] = if round { crate::simd::bf16_round(v) } else { v };
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

/// The stored bytes of rows r0..r1 of `w` (fp8: the codes), as far as they are contiguous (a
/// fused native linear stops at the end of the part holding r0); empty when r0 ≥ r1.
fn row_span(w: &Linear, r0: usize, r1: usize) -> &[u8] {
    if r0 >= r1 {
        return &[];
    }
    match w {
        Linear::Bf16 { k, data, .. } => crate::simd::u16_le_bytes(&data[r0 * k..r1 * k]).unwrap_or(&[]),
        Linear::Fp8(p) => &p.codes[r0 * p.row_stride..r1 * p.row_stride],
        Linear::Native(parts) => match native_row(parts, r0) {
            Some((p, pr)) => {
                let row_bytes = p.bytes().len() / p.shape[0].max(1);
                &p.bytes()[pr * row_bytes..(pr + r1 - r0).min(p.shape[0]) * row_bytes]
            }
            None => &[],
        },
    }
}

/// Row `r` of `w` as exact f32 (k values).
pub(crate) fn expand_row_f32(w: &Linear, r: usize, dst: &mut [f32]) {
    let k = dst.len();
    match w {
        Linear::Native(parts) => {
            if let Some((p, r)) = native_row(parts, r) {
                p.read_f32_into(r * k, dst);
            }
        }
        Linear::Bf16 { data, .. } => {
            for (d, &b) in dst.iter_mut().zip(&data[r * k..(r + 1) * k]) {
                *d = f32::from_bits((b as u32) << 16);
            }
        }
        Linear::Fp8(p) => {
            let (codes, scales) = p.row(r);
            if crate::simd::fp8_row_to_f32(codes, scales, p.block, dst) {
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::avx2() {
                // SAFETY: AVX2/FMA present (checked by `avx2`); the body is safe Rust.
                return unsafe { fp8_row_f32_avx2(codes, scales, p.block, dst) };
            }
            fp8_row_f32(codes, scales, p.block, dst)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fp8_row_f32_avx2(codes: &[u8], scales: &[f32], block: usize, dst: &mut [f32]) {
    fp8_row_f32(codes, scales, block, dst)
}

/// An fp8 row as exact f32 (code value × its block's scale, one rounding) without AVX-512:
/// block by block with the branch-free decode, so the loop vectorises.
#[inline(always)]
fn fp8_row_f32(codes: &[u8], scales: &[f32], block: usize, dst: &mut [f32]) {
    for ((d, c), &s) in dst.chunks_mut(block).zip(codes.chunks(block)).zip(scales) {
        for (d, &c) in d.iter_mut().zip(c) {
            *d = e4m3_decode_arith(c) * s;
        }
    }
}

thread_local! {
    /// One row expanded to f32 on its way to bf16 (k).
    static ROW_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Row `r` of `w` rounded to bf16 bits (k = dst.len()): bf16 weights as they are, the others
/// expanded exactly (`expand_row_f32`) and rounded to nearest even (`simd::f32_to_bf16`).
pub(crate) fn expand_row_bf16(w: &Linear, r: usize, dst: &mut [u16]) {
    let k = dst.len();
    if let Some(bytes) = bf16_row_bytes(w, r, k) {
        dst.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(d, b)| *d = u16::from_le_bytes([b[0], b[1]]));
        return;
    }
    ROW_F32.with(|b| {
        let mut row = b.borrow_mut();
        row.resize(k, 0.0);
        expand_row_f32(w, r, &mut row);
        crate::simd::f32_to_bf16(&row, dst);
    });
}

/// Row `r` (k weights) of a linear whose weights are bf16 already — the Bf16 format or a
/// native BF16 part — as its 2k little-endian bytes; `None` for other weights.
pub(crate) fn bf16_row_bytes(w: &Linear, r: usize, k: usize) -> Option<&[u8]> {
    match w {
        Linear::Bf16 { data, .. } => crate::simd::u16_le_bytes(&data[r * k..(r + 1) * k]),
        Linear::Native(parts) => match native_row(parts, r) {
            Some((p, pr)) if p.dtype == crate::tensor::DType::BF16 => Some(&p.bytes()[pr * 2 * k..(pr + 1) * 2 * k]),
            _ => None,
        },
        Linear::Fp8(_) => None,
    }
}

/// Row `r` of a fused native linear: the part that holds it and the row inside that part.
pub(crate) fn native_row<T: std::borrow::Borrow<TensorView>>(parts: &[T], r: usize) -> Option<(&TensorView, usize)> {
    let mut r = r;
    for p in parts.iter().map(|p| p.borrow()) {
        if r < p.shape[0] {
            return Some((p, r));
        }
        r -= p.shape[0];
    }
    None
}

/// Element (r, c) of `w` as f32, the way `expand_row_f32` reads it, one at a time.
pub fn weight_at(w: &Linear, r: usize, c: usize) -> f32 {
    match w {
        Linear::Native(parts) => native_row(parts, r).map_or(f32::NAN, |(p, r)| p.get_f32(r * p.shape[1] + c)),
        Linear::Bf16 { k, data, .. } => f32::from_bits((data[r * k + c] as u32) << 16),
        Linear::Fp8(p) => p.get(r, c),
    }
}

/// Reference twin of [`linear_batch`]: each token's row through `ops::linear_ref` (f64 sums,
/// factors rounded to bf16 under `Activations::Bf16`), one thread.
pub fn linear_batch_ref(w: &Linear, x: &[f32], m: usize, act: Activations) -> Vec<f32> {
    let k = w.shape().1;
    (0..m).flat_map(|t| crate::ops::linear_ref(w, &x[t * k..(t + 1) * k], act)).collect()
}

/// One stored weight row as [`expand_tiled`] reads it: raw little-endian bytes (k values) or
/// fp8 codes with their scales (scale of column c: c >> shift); `Zero` past the band.
#[derive(Clone, Copy)]
enum RowSrc<'a> {
    Zero,
    F32(&'a [u8]),
    Bf16(&'a [u8]),
    F16(&'a [u8]),
    Fp8(&'a [u8], &'a [f32], u32),
}

/// Row `r` of `w` (k values) as a [`RowSrc`]; `None` where the 16-wide loads do not apply (fp8
/// blocks that split a 16-vector, a big-endian target).
fn row_src(w: &Linear, r: usize, k: usize) -> Option<RowSrc<'_>> {
    match w {
        Linear::Bf16 { data, .. } => crate::simd::u16_le_bytes(&data[r * k..(r + 1) * k]).map(RowSrc::Bf16),
        // one scale per 16-vector, found by a shift (a division per vector doubled the
        // expansion): power-of-two blocks of whole vectors, or one block for the row
        Linear::Fp8(p) if p.block >= k || (p.block >= 16 && p.block.is_power_of_two()) => {
            let (codes, scales) = p.row(r);
            let shift = if p.block >= k { usize::BITS - 1 } else { p.block.trailing_zeros() };
            Some(RowSrc::Fp8(codes, scales, shift))
        }
        Linear::Fp8(_) => None,
        Linear::Native(parts) => {
            let (p, pr) = native_row(parts, r)?;
            let sz = p.dtype.size();
            let bytes = p.bytes().get(pr * k * sz..(pr + 1) * k * sz)?;
            match p.dtype {
                _ if cfg!(target_endian = "big") => None,
                crate::tensor::DType::F32 => Some(RowSrc::F32(bytes)),
                crate::tensor::DType::BF16 => Some(RowSrc::Bf16(bytes)),
                crate::tensor::DType::F16 => Some(RowSrc::F16(bytes)),
            }
        }
    }
}

/// Rows r0..r0+rows of `w` (k columns) expanded straight into the tile-major band the tile
/// kernels read (`at::<true>`; kernel F32: exact f32 as [`expand_row_f32`], kernel Bf16: bf16
/// pairs as [`expand_row_bf16`]), zeros past `rows` and past k: all rows_pad × tm_units(units)
/// elements of `dst` are written. A row's 16 units of one k block are one 512-bit vector, so
/// this costs what a row-major expansion does (~0.25 ns/weight, one core). It replaced
/// row-major expansion + a scalar reorder to [kp][RT] (~1.3 ns/weight: it only paid from 4
/// token panels on, so pp32 ran its tiles from rows kp apart at 64 % of the FMA peak) — pp32
/// +25-35 %, pp512 +7-17 % (TinyLlama, 2 Zen 4 cores, alternating runs).
/// `round` (kernel F32 only: bf16 numerics on the f32 tiles, CPUs without AVX512_BF16): each
/// value rounded to bf16 as `simd::bf16_round`, in registers.
/// `false` (dst partly written) without AVX-512 (AVX512_BF16 for `Kernel::Bf16`) or for a
/// weight [`row_src`] cannot read.
#[allow(clippy::too_many_arguments)]
fn expand_tiled(kernel: Kernel, round: bool, w: &Linear, r0: usize, rows: usize, k: usize, kp: usize, dst: &mut [u32]) -> bool {
    let ok = match kernel {
        Kernel::F32 => crate::simd::avx512(),
        Kernel::Bf16 => crate::simd::avx512_bf16(),
        Kernel::Avx2 | Kernel::Portable => false,
    };
    // elements per tile row in dst: kp f32, or kp / 2 bf16 pairs
    let units = if kernel == Kernel::F32 { kp } else { kp / 2 };
    let (rows_pad, span) = (rows.div_ceil(RT) * RT, tm_units(units));
    if !ok || dst.len() < rows_pad * span || !kp.is_multiple_of(K_ALIGN) {
        return false;
    }
    // whole 16-unit steps (16 columns, or 32 as 16 pairs); the rest element by element
    let per_unit = kp / units;
    let whole = k / (16 * per_unit) * 16;
    let mut src = [RowSrc::Zero; RT];
    for (t, tile) in dst[..rows_pad * span].chunks_exact_mut(RT * span).enumerate() {
        for (i, s) in src.iter_mut().enumerate() {
            let r = t * RT + i;
            *s = if r < rows {
                match row_src(w, r0 + r, k) {
                    Some(v) => v,
                    None => return false,
                }
            } else {
                RowSrc::Zero
            };
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the features were checked above; loads read units 0..whole of each row (k
        // values ≥ whole·per_unit, fp8 scales c >> shift < k.div_ceil(block)); stores write
        // whole·RT ≤ RT·units elements of `tile`.
        unsafe {
            expand_tile_avx512(kernel, round, &src, whole, tile.as_mut_ptr())
        }
        for u in whole..span {
            for i in 0..RT {
                let r = t * RT + i;
                tile[at::<true>(i, u, span)] = if r >= rows || u >= units {
                    0
                } else if kernel == Kernel::F32 {
                    let v = if u < k { weight_at(w, r0 + r, u) } else { 0.0 };
                    if round { crate::simd::bf16_round(v).to_bits() } else { v.to_bits() }
                } else {
                    let half = |c: usize| if c < k { bf16_at(w, r0 + r, c) as u32 } else { 0 };
                    half(2 * u) | half(2 * u + 1) << 16
                };
            }
        }
    }
    true
}

/// Element (r, c) of `w` as the bf16 bits [`expand_row_bf16`] gives it.
fn bf16_at(w: &Linear, r: usize, c: usize) -> u16 {
    let k = w.shape().1;
    if let Some(b) = bf16_row_bytes(w, r, k) {
        return u16::from_le_bytes([b[2 * c], b[2 * c + 1]]);
    }
    let mut out = [0u16];
    crate::simd::f32_to_bf16(&[weight_at(w, r, c)], &mut out);
    out[0]
}

/// Units (f32 values or bf16 pairs) per k block of the tile-major layout: one 512-bit vector.
const KB: usize = 16;

/// A tile-major tile row's length for `units` units: whole k blocks.
fn tm_units(units: usize) -> usize {
    units.div_ceil(KB) * KB
}

/// Index of unit (r, c) in a tile's RT rows: tile-major (`TM`, [kp / KB][RT][KB]: a k step's RT
/// broadcasts come from RT lines that the next KB - 1 steps reuse) or row-major ([RT][kp]).
#[inline(always)]
fn at<const TM: bool>(r: usize, c: usize, kp: usize) -> usize {
    if TM {
        (c / KB) * (RT * KB) + r * KB + c % KB
    } else {
        r * kp + c
    }
}

/// One f32 tile: dst[r][t] = w[r] · x[t] for the RT rows of `w` (layout `TM`, see [`at`]) and the
/// NT tokens of `panel` ([kp][NT]); prefetches `ahead` (one 64-byte line per k step, as far as kp reaches).
fn tile_f32<const TM: bool>(kernel: Kernel, panel: &[f32], w: &[f32], kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
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
fn tile_bf16<const TM: bool>(panel: &[u32], w: &[u16], kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
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
unsafe fn prefetch_line(ahead: &[u8], i: usize) {
    if i * 64 < ahead.len() {
        _mm_prefetch(ahead.as_ptr().add(i * 64) as *const i8, _MM_HINT_T1);
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile_f32_avx512<const TM: bool>(panel: *const f32, w: *const f32, kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
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

/// 16 f32 of a row from column `c0` (exact: as `expand_row_f32` / `simd::fp8_row_to_f32`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn row_f32x16(s: RowSrc, c0: usize) -> __m512 {
    match s {
        RowSrc::Zero => _mm512_setzero_ps(),
        RowSrc::F32(b) => _mm512_loadu_ps(b.as_ptr().add(4 * c0) as *const f32),
        RowSrc::Bf16(b) => crate::simd::load16(b.as_ptr().add(2 * c0), crate::simd::Half::Bf16),
        RowSrc::F16(b) => crate::simd::load16(b.as_ptr().add(2 * c0), crate::simd::Half::F16),
        // (value / 256) · (scale · 256): one rounding, as fp8_row_to_f32
        RowSrc::Fp8(codes, scales, shift) => _mm512_mul_ps(crate::simd::load_e4m3(codes.as_ptr().add(c0)), crate::simd::scale16(scales, c0 >> shift)),
    }
}

/// 16 bf16 pairs of a row from column `c0` (32 columns), as `expand_row_bf16`: bf16 bits as
/// stored, anything else expanded exactly and rounded to nearest even (`vcvtneps2bf16`, as
/// `simd::f32_to_bf16`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn row_pairs16(s: RowSrc, c0: usize) -> __m512i {
    match s {
        RowSrc::Zero => _mm512_setzero_si512(),
        RowSrc::Bf16(b) => _mm512_loadu_si512(b.as_ptr().add(2 * c0) as *const __m512i),
        s => {
            let lo: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(row_f32x16(s, c0)));
            let hi: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(row_f32x16(s, c0 + 16)));
            _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
        }
    }
}

/// Units 0..whole (f32 values, rounded to bf16 values under `round`, or bf16 pairs for
/// `Kernel::Bf16`; whole a multiple of KB) of a tile's RT rows into `dst` tile-major ([`at`]):
/// each row's KB units are one 512-bit vector, loaded, converted and stored whole.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn expand_tile_avx512(kernel: Kernel, round: bool, src: &[RowSrc; RT], whole: usize, dst: *mut u32) {
    // row by row: one stream of codes (and scales) at a time, which the hardware prefetcher
    // follows; the 12 rows side by side were 2x slower (12 streams of each)
    for (i, s) in src.iter().enumerate() {
        let mut u = 0;
        while u < whole {
            // block u / KB starts at (u / KB)·RT·KB = u·RT
            let v = match kernel {
                Kernel::F32 if round => _mm512_castps_si512(crate::simd::bf16_round512::<true>(row_f32x16(*s, u))),
                Kernel::F32 => _mm512_castps_si512(row_f32x16(*s, u)),
                _ => row_pairs16(*s, 2 * u),
            };
            _mm512_storeu_si512(dst.add(u * RT + i * KB) as *mut __m512i, v);
            u += KB;
        }
    }
}

/// [`tile_f32_avx512`] for AVX2 (row-major `w`): the 12 × 32 tile as four 6-row × 16-token
/// blocks, so each block's 12 accumulators, 2 panel vectors and a broadcast fit the 16 ymm
/// registers (the whole tile would spill); each block re-reads its rows from cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32_avx2(panel: *const f32, w: *const f32, kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
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
unsafe fn tile_bf16_avx512<const TM: bool>(panel: *const u32, w: *const u16, kp: usize, ahead: &[u8], dst: &mut [[f32; NT]; RT]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::quant::fp8::Blocking;
    use crate::tensor::{DType, Storage, TensorView};
    use crate::weights::WeightFormat;

    fn values(len: usize, salt: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + salt * 104729) % 1013) as f32 - 506.0) / 700.0).collect()
    }

    fn view(name: &str, dtype: DType, shape: Vec<usize>, v: &[f32]) -> TensorView {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => v.iter().flat_map(|f| f.to_le_bytes()).collect(),
            DType::F16 => v.iter().flat_map(|&f| half::f16::from_f32(f).to_le_bytes()).collect(),
            DType::BF16 => v.iter().flat_map(|&f| half::bf16::from_f32(f).to_le_bytes()).collect(),
        };
        let len = bytes.len();
        TensorView::new(name.into(), dtype, shape, std::sync::Arc::new(Storage::Heap(bytes)), 0, len)
    }

    /// Every linear kind the model holds, for an (n, k) weight split into two fused parts.
    fn linears(n: usize, k: usize) -> Result<Vec<(String, Linear)>> {
        let (n1, n2) = (n / 2, n - n / 2);
        let (a, b) = (values(n1 * k, 1), values(n2 * k, 2));
        let mut out = Vec::new();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let (pa, pb) = (view("a", dtype, vec![n1, k], &a), view("b", dtype, vec![n2, k], &b));
            let parts: Vec<&TensorView> = if n1 == 0 { vec![&pb] } else { vec![&pa, &pb] };
            out.push((format!("native {dtype:?}"), Linear::fuse(&parts, WeightFormat::Native)?));
            if dtype == DType::F32 {
                out.push(("bf16".into(), Linear::fuse(&parts, WeightFormat::Bf16)?));
                for b in [Blocking::DEFAULT, Blocking::new(32)?, Blocking::PerChannel] {
                    out.push((format!("fp8 {b:?}"), Linear::fuse(&parts, WeightFormat::Fp8(b))?));
                }
            }
        }
        Ok(out)
    }

    /// Each kernel against the f64 twin of its numerics on ragged shapes (m, n, k not multiples
    /// of the tiles), every weight format: tolerance 1e-5 of Σ|w·x| (summation order only; the
    /// bf16 kernel against "round both factors to bf16, sum the products").
    #[test]
    fn every_kernel_matches_the_reference_on_ragged_shapes() -> Result<()> {
        let kernels: Vec<(Kernel, Activations)> =
            [(Kernel::Portable, Activations::F32), (Kernel::Avx2, Activations::F32), (Kernel::F32, Activations::F32), (Kernel::Bf16, Activations::Bf16)]
                .into_iter()
                .filter(|(k, _)| (*k != Kernel::F32 || crate::simd::avx512()) && (*k != Kernel::Avx2 || crate::simd::avx2()))
            .collect();
        let mut buf = GemmBuf::default();
        // m = 130: 5 token panels
        for (m, n, k) in [(1, 1, 16), (3, 5, 48), (4, 16, 64), (5, 17, 70), (9, 33, 256), (17, 40, 100), (130, 29, 70)] {
            let x = values(m * k, 3);
            for (name, w) in linears(n, k)? {
                for &(kernel, act) in &kernels {
                    let want = linear_batch_ref(&w, &x, m, act);
                    let mut got = vec![f32::NAN; m * n];
                    linear_batch_with(kernel, &w, &x, m, &mut got, &mut buf);
                    for t in 0..m {
                        for r in 0..n {
                            let mag: f64 = (0..k).map(|c| (weight_at(&w, r, c) as f64 * x[t * k + c] as f64).abs()).sum();
                            let (g, e) = (got[t * n + r], want[t * n + r]);
                            assert!(((g - e).abs() as f64) <= 1e-5 * mag + 1e-30, "{name} {kernel:?} m{m} n{n} k{k} [{t},{r}]: {g} vs {e}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The fused tile-major expansion is bit-identical to the row expansion it replaces
    /// (`expand_row_f32` / `expand_row_bf16`, read through `at::<true>`), zero padding included:
    /// every format, bands with ragged rows, k with and without a 16/32 tail.
    #[test]
    fn fused_tile_major_expansion_matches_the_row_expansion() -> Result<()> {
        for (n, k) in [(1usize, 16usize), (12, 32), (29, 70), (30, 96), (50, 130), (13, 2)] {
            let kp = k.div_ceil(K_ALIGN) * K_ALIGN;
            for (name, w) in linears(n, k)? {
                for (kernel, round) in [(Kernel::F32, false), (Kernel::F32, true), (Kernel::Bf16, false)] {
                    for (r0, rows) in [(0, n), (n / 3, n - n / 3)] {
                        let rows_pad = rows.div_ceil(RT) * RT;
                        let units = if kernel == Kernel::F32 { kp } else { kp / 2 };
                        let span = tm_units(units);
                        let mut got = vec![0xDEAD_BEEFu32; rows_pad * span];
                        if !expand_tiled(kernel, round, &w, r0, rows, k, kp, &mut got) {
                            // only where the CPU lacks the kernel's instructions
                            let has = if kernel == Kernel::F32 { crate::simd::avx512() } else { crate::simd::avx512_bf16() };
                            assert!(!has, "{name} {kernel:?} n{n} k{k}: fused expansion refused");
                            continue;
                        }
                        for r in 0..rows_pad {
                            let (mut f, mut b) = (vec![0f32; kp], vec![0u16; kp]);
                            if r < rows {
                                expand_row_f32(&w, r0 + r, &mut f[..k]);
                                expand_row_bf16(&w, r0 + r, &mut b[..k]);
                            }
                            for u in 0..span {
                                let want = match u < units {
                                    false => 0,
                                    true if kernel == Kernel::F32 && round => crate::simd::bf16_round(f[u]).to_bits(),
                                    true if kernel == Kernel::F32 => f[u].to_bits(),
                                    true => b[2 * u] as u32 | (b[2 * u + 1] as u32) << 16,
                                };
                                let at = (r / RT) * RT * span + at::<true>(r % RT, u, span);
                                assert_eq!(got[at], want, "{name} {kernel:?} round {round} n{n} k{k} rows {r0}+{rows}: row {r} unit {u}");
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The decode GEMV (ops::linear, m = 1) makes the GEMM's products under both numerics:
    /// against the same twin, every format, odd k.
    #[test]
    fn decode_gemv_matches_the_reference_under_both_numerics() -> Result<()> {
        for (n, k) in [(5, 48), (33, 70), (40, 256), (8, 2048 + 16)] {
            let x = values(k, 4);
            for (name, w) in linears(n, k)? {
                for act in [Activations::F32, Activations::Bf16] {
                    let want = crate::ops::linear_ref(&w, &x, act);
                    let mut got = vec![f32::NAN; n];
                    crate::ops::linear(&w, &x, &mut got, act);
                    for r in 0..n {
                        let mag: f64 = (0..k).map(|c| (weight_at(&w, r, c) as f64 * x[c] as f64).abs()).sum();
                        assert!(((got[r] - want[r]).abs() as f64) <= 1e-5 * mag + 1e-30, "{name} {act:?} n{n} k{k} row {r}: {} vs {}", got[r], want[r]);
                    }
                }
            }
        }
        Ok(())
    }
}
