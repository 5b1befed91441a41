//! Our kernels (kernels/*.cu, embedded at build time) compiled by NVRTC for the device's
//! architecture on first use, the PTX cached on disk keyed by source hash + arch, and one
//! `CudaFunction` per entry point.
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::{cuda_err, drv};
use crate::error::Result;

/// Concatenated in this order into one NVRTC program (no include path is needed).
const SOURCES: [(&str, &str); 4] = [
    ("common.cuh", include_str!("../../../../../kernels/common.cuh")),
    ("decode.cu", include_str!("../../../../../kernels/decode.cu")),
    ("prefill.cu", include_str!("../../../../../kernels/prefill.cu")),
    ("quant.cu", include_str!("../../../../../kernels/quant.cu")),
];

/// Weight element kinds, as the kernels number them (`WT_*` in kernels/common.cuh).
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

/// GEMV epilogues (`GEMV_*` in kernels/decode.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemvMode {
    Store = 0,
    Resid = 1,
    Swiglu = 2,
    Qkv = 3,
}

/// How a prefill GEMM's activations are split (`SPLIT_*` in kernels/prefill.cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    F32 = 0,
    Bf16 = 1,
    F16 = 2,
}

pub struct Kernels {
    /// [weight kind][mode]
    gemv: Vec<Vec<CudaFunction>>,
    /// [weight kind] (fp8 has no embedding table kind: index 0 unused → bf16)
    embed: Vec<CudaFunction>,
    pub attn_decode: CudaFunction,
    pub argmax: CudaFunction,
    pub topk: CudaFunction,
    /// [split]
    rmsnorm_split: Vec<CudaFunction>,
    swiglu_split: Vec<CudaFunction>,
    copy_split: Vec<CudaFunction>,
    pub rope_qkv_rows: CudaFunction,
    pub dequant_fp8_bf16: CudaFunction,
    /// [source weight kind] (fp8 index unused)
    quant_fp8: Vec<CudaFunction>,
    /// Dynamic shared memory a GEMV block may use (the device's opt-in maximum less the static part).
    pub gemv_smem_max: usize,
    pub arch: String,
    /// Where the PTX came from: "cache" or "nvrtc".
    pub origin: &'static str,
}

impl Kernels {
    pub fn gemv(&self, kind: WeightKind, mode: GemvMode) -> &CudaFunction {
        &self.gemv[kind as usize][mode as usize]
    }
    pub fn embed(&self, kind: WeightKind) -> &CudaFunction {
        &self.embed[kind as usize]
    }
    pub fn rmsnorm_split(&self, s: Split) -> &CudaFunction {
        &self.rmsnorm_split[s as usize]
    }
    pub fn swiglu_split(&self, s: Split) -> &CudaFunction {
        &self.swiglu_split[s as usize]
    }
    pub fn copy_split(&self, s: Split) -> &CudaFunction {
        &self.copy_split[s as usize]
    }
    pub fn quant_fp8(&self, src: WeightKind) -> &CudaFunction {
        &self.quant_fp8[src as usize]
    }

    pub fn load(ctx: &Arc<CudaContext>, cc: (i32, i32), smem_optin: usize) -> Result<Self> {
        let arch = format!("sm_{}{}", cc.0, cc.1);
        // VIVA_FP8_HW_CVT=0|1 overrides the fp8 GEMV's E4M3 decode (kernels/decode.cu), for A/B runs
        let prelude = match crate::tuning::get().fp8_hw_cvt {
            Some(false) => "#define FP8_HW_CVT 0\n",
            Some(true) => "#define FP8_HW_CVT 1\n",
            None => "",
        };
        let src: String =
            std::iter::once(prelude.to_string()).chain(SOURCES.iter().map(|(name, s)| format!("// ---- {name}\n{s}\n"))).collect();
        let (module, origin) = load_module(ctx, &src, &arch)?;
        let f = |name: &str| module.load_function(name).map_err(|e| cuda_err(&format!("kernel {name}"), e));
        let modes = ["store", "resid", "swiglu", "qkv"];
        let kinds = ["fp8", "bf16", "f16", "f32"];
        let splits = ["f32", "bf16", "f16"];
        let mut gemv = Vec::new();
        // 128 bytes of static shared memory per GEMV block (the block-reduction scratch)
        let gemv_smem_max = smem_optin.saturating_sub(128);
        for k in kinds {
            let mut row = Vec::new();
            for m in modes {
                let func = f(&format!("gemv_{m}_{k}"))?;
                func.set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    gemv_smem_max as i32,
                )
                .map_err(drv("gemv shared memory attribute"))?;
                row.push(func);
            }
            gemv.push(row);
        }
        Ok(Kernels {
            gemv,
            embed: vec![f("embed_bf16")?, f("embed_bf16")?, f("embed_f16")?, f("embed_f32")?],
            attn_decode: f("attn_decode")?,
            argmax: f("argmax")?,
            topk: f("topk")?,
            rmsnorm_split: splits.iter().map(|s| f(&format!("rmsnorm_split_{s}"))).collect::<Result<_>>()?,
            swiglu_split: splits.iter().map(|s| f(&format!("swiglu_split_{s}"))).collect::<Result<_>>()?,
            copy_split: splits.iter().map(|s| f(&format!("copy_split_{s}"))).collect::<Result<_>>()?,
            rope_qkv_rows: f("rope_qkv_rows")?,
            dequant_fp8_bf16: f("dequant_fp8_bf16")?,
            quant_fp8: vec![f("quant_fp8_bf16")?, f("quant_fp8_bf16")?, f("quant_fp8_f16")?, f("quant_fp8_f32")?],
            gemv_smem_max,
            arch,
            origin,
        })
    }
}

/// 64-bit FNV-1a: a stable cache key (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// $VIVA_KERNEL_CACHE, else $XDG_CACHE_HOME/viva_tensor/kernels, else ~/.cache/viva_tensor/kernels.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = &crate::tuning::get().kernel_cache {
        return Some(d.clone());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("viva_tensor").join("kernels"))
}

fn load_module(ctx: &Arc<CudaContext>, src: &str, arch: &str) -> Result<(Arc<CudaModule>, &'static str)> {
    let key = fnv1a(format!("{arch}\n{src}").as_bytes());
    let path = cache_dir().map(|d| d.join(format!("{key:016x}_{arch}.ptx")));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        // a corrupt or foreign cache entry falls through to a fresh compile
        if let Ok(m) = ctx.load_module(Ptx::from_src(ptx)) {
            return Ok((m, "cache"));
        }
    }
    // CompileOptions::arch wants a &'static str: one per distinct arch, leaked once per process.
    let arch_static: &'static str = Box::leak(arch.to_string().into_boxed_str());
    let opts = CompileOptions { arch: Some(arch_static), name: Some("viva_kernels.cu".into()), ..Default::default() };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| cuda_err("NVRTC compile", e))?;
    let text = ptx.to_src();
    if let Some(p) = &path {
        // best effort: write to a temporary name, then rename, so readers never see half a file
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &text).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    let m = ctx.load_module(Ptx::from_src(text)).map_err(drv("load PTX module"))?;
    Ok((m, "nvrtc"))
}
