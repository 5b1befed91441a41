//! One typed launch per kernel family (kernels/*.cu): each takes the family's parameter struct
//! (params.rs) and owns its grid mapping, so call sites never restate grids or argument order.
use std::sync::Arc;

use cudarc::driver::{sys, CudaFunction, CudaStream};

use super::errors::drv;
use super::kernels::{GemvMode, Split, SplitOp};
use super::params::*;
use super::Gpu;
use crate::error::Result;
use crate::formats::WeightKind;

/// Kernel limits (kernels/attention.cu: ATT_MAX_GROUP, ATT_MAX_HD, ATT_MAX_CHUNK, ATT_THREADS).
pub const ATT_MAX_GROUP: usize = 16;
pub const ATT_MAX_QS: usize = 16 * 256;
pub const ATT_MAX_CHUNK: usize = 64;
pub const ATT_MIN_CHUNK: usize = 16;
const ATT_THREADS: u32 = 256;
/// kernels/gemv.cu GEMV_THREADS.
const GEMV_THREADS: u32 = 256;
/// Threads of the one-block sampling kernels (kernels/sampling.cu).
const SAMPLING_THREADS: u32 = 1024;
/// Threads per block of the row-wise kernels (embedding, prefill, quant).
const ROW_THREADS: u32 = 256;

/// Launches `f` with `p` as its only argument on `stream`. On sm_90+ with programmatic
/// dependent launch: the kernel may start while the previous one finishes; every kernel waits
/// (griddepcontrol.wait) before reading what an earlier kernel wrote (kernels/common.cuh), so
/// results are the same.
fn launch<P: KernelParams>(stream: &Arc<CudaStream>, f: &CudaFunction, grid: (u32, u32, u32), block: u32, smem: u32, p: &P) -> Result<()> {
    let mut params = [p as *const P as *mut std::ffi::c_void];
    // SAFETY: an all-zero CUlaunchAttribute is a valid "ignored" attribute; we set id and value.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: grid.0,
        gridDimY: grid.1,
        gridDimZ: grid.2,
        blockDimX: block,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: smem,
        hStream: stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: u32::from(pdl_enabled(stream)),
    };
    stream.context().bind_to_thread().map_err(drv("bind context"))?;
    // SAFETY: `f` takes exactly one parameter, the params.cuh struct `P` mirrors (KernelParams),
    // by value; its device pointers are live allocations sized for the grid (each typed launch
    // below states the shapes); `params` points at `p`, which outlives the call (the driver
    // copies the value at launch).
    unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }
        .result()
        .map_err(drv("kernel launch"))
}

/// PDL needs sm_90+; VIVA_NO_PDL=1 turns it off (for comparisons).
fn pdl_enabled(stream: &CudaStream) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let cc = stream.context().attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0);
        cc >= 9 && !crate::tuning::get().no_pdl
    })
}

/// GEMV blocks per SM (VIVA_GEMV_BLOCKS_PER_SM overrides, for tuning runs).
fn gemv_blocks_per_sm() -> usize {
    crate::tuning::get().gemv_blocks_per_sm
}

/// One GEMV (kernels/gemv.cu) of `p.w` with `mode`'s epilogue: units (row pairs) split over
/// ~2 blocks per SM, 8 warps per block; sets `p.units` / `p.upb`. Shared memory holds x.
pub fn gemv(gpu: &Gpu, s: &Arc<CudaStream>, kind: WeightKind, mode: GemvMode, mut p: GemvParams) -> Result<()> {
    let n = p.w.n as usize;
    let units = match mode {
        GemvMode::Store | GemvMode::Resid => n.div_ceil(2),
        GemvMode::Swiglu | GemvMode::Qkv => n / 2,
    };
    let warps = (GEMV_THREADS / 32) as usize;
    let blocks = units.div_ceil(warps).min(gemv_blocks_per_sm() * gpu.sm_count).max(1);
    let upb = units.div_ceil(blocks).div_ceil(warps) * warps;
    let grid = units.div_ceil(upb) as u32;
    (p.units, p.upb) = (units as i32, upb as i32);
    let smem = (p.w.row_stride as u32) * 4;
    launch(s, gpu.k.gemv(kind, mode), (grid, 1, 1), GEMV_THREADS, smem, &p)
}

