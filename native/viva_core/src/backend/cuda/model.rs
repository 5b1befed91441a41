//! The model's weights on the GPU (read-only, shared by every session) and the kernel-launch
//! helpers the sessions use.
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr};

use super::weights::{DevEmbedding, DevLinear};
use super::kernels::GemvMode;
use super::{drv, require_gpu, Gpu};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::weights::{Embedding, Linear, WeightFormat};

/// Kernel limits (kernels/decode.cu: ATT_MAX_GROUP, ATT_MAX_HD, ATT_CHUNK).
pub const ATT_MAX_GROUP: usize = 16;
pub const ATT_MAX_QS: usize = 16 * 256;
pub const ATT_MAX_CHUNK: usize = 64;
pub const ATT_MIN_CHUNK: usize = 16;
pub const ATT_THREADS: u32 = 256;
pub const GEMV_THREADS: u32 = 256;

pub struct DevLayer {
    pub attn_norm: CudaSlice<f32>, // (hidden)
    pub qkv: DevLinear,            // (q_dim + 2·kv_dim, hidden)
    pub wo: DevLinear,             // (hidden, q_dim)
    pub mlp_norm: CudaSlice<f32>,  // (hidden)
    pub gate_up: DevLinear,        // (2·intermediate, hidden)
    pub down: DevLinear,           // (hidden, intermediate)
}

pub struct CudaModel {
    pub gpu: Arc<Gpu>,
    pub config: ModelConfig,
    pub embed: DevEmbedding,      // (vocab, hidden)
    pub layers: Vec<DevLayer>,
    pub norm: CudaSlice<f32>,     // (hidden)
    pub lm_head: DevLinear,       // (vocab, hidden)
    pub inv_freq: CudaSlice<f32>, // (head_dim / 2)
}

/// A kernel argument: a device pointer, an int or a float.
pub enum Arg {
    P(u64),
    I(i32),
    F(f32),
}

/// Launches `f` on `stream`. On sm_90+ with programmatic dependent launch: the kernel may start
/// while the previous one finishes; every kernel waits (griddepcontrol.wait) before reading what
/// an earlier kernel wrote (kernels/common.cuh), so results are the same.
pub fn launch(stream: &Arc<CudaStream>, f: &CudaFunction, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg]) -> Result<()> {
    use cudarc::driver::sys;
    let mut params: Vec<*mut std::ffi::c_void> = args
        .iter()
        .map(|a| match a {
            Arg::P(p) => p as *const u64 as *mut std::ffi::c_void,
            Arg::I(i) => i as *const i32 as *mut std::ffi::c_void,
            Arg::F(x) => x as *const f32 as *mut std::ffi::c_void,
        })
        .collect();
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
    // SAFETY: every call site passes the argument list its kernel declares (same order and
    // types), with device pointers to live allocations sized for the grid; `params` points into
    // `args`, which outlives the call (the driver copies the values at launch).
    unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }
        .result()
        .map_err(drv("kernel launch"))
}

/// PDL needs sm_90+; VIVA_NO_PDL=1 turns it off (for comparisons).
fn pdl_enabled(stream: &CudaStream) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let cc = stream.context().attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0);
        cc >= 9 && !crate::tuning::get().no_pdl
    })
}

pub fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    s.device_ptr(stream).0
}

