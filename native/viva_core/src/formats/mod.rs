//! Weight formats: how a checkpoint's linears are held in memory, one module per format.
//!
//! - [`native`]: the checkpoint's own bf16/f16/f32 bytes, memory-mapped, no copy (HF parity path).
//! - [`bf16`]: converted to bf16 once at load (round to nearest even), 2 bytes per weight.
//! - [`fp8`]: E4M3 weight-only with per-channel or K-blocked scales (the default, block 16):
//!   ~1.06 bytes per weight at block 16, half of bf16's traffic per decode step.
//!
//! Each format is a type implementing [`Format`]: packing from the checkpoint's row parts, row
//! access and expansion, its CPU matvec (f32 activations) and row dot (bf16 activations), its
//! GEMM tile expansion, and its device layout and kernel kind. The [`registry!`] below names
//! them: it declares [`Linear`] (one variant per format, holding that format's value),
//! [`WeightFormat`] (the load option, with the format's parameters) and `dispatch!`, the one
//! `match` that turns a `Linear` into its format's concrete type. Callers dispatch once per
//! matvec, GEMM band or tile and then run the format's code monomorphised: no per-row
//! virtual call. Adding a format (a GGUF Q4_K, 2:4 sparse): its module here, one registry
//! line, and its kernel family in kernels/ with a new [`WeightKind`].
//!
//! Linears that read the same input are fused at load: Q, K and V into one [q+2kv, hidden]
//! weight, gate and up into one [2·inter, hidden] weight (gate rows first), so a decode step
//! walks one weight per input vector. `native` cannot concatenate without copying, so it keeps
//! the parts and walks them in order: same rows, same results.
use std::cell::RefCell;

use crate::error::{Error, Result};
use crate::tensor::TensorView;

pub mod bf16;
pub mod fp8;
pub mod native;
pub mod tile;

use tile::{TileMode, RT};

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
    fn matvec_f32(&self, x: &[f32], out: &mut [f32]);
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

/// Declares the registered formats: `Variant(Params) = "name" => Type;` per format.
macro_rules! registry {
    ($d:tt $($(#[$doc:meta])* $variant:ident $(($param:ty))? = $name:literal => $ty:ty;)*) => {
        /// A [n, k] linear weight (HF layout [out, in]) in one of the registered formats.
        pub enum Linear {
            $($(#[$doc])* $variant($ty),)*
        }

        /// The load option: which registered format the linears are held in, with its parameters.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum WeightFormat {
            $($(#[$doc])* $variant $(($param))?,)*
        }

        impl WeightFormat {
            /// Every registered format's name, in registry order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The format's registry name.
            pub fn name(self) -> &'static str {
                match self {
                    $(WeightFormat::$variant { .. } => $name,)*
                }
            }

            /// The format registered as `name`, with its default parameters.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(WeightFormat::$variant $((<$param>::default()))?),)*
                    _ => None,
                }
            }

            /// Whether a load in this format keeps the embedding table in the checkpoint's dtype.
            pub fn embeds_as_stored(self) -> bool {
                match self {
                    $(WeightFormat::$variant { .. } => <$ty as Format>::EMBED_AS_STORED,)*
                }
            }

            /// The device form of a checkpoint tensor of kind `src` (k wide) in this format.
            pub fn device_target(self, src: WeightKind, k: usize) -> Result<DeviceTarget> {
                match self {
                    $(registry!(@pat $variant p $($param)?) => <$ty as Format>::device_target(registry!(@arg p $($param)?), src, k),)*
                }
            }

            fn pack(self, parts: &[&TensorView], n: usize, k: usize) -> Result<Linear> {
                Ok(match self {
                    $(registry!(@pat $variant p $($param)?) => Linear::$variant(<$ty as Format>::pack(parts, n, k, registry!(@arg p $($param)?))?),)*
                })
            }
        }

        /// `dispatch!(linear, f => body)`: `body` with `f` bound to the linear's format value,
        /// compiled once per format.
        macro_rules! dispatch {
            ($d w:expr, $d f:ident => $d body:expr) => {
                match $d w {
                    $($crate::formats::Linear::$variant($d f) => $d body,)*
                }
            };
        }
        pub(crate) use dispatch;
    };
    (@pat $variant:ident $p:ident) => { WeightFormat::$variant };
    (@pat $variant:ident $p:ident $param:ty) => { WeightFormat::$variant($p) };
    (@arg $p:ident) => { () };
    (@arg $p:ident $param:ty) => { $p };
}

registry! {$
    /// The checkpoint's own bf16/f16/f32 tensors, zero-copy.
    Native = "native" => native::NativeLinear;
    /// bf16, rounded once at load.
    Bf16 = "bf16" => bf16::Bf16Linear;
    /// FP8 E4M3 with per-channel or K-blocked scales.
    Fp8(fp8::Blocking) = "fp8" => fp8::PackedFp8;
}

impl Default for WeightFormat {
    fn default() -> Self {
        WeightFormat::Fp8(fp8::Blocking::DEFAULT)
    }
}

impl Linear {
    /// Fuses `parts` (each [n_i, k], stacked along rows) into one linear of `format`.
    pub fn fuse(parts: &[&TensorView], format: WeightFormat) -> Result<Self> {
        let k = parts.first().map(|p| p.shape.get(1).copied().unwrap_or(0)).ok_or_else(|| Error::Internal("empty linear".into()))?;
        if let Some(p) = parts.iter().find(|p| p.shape.len() != 2 || p.shape[1] != k) {
            return Err(Error::ShapeMismatch { name: p.name.clone(), expected: vec![p.shape[0], k], got: p.shape.clone() });
        }
        let n: usize = parts.iter().map(|p| p.shape[0]).sum();
        format.pack(parts, n, k)
    }

    /// (n, k): output rows, input width.
    pub fn shape(&self) -> (usize, usize) {
        dispatch!(self, f => f.shape())
    }

    /// Bytes a matvec reads.
    pub fn nbytes(&self) -> usize {
        dispatch!(self, f => f.nbytes())
    }

    /// Element (r, c) as f32, the way `expand_row_f32` reads it.
    pub fn weight_at(&self, r: usize, c: usize) -> f32 {
        dispatch!(self, f => f.weight_at(r, c))
    }

    /// Row `r` as exact f32 (k = dst.len()).
    pub fn expand_row_f32(&self, r: usize, dst: &mut [f32]) {
        dispatch!(self, f => f.expand_row_f32(r, dst))
    }

    /// Row `r` rounded to bf16 bits (k = dst.len()), see [`expand_row_bf16`].
    pub fn expand_row_bf16(&self, r: usize, dst: &mut [u16]) {
        dispatch!(self, f => expand_row_bf16(f, r, dst))
    }

    /// What this linear puts on the device as it is.
    pub fn device_layout(&self) -> Result<DeviceLayout<'_>> {
        dispatch!(self, f => f.device_layout())
    }
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

#[cfg(test)]
mod tests;
