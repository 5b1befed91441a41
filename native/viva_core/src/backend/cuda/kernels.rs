//! Our kernels (kernels/*.cu, embedded at build time) compiled by NVRTC for the device's
//! architecture on first use, one program and module per kernel family (file), the PTX cached
//! on disk keyed by source hash + arch, and one `CudaFunction` per entry point.
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::errors::{cuda_err, drv};
use crate::error::{Error, Result};
use crate::formats::WeightKind;

/// Headers the kernel files include (`#include "name"`), inlined by `expand`: NVRTC gets no
/// include path, so no CUDA headers are needed on the machine.
const HEADERS: [(&str, &str); 2] = [
    ("common.cuh", include_str!("../../../../../kernels/common.cuh")),
    ("params.cuh", include_str!("../../../../../kernels/params.cuh")),
];

/// One NVRTC program each (scripts/check_kernels.py compiles the same way without a GPU).
const FAMILIES: [(&str, &str); 6] = [
    ("gemv.cu", include_str!("../../../../../kernels/gemv.cu")),
    ("embedding.cu", include_str!("../../../../../kernels/embedding.cu")),
    ("attention.cu", include_str!("../../../../../kernels/attention.cu")),
    ("sampling.cu", include_str!("../../../../../kernels/sampling.cu")),
    ("prefill.cu", include_str!("../../../../../kernels/prefill.cu")),
    ("quant.cu", include_str!("../../../../../kernels/quant.cu")),
];