impl CudaModel {
    /// Copies a loaded CPU model's weights to the GPU in `format`: the same bytes when the host
    /// model is already in it; a `Native` host model (mmapped checkpoint) is packed to fp8 on the
    /// device (bit-identical to the host prepack) and its embedding converted as `Embedding::new`.
    pub fn upload(m: &Model, format: WeightFormat) -> Result<Self> {
        let gpu = require_gpu()?;
        let c = &m.config;
        let group = c.num_attention_heads / c.num_key_value_heads.max(1);
        if c.head_dim % 2 != 0 || c.head_dim > 1024 || group > ATT_MAX_GROUP || group * c.head_dim > ATT_MAX_QS {
            return Err(Error::invalid_option("device", format!("cuda: head_dim {} × group {group} exceeds the attention kernel", c.head_dim)));
        }
        let stream = gpu.ctx.new_stream().map_err(drv("stream"))?;
        let gpu_ref = &gpu;
        let up = |l: &Linear| match format {
            WeightFormat::Fp8(b) if m.format == WeightFormat::Native => DevLinear::upload_fp8(gpu_ref, &stream, l, b),
            _ if m.format == format => DevLinear::upload(&stream, l),
            _ => Err(Error::Internal(format!("cuda upload: host model is {:?}, asked for {format:?}", m.format))),
        };
        let vec = |v: &Vec<f32>| stream.clone_htod(v).map_err(drv("upload"));
        let mut layers = Vec::with_capacity(m.layers.len());
        for l in &m.layers {
            layers.push(DevLayer {
                attn_norm: vec(&l.attn_norm)?,
                qkv: up(&l.qkv)?,
                wo: up(&l.wo)?,
                mlp_norm: vec(&l.mlp_norm)?,
                gate_up: up(&l.gate_up)?,
                down: up(&l.down)?,
            });
        }
        let model = CudaModel {
            config: c.clone(),
            embed: match (&m.embed, format) {
                (Embedding::Native(t), f) if f != WeightFormat::Native => DevEmbedding::upload(&stream, &Embedding::new(t, f))?,
                (e, _) => DevEmbedding::upload(&stream, e)?,
            },
            layers,
            norm: vec(&m.norm)?,
            lm_head: up(&m.lm_head)?,
            inv_freq: vec(&m.inv_freq)?,
            gpu,
        };
        for lin in model.linears() {
            if lin.row_stride * 4 > model.gpu.k.gemv_smem_max {
                return Err(Error::invalid_option("device", format!("cuda: a {}-wide linear needs more shared memory than the GPU has", lin.k)));
            }
        }
        stream.synchronize().map_err(drv("upload"))?;
        Ok(model)
    }

    pub fn linears(&self) -> impl Iterator<Item = &DevLinear> {
        self.layers.iter().flat_map(|l| [&l.qkv, &l.wo, &l.gate_up, &l.down]).chain(std::iter::once(&self.lm_head))
    }

    /// Bytes of weights one decode step reads (every linear once).
    pub fn bytes_per_token(&self) -> usize {
        self.linears().map(|l| l.nbytes()).sum()
    }
}

/// What a GEMV epilogue needs besides its weight and vectors.
pub struct GemvShape {
    /// device [token, pos, ..] (GEMV_QKV reads the position)
    pub io: u64,
    /// device (2, head_dim / 2): the step's RoPE cos then sin (GEMV_QKV only)
    pub rope: u64,
    pub eps: f32,
    pub head_dim: usize,
    pub q_dim: usize,
    pub kv_dim: usize,
    pub inter: usize,
}

/// One GEMV launch (kernels/decode.cu): units (row pairs) split over ~2 blocks per SM, 8 warps
/// per block. `norm` = 0: x as is; else RMSNorm(x) with that weight. `kc`/`vc`: GEMV_QKV only.
#[allow(clippy::too_many_arguments)]
pub fn gemv(gpu: &Gpu, s: &Arc<CudaStream>, w: &DevLinear, mode: GemvMode, x: u64, norm: u64, out: u64, kc: u64, vc: u64, sh: &GemvShape) -> Result<()> {
    let units = match mode {
        GemvMode::Store | GemvMode::Resid => w.n.div_ceil(2),
        GemvMode::Swiglu | GemvMode::Qkv => w.n / 2,
    };
    let warps = (GEMV_THREADS / 32) as usize;
    let blocks = units.div_ceil(warps).min(gemv_blocks_per_sm() * gpu.sm_count).max(1);
    let upb = units.div_ceil(blocks).div_ceil(warps) * warps;
    let grid = units.div_ceil(upb) as u32;
    let (wp, sp) = w.ptr(s);
    launch(s, gpu.k.gemv(w.kind, mode), (grid, 1, 1), GEMV_THREADS, (w.row_stride * 4) as u32, &[
        Arg::P(wp),
        Arg::P(sp),
        Arg::I(w.n as i32),
        Arg::I(w.k as i32),
        Arg::I(w.row_stride as i32),
        Arg::I(w.bpr as i32),
        Arg::I(w.block as i32),
        Arg::I(units as i32),
        Arg::I(upb as i32),
        Arg::P(x),
        Arg::P(norm),
        Arg::F(sh.eps),
        Arg::P(out),
        Arg::P(kc),
        Arg::P(vc),
        Arg::P(sh.io),
        Arg::P(sh.rope),
        Arg::I(sh.head_dim as i32),
        Arg::I(sh.q_dim as i32),
        Arg::I(sh.kv_dim as i32),
        Arg::I(sh.inter as i32),
    ])
}

/// GEMV blocks per SM (VIVA_GEMV_BLOCKS_PER_SM overrides, for tuning runs).
fn gemv_blocks_per_sm() -> usize {
    crate::tuning::get().gemv_blocks_per_sm
}
