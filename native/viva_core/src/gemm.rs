//! Batched linears for the prompt pass: `out (m × n) = x (m × k) · Wᵀ` for a [`Linear`] in any
//! weight format, one GEMM instead of m GEMVs.
//!
//! Shape of the work (outer-product form, so no horizontal sums): the activations are packed
//! once per GEMM into panels of `NT` tokens, k-major (`[k][NT]` f32, or `[k/2][NT]` bf16 pairs),
//! so one 512-bit load is 16 tokens' values at one k. W's rows are split into bands of
//! `BAND_ROWS` (one rayon task each); a task expands its rows once into a thread-local f32 buffer
//! (a copy/convert row by row; rounded to bf16 in one more pass for the bf16 kernel) and
//! reorders it tile-major ([`tile_major`]: each 12-row tile k-major), then for every
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
//!   same products (ops::linear). Without AVX512_BF16 the f32 tiles run on the rounded values.
//!
//! `linear_batch_ref` is the plain twin (f64 sums over `weight_at`); tests compare every kernel.
use std::cell::RefCell;

use rayon::prelude::*;

use crate::quant::fp8::e4m3_decode;
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
    /// One band of expanded weight rows per worker: (BAND_ROWS, kp) row-major, then the same
    /// values tile-major ([`tile_major`]) for the tile kernels.
    static BAND_F32: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    static BAND_BF16: RefCell<(Vec<u16>, Vec<u16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// From this many token panels on, a band is reordered tile-major before its tiles run: the
/// reorder costs about one panel's tiles, and each panel's tiles then run ~1.5× faster.
const TILE_MAJOR_PANELS: usize = 4;

/// A band's rows (rows_pad × kp, row-major) → tile-major: RT-row tile t holds [kp / G][RT][G]
/// (G consecutive k of a row together: 1 for f32, a bf16 pair for 2), so a tile's k step
/// broadcasts from one contiguous run of RT·G values. Read from RT rows kp apart instead, the
/// f32 tile ran at 64 % of the FMA peak, tile-major at 98 % (one core, operands in cache).
fn tile_major<T: Copy + Default, const G: usize>(band: &[T], tiled: &mut Vec<T>, kp: usize) {
    tiled.clear();
    tiled.resize(band.len(), T::default());
    for (src, dst) in band.chunks_exact(RT * kp).zip(tiled.chunks_exact_mut(RT * kp)) {
        for (q, d) in dst.chunks_exact_mut(RT * G).enumerate() {
            for r in 0..RT {
                d[r * G..(r + 1) * G].copy_from_slice(&src[r * kp + q * G..r * kp + (q + 1) * G]);
            }
        }
    }
}

/// `out (m × n) = x (m × k) · Wᵀ` with the kernel `kernel_for(act)`.
pub fn linear_batch(w: &Linear, x: &[f32], m: usize, out: &mut [f32], buf: &mut GemmBuf, act: Activations) {
    linear_batch_with(kernel_for(act), w, x, m, out, buf)
}

/// [`linear_batch`] with a chosen kernel (tests run each one). `F32` needs AVX-512F (else the
/// portable tiles run); `Bf16` without AVX512_BF16 rounds the operands and runs the f32 tiles.
pub fn linear_batch_with(kernel: Kernel, w: &Linear, x: &[f32], m: usize, out: &mut [f32], buf: &mut GemmBuf) {
    let (n, k) = w.shape();
    assert!(x.len() == m * k && out.len() == m * n, "linear_batch: x {} / out {} for m {m}, n {n}, k {k}", x.len(), out.len());
    // `round`: bf16 numerics on the f32 tiles
    let f32_tiles = if crate::simd::avx512() { Kernel::F32 } else { Kernel::Portable };
    let (kernel, round) = match kernel {
        Kernel::Bf16 if !crate::simd::avx512_bf16() => (f32_tiles, true),
        Kernel::F32 => (f32_tiles, false),
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
        let tm = m_pad / NT >= TILE_MAJOR_PANELS;
        let share = |rt: usize, p: usize| {
            let (i, lines) = ((rt / RT) * (m_pad / NT) + p, next.len().div_ceil(64));
            next.get(i * lines / tiles * 64..((i + 1) * lines / tiles * 64).min(next.len())).unwrap_or(&[])
        };
        if kernel == Kernel::Bf16 {
            // the band's rows as bf16 (bf16 weights copied, the others rounded row by row)
            BAND_BF16.with(|bb| {
                let (wb, tiled) = &mut *bb.borrow_mut();
                wb.clear();
                wb.resize(rows_pad * kp, 0);
                for (i, dst) in wb.chunks_exact_mut(kp).take(rows).enumerate() {
                    expand_row_bf16(w, r0 + i, &mut dst[..k]);
                }
                if tm {
                    tile_major::<u16, 2>(wb, tiled, kp);
                }
                let wb = if tm { &tiled[..] } else { &wb[..] };
                let tile = |rt: usize, p: usize, dst: &mut [[f32; NT]; RT]| {
                    let (x, wt) = (&pb[p * (kp / 2) * NT..(p + 1) * (kp / 2) * NT], &wb[rt * kp..(rt + RT) * kp]);
                    if tm {
                        tile_bf16::<true>(x, wt, kp, share(rt, p), dst)
                    } else {
                        tile_bf16::<false>(x, wt, kp, share(rt, p), dst)
                    }
                };
                for_tiles(m_pad, rows, tile, out_t);
            });
            return;
        }
        // the band's rows as exact f32 (rounded to bf16 values under `round`)
        BAND_F32.with(|bf| {
            let (wf, tiled) = &mut *bf.borrow_mut();
            wf.clear();
            wf.resize(rows_pad * kp, 0.0);
            for (i, dst) in wf.chunks_exact_mut(kp).take(rows).enumerate() {
                expand_row_f32(w, r0 + i, &mut dst[..k]);
                if round {
                    dst[..k].iter_mut().for_each(|v| *v = crate::simd::bf16_round(*v));
                }
            }
            if tm {
                tile_major::<f32, 1>(wf, tiled, kp);
            }
            let wf = if tm { &tiled[..] } else { &wf[..] };
            let tile = |rt: usize, p: usize, dst: &mut [[f32; NT]; RT]| {
                let (x, wt) = (&pf[p * kp * NT..(p + 1) * kp * NT], &wf[rt * kp..(rt + RT) * kp]);
                if tm {
                    tile_f32::<true>(kernel, x, wt, kp, share(rt, p), dst)
                } else {
                    tile_f32::<false>(kernel, x, wt, kp, share(rt, p), dst)
                }
            };
            for_tiles(m_pad, rows, tile, out_t);
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
            for (c, d) in dst.iter_mut().enumerate() {
                *d = e4m3_decode(codes[c]) * scales[c / p.block];
            }
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
fn native_row(parts: &[TensorView], r: usize) -> Option<(&TensorView, usize)> {
    let mut r = r;
    for p in parts {
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

/// Index of weight (r, c) in a tile's RT rows: tile-major (`TM`, [kp][RT]) or row-major ([RT][kp]).
#[inline(always)]
fn at<const TM: bool>(r: usize, c: usize, kp: usize) -> usize {
    if TM {
        c * RT + r
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
        let kernels: Vec<(Kernel, Activations)> = [(Kernel::Portable, Activations::F32), (Kernel::F32, Activations::F32), (Kernel::Bf16, Activations::Bf16)]
            .into_iter()
            .filter(|(k, _)| *k != Kernel::F32 || crate::simd::avx512())
            .collect();
        let mut buf = GemmBuf::default();
        // m = 130: 5 token panels, the tile-major band layout (TILE_MAJOR_PANELS)
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
