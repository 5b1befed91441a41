//! Weight formats of the model path: how a checkpoint's linears are held in memory.
//!
//! - `Native`: the checkpoint's own bf16/f16/f32 bytes, memory-mapped, no copy (HF parity path).
//! - `Bf16`: converted to bf16 once at load (round to nearest even), 2 bytes per weight.
//! - `Fp8`: E4M3 weight-only with per-channel or K-blocked scales (the default, block 16):
//!   ~1.06 bytes per weight at block 16, half of bf16's traffic per decode step.
//!
//! Linears that read the same input are fused at load: Q, K and V into one [q+2kv, hidden]
//! weight, gate and up into one [2·inter, hidden] weight (gate rows first), so a decode step
//! walks one weight per input vector. `Native` cannot concatenate without copying, so it keeps
//! the parts and walks them in order: same rows, same results.
use std::cell::RefCell;

use half::bf16;

use crate::error::{Error, Result};
use crate::quant::fp8::{e4m3_decode_arith, Blocking, PackedFp8};
use crate::tensor::{DType, TensorView};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    Native,
    Bf16,
    Fp8(Blocking),
}

impl Default for WeightFormat {
    fn default() -> Self {
        WeightFormat::Fp8(Blocking::DEFAULT)
    }
}

/// What a linear multiplies on the CPU (the `activations` load option).
/// - `F32` (default): the input stays f32 and the weights exact (fp8: code · scale, one
///   rounding): `native` keeps HF parity, and the prompt pass (GEMM) and the decode step (GEMV)
///   make the same products, summed in other orders.
/// - `Bf16`: every linear rounds its input and its weights to bf16 (nearest even; exact for
///   bf16 weights, bf16(code · scale) for fp8) and sums the products in f32, the arithmetic of
///   `vdpbf16ps` (and of llama.cpp's BF16 path): ~2× the prompt-pass rate and a third of the
///   bf16 decode instructions. Each rounding is ≤ 2^-9 relative: logits move and greedy tokens
///   can leave HF's at a near-tie. Prefill and decode still make the same products.
///
/// Attention, norms, RoPE and the KV cache stay f32 either way; the GPU path has its own kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    #[default]
    F32,
    Bf16,
}

/// A [n, k] linear weight (HF layout [out, in]) in one of the formats.
pub enum Linear {
    /// Row blocks of the fused weight, in order, each a zero-copy view.
    Native(Vec<TensorView>),
    /// (n, k) bf16 bits
    Bf16 { n: usize, k: usize, data: Vec<u16> },
    Fp8(PackedFp8),
}

impl Linear {
    /// Fuses `parts` (each [n_i, k], stacked along rows) into one linear of `format`.
    pub fn fuse(parts: &[&TensorView], format: WeightFormat) -> Result<Self> {
        let k = parts.first().map(|p| p.shape[1]).ok_or_else(|| Error::Internal("empty linear".into()))?;
        if let Some(p) = parts.iter().find(|p| p.shape.len() != 2 || p.shape[1] != k) {
            return Err(Error::ShapeMismatch { name: p.name.clone(), expected: vec![p.shape[0], k], got: p.shape.clone() });
        }
        let n: usize = parts.iter().map(|p| p.shape[0]).sum();
        Ok(match format {
            WeightFormat::Native => Linear::Native(parts.iter().map(|p| (*p).clone()).collect()),
            // copied even from a BF16 checkpoint: decode from the mapped file's pages measured
            // 15-20 % slower than from our own memory (bf16-activation decode, TinyLlama GGUF,
            // 3 alternating pairs on the 2-core VM), though the views loaded in 0.5 s vs 3-10 s
            WeightFormat::Bf16 => {
                let mut data = Vec::with_capacity(n * k);
                for p in parts {
                    extend_bf16(&mut data, p);
                }
                Linear::Bf16 { n, k, data }
            }
            // row by row from the parts: no fused n × k f32 copy (its page faults were a large
            // part of a GGUF load)
            WeightFormat::Fp8(blocking) => Linear::Fp8(PackedFp8::prepack_rows(n, k, blocking, |r, row| {
                if let Some((p, pr)) = crate::weights::native_row(parts, r) {
                    p.read_f32_into(pr * k, row);
                }
            })?),
        })
    }

    /// (n, k): output rows, input width.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::Native(parts) => (parts.iter().map(|p| p.shape[0]).sum(), parts[0].shape[1]),
            Linear::Bf16 { n, k, .. } => (*n, *k),
            Linear::Fp8(p) => (p.n, p.k),
        }
    }

    /// Bytes a matvec reads.
    pub fn nbytes(&self) -> usize {
        match self {
            Linear::Native(parts) => parts.iter().map(|p| p.bytes().len()).sum(),
            Linear::Bf16 { data, .. } => data.len() * 2,
            Linear::Fp8(p) => p.nbytes(),
        }
    }
}

