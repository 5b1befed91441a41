//! Weight formats: how a checkpoint's linears are held in memory, one module per format.
//!
//! - [`native`]: the checkpoint's own bf16/f16/f32 bytes, memory-mapped, no copy (HF parity path).
//! - [`bf16`]: converted to bf16 once at load (round to nearest even), 2 bytes per weight.
//! - [`fp8`]: E4M3 weight-only with per-channel or K-blocked scales (the default, block 16):
//!   ~1.06 bytes per weight at block 16, half of bf16's traffic per decode step.
//!
//! Each format is a type implementing [`Format`] (format.rs, the seam): packing from the
//! checkpoint's row parts, row access and expansion, its CPU matvec (f32 activations) and row
//! dot (bf16 activations), its GEMM tile expansion, and its device layout and kernel kind
//! (tile.rs holds the GEMM's tile layout every expansion writes). The `registry!` below names
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
use crate::error::{Error, Result};
use crate::tensor::TensorView;

pub mod bf16;
pub mod format;
pub mod fp8;
pub mod native;
pub mod tile;

pub use format::{bf16_at, expand_row_bf16, Activations, DeviceLayout, DeviceTarget, Format, WeightKind};

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
            return Err(Error::ShapeMismatch { name: p.name.clone(), expected: vec![p.shape.first().copied().unwrap_or(0), k], got: p.shape.clone() });
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

#[cfg(test)]
mod tests;