/// `src` with each `#include "header"` line replaced by that header (expanded too), each
/// header once (they are `#pragma once`).
fn expand(src: &str, seen: &mut Vec<&'static str>) -> Result<String> {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        let inc = line.trim().strip_prefix("#include \"").and_then(|r| r.strip_suffix('"'));
        match inc {
            Some(name) => {
                let (h, text) = HEADERS
                    .iter()
                    .find(|(h, _)| *h == name)
                    .ok_or_else(|| Error::Internal(format!("kernel include {name:?} is not in HEADERS")))?;
                if !seen.contains(h) {
                    seen.push(h);
                    out.push_str(&expand(text, seen)?);
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// GEMV epilogues (`GEMV_*` in kernels/gemv.cu).
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

/// The three split kernels of kernels/prefill.cu (all take `SplitParams`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitOp {
    RmsNorm = 0,
    Swiglu = 1,
    Copy = 2,
}

pub struct Kernels {
    /// [weight kind][mode]
    gemv: Vec<Vec<CudaFunction>>,
    /// [weight kind] (fp8 has no embedding table kind: index 0 unused → bf16)
    embed: Vec<CudaFunction>,
    pub attn_decode: CudaFunction,
    pub argmax: CudaFunction,
    pub topk: CudaFunction,
    /// [op][split]
    split: Vec<Vec<CudaFunction>>,
    pub rope_qkv_rows: CudaFunction,
    pub dequant_fp8_bf16: CudaFunction,
    /// [source weight kind] (fp8 index unused → bf16)
    quant_fp8: Vec<CudaFunction>,
    to_bf16: Vec<CudaFunction>,
    /// Dynamic shared memory a GEMV block may use (the device's opt-in maximum less the static part).
    pub gemv_smem_max: usize,
    pub arch: String,
    /// Where the PTX came from: "cache", "nvrtc", or "cache+nvrtc" when some families were cached.
    pub origin: &'static str,
}

impl Kernels {
    pub fn gemv(&self, kind: WeightKind, mode: GemvMode) -> &CudaFunction {
        &self.gemv[kind as usize][mode as usize]
    }
    pub fn embed(&self, kind: WeightKind) -> &CudaFunction {
        &self.embed[kind as usize]
    }
    pub fn split(&self, op: SplitOp, s: Split) -> &CudaFunction {
        &self.split[op as usize][s as usize]
    }
    pub fn quant_fp8(&self, src: WeightKind) -> &CudaFunction {
        &self.quant_fp8[src as usize]
    }
    pub fn to_bf16(&self, src: WeightKind) -> &CudaFunction {
        &self.to_bf16[src as usize]
    }

    pub fn load(ctx: &Arc<CudaContext>, cc: (i32, i32), smem_optin: usize) -> Result<Self> {
        let arch = format!("sm_{}{}", cc.0, cc.1);
        // CompileOptions::arch wants a &'static str: leaked once (Kernels load once per process)
        let arch_static: &'static str = Box::leak(arch.clone().into_boxed_str());
        // VIVA_FP8_HW_CVT=0|1 overrides the fp8 GEMV's E4M3 decode (kernels/gemv.cu), for A/B runs
        let gemv_prelude = match crate::tuning::get().fp8_hw_cvt {
            Some(false) => "#define FP8_HW_CVT 0\n",
            Some(true) => "#define FP8_HW_CVT 1\n",
            None => "",
        };
        let mut origins = Vec::new();
        let mut modules = Vec::new();
        for (name, text) in FAMILIES {
            let prelude = if name == "gemv.cu" { gemv_prelude } else { "" };
            let src = format!("{prelude}{}", expand(text, &mut Vec::new())?);
            let (module, origin) = load_module(ctx, name, &src, arch_static)?;
            origins.push(origin);
            modules.push(module);
        }
        let [gemv_m, embed_m, attn_m, sampling_m, prefill_m, quant_m] = &modules[..] else {
            return Err(Error::Internal("kernel modules".into()));
        };
        let f = |m: &Arc<CudaModule>, name: &str| m.load_function(name).map_err(|e| cuda_err(&format!("kernel {name}"), e));
        let kinds = ["fp8", "bf16", "f16", "f32"];
        let splits = ["f32", "bf16", "f16"];
        // 128 bytes of static shared memory per GEMV block (the block-reduction scratch)
        let gemv_smem_max = smem_optin.saturating_sub(128);
        let mut gemv = Vec::new();
        for k in kinds {
            let mut row = Vec::new();
            for m in ["store", "resid", "swiglu", "qkv"] {
                let func = f(gemv_m, &format!("gemv_{m}_{k}"))?;
                func.set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    gemv_smem_max as i32,
                )
                .map_err(drv("gemv shared memory attribute"))?;
                row.push(func);
            }
            gemv.push(row);
        }
        let per_src = |prefix: &str| -> Result<Vec<CudaFunction>> {
            // index = WeightKind; fp8 is no source kind (its slot repeats bf16)
            ["bf16", "bf16", "f16", "f32"].iter().map(|k| f(if prefix == "embed" { embed_m } else { quant_m }, &format!("{prefix}_{k}"))).collect()
        };
        let split = ["rmsnorm_split", "swiglu_split", "copy_split"]
            .iter()
            .map(|op| splits.iter().map(|s| f(prefill_m, &format!("{op}_{s}"))).collect::<Result<Vec<_>>>())
            .collect::<Result<_>>()?;
        let origin = if origins.iter().all(|o| *o == "cache") {
            "cache"
        } else if origins.iter().all(|o| *o == "nvrtc") {
            "nvrtc"
        } else {
            "cache+nvrtc"
        };
        Ok(Kernels {
            gemv,
            embed: per_src("embed")?,
            attn_decode: f(attn_m, "attn_decode")?,
            argmax: f(sampling_m, "argmax")?,
            topk: f(sampling_m, "topk")?,
            split,
            rope_qkv_rows: f(prefill_m, "rope_qkv_rows")?,
            dequant_fp8_bf16: f(prefill_m, "dequant_fp8_bf16")?,
            quant_fp8: per_src("quant_fp8")?,
            to_bf16: per_src("to_bf16")?,
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

fn load_module(ctx: &Arc<CudaContext>, name: &str, src: &str, arch: &'static str) -> Result<(Arc<CudaModule>, &'static str)> {
    let key = fnv1a(format!("{arch}\n{name}\n{src}").as_bytes());
    let stem = name.trim_end_matches(".cu");
    let path = cache_dir().map(|d| d.join(format!("{key:016x}_{stem}_{arch}.ptx")));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        // a corrupt or foreign cache entry falls through to a fresh compile
        if let Ok(m) = ctx.load_module(Ptx::from_src(ptx)) {
            return Ok((m, "cache"));
        }
    }
    let opts = CompileOptions { arch: Some(arch), name: Some(name.into()), ..Default::default() };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| cuda_err(&format!("NVRTC compile of {name}"), e))?;
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