/// Appends `t` as bf16 bits (bf16 copied as is; f16/f32 rounded to nearest even).
fn extend_bf16(dst: &mut Vec<u16>, t: &TensorView) {
    match (t.dtype, t.f32_slice()) {
        (DType::BF16, _) => dst.extend(t.bytes().chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]))),
        (_, Some(v)) => dst.extend(v.iter().map(|&v| bf16::from_f32(v).to_bits())),
        _ => dst.extend(t.to_f32_vec().into_iter().map(|v| bf16::from_f32(v).to_bits())),
    }
}

/// The token embedding table: native view, or bf16 rows for the packed formats.
pub enum Embedding {
    Native(TensorView),
    /// (vocab, hidden) bf16 bits
    Bf16 { hidden: usize, data: Vec<u16> },
}

impl Embedding {
    pub fn new(t: &TensorView, format: WeightFormat) -> Self {
        match format {
            WeightFormat::Native => Embedding::Native(t.clone()),
            _ => {
                let mut data = Vec::with_capacity(t.numel());
                extend_bf16(&mut data, t);
                Embedding::Bf16 { hidden: t.shape[1], data }
            }
        }
    }

    /// Row `id` into `out` (hidden). The caller checks `id` < vocab.
    pub fn row(&self, id: usize, out: &mut [f32]) {
        match self {
            Embedding::Native(t) => t.read_f32_into(id * out.len(), out),
            Embedding::Bf16 { hidden, data } => {
                for (o, &b) in out.iter_mut().zip(&data[id * hidden..(id + 1) * hidden]) {
                    *o = bf16::from_bits(b).to_f32();
                }
            }
        }
    }
}

// ---- row access: one weight row as the kernels read it (GEMV fallbacks, GEMM band expansion)

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
            if crate::backend::cpu::simd::fp8_row_to_f32(codes, scales, p.block, dst) {
                return;
            }
            #[cfg(target_arch = "x86_64")]
            if crate::backend::cpu::simd::avx2() {
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
        crate::backend::cpu::simd::f32_to_bf16(&row, dst);
    });
}

/// Row `r` (k weights) of a linear whose weights are bf16 already — the Bf16 format or a
/// native BF16 part — as its 2k little-endian bytes; `None` for other weights.
pub(crate) fn bf16_row_bytes(w: &Linear, r: usize, k: usize) -> Option<&[u8]> {
    match w {
        Linear::Bf16 { data, .. } => crate::backend::cpu::simd::u16_le_bytes(&data[r * k..(r + 1) * k]),
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

thread_local! {
    /// One row expanded to f32 on its way to bf16 (k).
    static ROW_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::linear;

    fn tensor(name: &str, n: usize, k: usize, seed: usize) -> TensorView {
        let data: Vec<f32> = (0..n * k).map(|i| (((i + seed) * 7919 % 541) as f32 - 270.0) / 300.0).collect();
        TensorView::from_f32(name, vec![n, k], &data)
    }

    /// Each format's fused matvec against the reference matvec of the separate parts.
    #[test]
    fn fused_linears_match_their_parts_in_every_format() -> Result<()> {
        let k = 48;
        let parts = [tensor("q", 32, k, 1), tensor("k", 16, k, 2), tensor("v", 16, k, 3)];
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.21).cos()).collect();
        let mut want = Vec::new();
        for p in &parts {
            let mut o = vec![0.0; p.shape[0]];
            linear::matvec_ref(p, &x, &mut o);
            want.extend(o);
        }
        let refs: Vec<&TensorView> = parts.iter().collect();
        for (format, tol) in [
            (WeightFormat::Native, 1e-5),
            (WeightFormat::Bf16, 2e-2),
            (WeightFormat::Fp8(crate::quant::fp8::Blocking::DEFAULT), 0.15),
        ] {
            let lin = Linear::fuse(&refs, format)?;
            assert_eq!(lin.shape(), (64, k));
            let mut got = vec![0.0; 64];
            linear::linear(&lin, &x, &mut got, Activations::F32);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{format:?} row {i}: {a} vs {b}");
            }
        }
        // fp8 exactly against its own dequantized weights (tight)
        if let Linear::Fp8(p) = Linear::fuse(&refs, WeightFormat::default())? {
            let deq = TensorView::from_f32("deq", vec![64, k], &p.dequantize());
            let (mut a, mut b) = (vec![0.0; 64], vec![0.0; 64]);
            linear::linear(&Linear::Fp8(p), &x, &mut a, Activations::F32);
            linear::matvec_ref(&deq, &x, &mut b);
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()));
            }
        }
        Ok(())
    }

    #[test]
    fn fuse_rejects_mismatched_widths() {
        let (a, b) = (tensor("a", 4, 16, 0), tensor("b", 4, 8, 0));
        assert!(matches!(Linear::fuse(&[&a, &b], WeightFormat::Native), Err(Error::ShapeMismatch { .. })));
    }
}