/// `rows` embedding rows of a `kind` table (kernels/embedding.cu): grid (ceil(hidden/256), rows).
pub fn embed(gpu: &Gpu, s: &Arc<CudaStream>, kind: WeightKind, rows: usize, p: &EmbedParams) -> Result<()> {
    launch(s, gpu.k.embed(kind), ((p.hidden as u32).div_ceil(ROW_THREADS), rows as u32, 1), ROW_THREADS, 0, p)
}

/// Flash-decoding attention of `rows` queries (kernels/attention.cu): grid (n_kv, max_splits, rows).
pub fn attention(gpu: &Gpu, s: &Arc<CudaStream>, rows: usize, p: &AttnParams) -> Result<()> {
    launch(s, &gpu.k.attn_decode, (p.n_kv as u32, p.max_splits as u32, rows as u32), ATT_THREADS, 0, p)
}

/// io->argmax = argmax of the logits (kernels/sampling.cu): one block.
pub fn argmax(gpu: &Gpu, s: &Arc<CudaStream>, p: &ArgmaxParams) -> Result<()> {
    launch(s, &gpu.k.argmax, (1, 1, 1), SAMPLING_THREADS, 0, p)
}

/// The k largest logits as candidates (kernels/sampling.cu): one block.
pub fn topk(gpu: &Gpu, s: &Arc<CudaStream>, p: &TopkParams) -> Result<()> {
    launch(s, &gpu.k.topk, (1, 1, 1), SAMPLING_THREADS, 0, p)
}

/// One of the prefill split kernels over `rows` rows (kernels/prefill.cu): grid rows.
pub fn split(gpu: &Gpu, s: &Arc<CudaStream>, op: SplitOp, sp: Split, rows: usize, p: &SplitParams) -> Result<()> {
    launch(s, gpu.k.split(op, sp), (rows as u32, 1, 1), ROW_THREADS, 0, p)
}

/// RoPE + KV append of `rows` prefill rows (kernels/prefill.cu): grid rows.
pub fn rope_rows(gpu: &Gpu, s: &Arc<CudaStream>, rows: usize, p: &RopeRowsParams) -> Result<()> {
    launch(s, &gpu.k.rope_qkv_rows, (rows as u32, 1, 1), ROW_THREADS, 0, p)
}

/// An fp8 weight → bf16 hi + lo (kernels/prefill.cu): grid (ceil(k/256), n).
pub fn dequant_fp8(gpu: &Gpu, s: &Arc<CudaStream>, p: &DequantParams) -> Result<()> {
    launch(s, &gpu.k.dequant_fp8_bf16, ((p.w.k as u32).div_ceil(ROW_THREADS), p.w.n as u32, 1), ROW_THREADS, 0, p)
}

/// A `src`-kind weight packed to fp8 (kernels/quant.cu): one warp per (row, scale block).
pub fn quant_fp8(gpu: &Gpu, s: &Arc<CudaStream>, src: WeightKind, p: &QuantParams) -> Result<()> {
    let warps = p.n as u32 * p.bpr as u32;
    launch(s, gpu.k.quant_fp8(src), (warps.div_ceil(ROW_THREADS / 32), 1, 1), ROW_THREADS, 0, p)
}

/// A `src`-kind weight rounded to bf16 rows (kernels/quant.cu): grid (ceil(k/256), n).
pub fn to_bf16(gpu: &Gpu, s: &Arc<CudaStream>, src: WeightKind, p: &QuantParams) -> Result<()> {
    launch(s, gpu.k.to_bf16(src), ((p.k as u32).div_ceil(ROW_THREADS), p.n as u32, 1), ROW_THREADS, 0, p)
}
