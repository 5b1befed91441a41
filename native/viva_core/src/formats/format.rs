//! The seam every weight format implements ([`Format`]), what the formats share (the kernel
//! kinds, the device layout, the activation numerics) and the format-generic row helpers.
//! Nothing here knows a particular format: formats/mod.rs registers them.
use std::cell::RefCell;

use super::tile::{TileMode, RT};
use crate::error::Result;
use crate::tensor::TensorView;

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

/// Weight element kinds, as the kernels number them (`WT_*` in kernels/params.cuh): the
/// kernel-side half of a format (each kind has its GEMV/embedding/pack kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    Fp8 = 0,
    Bf16 = 1,
    F16 = 2,
    F32 = 3,
}

impl WeightKind {
    pub fn suffix(self) -> &'static str {
        ["fp8", "bf16", "f16", "f32"][self as usize]
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        [1, 2, 2, 4][self as usize]
    }
}

/// What a linear in a format puts on the device (backend/cuda/weights.rs uploads it).
pub enum DeviceLayout<'a> {
    /// Row blocks of `kind` elements, k per row, in order (the device pads rows to 16 bytes).
    Dense { kind: WeightKind, blocks: Vec<std::borrow::Cow<'a, [u8]>> },
    /// Rows already padded to `row_stride` elements, with `bpr` f32 scales per row of `block`
    /// elements each.
    Scaled { kind: WeightKind, row_stride: usize, bpr: usize, block: usize, data: &'a [u8], scales: &'a [f32] },
}

/// The device form a load in some format makes from a checkpoint tensor of kind `src`:
/// `kind` == `src` keeps the bytes as they are, else the pack kernel of `kind` (kernels/quant.cu)
/// converts them, `block` elements per scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTarget {
    pub kind: WeightKind,
    pub block: usize,
}

/// One weight format: a [n, k] linear (HF layout [out, in]) as this format holds it.
pub trait Format: Sized + Send + Sync {
    /// The load option's parameters (fp8: its blocking; `()` for none).
    type Params: Copy + Default + std::fmt::Debug + PartialEq + Eq;
    /// One stored row as [`Format::expand_tile_avx512`] reads it.
    type Row<'a>: Copy
    where
        Self: 'a;
    /// Embedding tables of a load in this format stay in the checkpoint's dtype (else bf16).
    const EMBED_AS_STORED: bool = false;

    /// Packs `parts` (each [n_i, k], stacked along rows, n = Σ n_i; shapes checked).
    fn pack(parts: &[&TensorView], n: usize, k: usize, params: Self::Params) -> Result<Self>;
    /// (n, k): output rows, input width.
    fn shape(&self) -> (usize, usize);
    /// Bytes a matvec reads.
    fn nbytes(&self) -> usize;
    /// Element (r, c) as f32, the way `expand_row_f32` reads it, one at a time (the references).
    fn weight_at(&self, r: usize, c: usize) -> f32;
    /// Row `r` as exact f32 (k = dst.len() values).
    fn expand_row_f32(&self, r: usize, dst: &mut [f32]);
    /// Row `r`'s 2k little-endian bytes when its weights are bf16 already.
    fn bf16_row_bytes(&self, _r: usize) -> Option<&[u8]> {
        None
    }
    /// `out = W x` with f32 activations (the decode GEMV), rows split across the rayon pool.
    fn matvec_f32(&self, x: &[f32], out: &mut [f32]) {
        self.matvec_f32_multi(x, 1, out)
    }
    /// `matvec_f32` of `b` vectors at once (a batched decode step): xs (b, k), out (n, b), row r's
    /// b results together (`par_rows_multi`). Each result is bit for bit the one `matvec_f32`
    /// gives for that vector alone (the same row dot); the weights are read once for all b.
    fn matvec_f32_multi(&self, xs: &[f32], b: usize, out: &mut [f32]);
    /// Row `r` · x under `Activations::Bf16`, where a fast kernel takes it: `xb` x as bf16 bits,
    /// `xr` their values as f32 (empty where `vdpbf16ps` runs). `None`: the portable path.
    fn dot_bf16_act(&self, r: usize, xb: &[u16], xr: &[f32]) -> Option<f32> {
        if !xr.is_empty() {
            return None;
        }
        self.bf16_row_bytes(r).and_then(|row| crate::backend::cpu::simd::dot_bf16_bf16(row, xb))
    }
    /// The stored bytes of rows r0..r1 as far as they are contiguous (the GEMM's prefetch of
    /// the next band); empty when r0 ≥ r1.
    fn row_span(&self, r0: usize, r1: usize) -> &[u8];
    /// Row `r` for the tile expansion; `None` where its 16-wide loads do not apply.
    fn tile_row(&self, r: usize) -> Option<Self::Row<'_>>;
    /// Units 0..whole (a multiple of `tile::KB`) of a tile's RT rows (`None`: zeros) into `dst`,
    /// tile-major (`tile::at`), in `mode`'s element type.
    /// # Safety
    /// AVX-512F (and AVX512_BF16 for `TileMode::Bf16Pairs`) present; every row holds at least
    /// `whole` units; `dst` has room for whole·RT u32.
    #[cfg(target_arch = "x86_64")]
    unsafe fn expand_tile_avx512(rows: &[Option<Self::Row<'_>>; RT], mode: TileMode, whole: usize, dst: *mut u32);
    /// What this linear puts on the device as it is (the GPU tests' harness).
    fn device_layout(&self) -> Result<DeviceLayout<'_>>;
    /// The device form a load in this format makes from a checkpoint tensor of kind `src`, k wide.
    fn device_target(params: Self::Params, src: WeightKind, k: usize) -> Result<DeviceTarget>;
}

/// Row `r` of `w` rounded to bf16 bits (k = dst.len()): bf16 weights as they are, the others
/// expanded exactly (`expand_row_f32`) and rounded to nearest even (`simd::f32_to_bf16`).
pub fn expand_row_bf16<F: Format>(w: &F, r: usize, dst: &mut [u16]) {
    let k = dst.len();
    if let Some(bytes) = w.bf16_row_bytes(r) {
        dst.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(d, b)| *d = u16::from_le_bytes([b[0], b[1]]));
        return;
    }
    ROW_F32.with(|b| {
        // re-entered on this thread: a buffer of its own
        let (mut tls, mut own) = (b.try_borrow_mut(), Vec::new());
        let row = tls.as_deref_mut().unwrap_or(&mut own);
        row.resize(k, 0.0);
        w.expand_row_f32(r, row);
        crate::backend::cpu::simd::f32_to_bf16(row, dst);
    });
}

/// Element (r, c) of `w` as the bf16 bits [`expand_row_bf16`] gives it.
pub fn bf16_at<F: Format>(w: &F, r: usize, c: usize) -> u16 {
    if let Some(b) = w.bf16_row_bytes(r) {
        return u16::from_le_bytes([b[2 * c], b[2 * c + 1]]);
    }
    let mut out = [0u16];
    crate::backend::cpu::simd::f32_to_bf16(&[w.weight_at(r, c)], &mut out);
    out[0]
}

thread_local! {
    /// One row expanded to f32 on its way to bf16 (k).
    static ROW_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}
