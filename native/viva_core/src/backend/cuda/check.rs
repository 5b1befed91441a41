//! Harnesses that run single kernels or session paths on host data, for the tests that compare
//! the GPU with its CPU reference (native/viva_core/tests/cuda.rs). Not used by generation.
use super::kernels::GemvMode;
use super::launch;
use super::model::ptr;
use super::params::{DecodeIo, GemvParams};
use super::session::CudaSession;
use super::weights::DevLinear;
use super::{drv, require_gpu};
use crate::error::{Error, Result};
use crate::llm::Llm;
use crate::formats::Linear;

fn cuda_model(llm: &Llm) -> Result<&super::model::CudaModel> {
    llm.cuda.as_ref().ok_or(Error::CudaUnavailable)
}

/// The GPU top-k candidates after prefilling `ids`.
pub fn top_k(llm: &Llm, ids: &[u32], k: usize) -> Result<Vec<(u32, f32)>> {
    let mut s = CudaSession::new(cuda_model(llm)?, ids.len())?;
    s.prefill(ids)?;
    s.top_k(k)
}

/// Last logits after prefilling `ids` at once (GEMMs, in chunks) and after stepping them one by one.
pub fn prefill_vs_steps(llm: &Llm, ids: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let m = cuda_model(llm)?;
    let mut a = CudaSession::new(m, ids.len())?;
    a.prefill(ids)?;
    let mut b = CudaSession::new(m, ids.len())?;
    for &id in ids {
        b.step(id)?;
    }
    Ok((a.logits()?, b.logits()?))
}

/// One GEMV of `lin` on `x` (k) with an epilogue: Store → W·x (n); Resid → `resid` + W·x (n);
/// Swiglu → silu(gate)·up (n/2). `norm`: RMSNorm x first with (weight, eps).
pub fn linear(lin: &Linear, x: &[f32], mode: GemvMode, norm: Option<(&[f32], f32)>, resid: Option<&[f32]>) -> Result<Vec<f32>> {
    let gpu = require_gpu()?;
    let s = gpu.ctx.new_stream().map_err(drv("stream"))?;
    let w = DevLinear::upload(&s, lin)?;
    let n_out = if mode == GemvMode::Swiglu { w.n / 2 } else { w.n };
    let xd = s.clone_htod(x).map_err(drv("upload"))?;
    let out = match resid {
        Some(r) => s.clone_htod(r).map_err(drv("upload"))?,
        None => s.alloc_zeros::<f32>(n_out).map_err(drv("alloc"))?,
    };
    let nw = s.clone_htod(norm.map_or(&[0.0][..], |n| n.0)).map_err(drv("upload"))?;
    let io = s.alloc_zeros::<DecodeIo>(1).map_err(drv("alloc"))?;
    let p = GemvParams {
        w: w.view(&s),
        x: ptr(&xd, &s),
        norm_w: if norm.is_some() { ptr(&nw, &s) } else { 0 },
        out: ptr(&out, &s),
        io: ptr(&io, &s),
        eps: norm.map_or(0.0, |n| n.1),
        inter: (w.n / 2) as i32,
        ..Default::default()
    };
    launch::gemv(&gpu, &s, w.kind, mode, p)?;
    let mut host = vec![0f32; n_out];
    s.memcpy_dtoh(&out, &mut host).map_err(drv("read"))?;
    s.synchronize().map_err(drv("sync"))?;
    Ok(host)
}

/// Device-to-device copy bandwidth in bytes/s (bytes read + written), the decode roofline:
/// the best of 5 copies of 1 GiB.
pub fn copy_bandwidth() -> Result<f64> {
    let gpu = require_gpu()?;
    let s = gpu.ctx.new_stream().map_err(drv("stream"))?;
    let n = 1usize << 30;
    let src = s.alloc_zeros::<u8>(n).map_err(drv("alloc"))?;
    let mut dst = s.alloc_zeros::<u8>(n).map_err(drv("alloc"))?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        s.synchronize().map_err(drv("sync"))?;
        let t = std::time::Instant::now();
        s.memcpy_dtod(&src, &mut dst).map_err(drv("copy"))?;
        s.synchronize().map_err(drv("sync"))?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * n as f64 / best)
}

/// Per-kernel-group times (ms) of one decode step after a `prompt_len`-token prompt.
pub fn profile_decode(llm: &Llm, prompt: &[u32]) -> Result<Vec<(&'static str, f64)>> {
    let mut s = CudaSession::new(cuda_model(llm)?, prompt.len() + 8)?;
    s.prefill(prompt)?;
    s.profile_step(prompt[0])?; // warm-up
    s.profile_step(prompt[0])
}

/// `lin` (a `Native` linear) packed to fp8 on the device: (codes (n, row_stride), scales (n, bpr)).
pub fn pack_fp8(lin: &Linear, blocking: crate::formats::fp8::Blocking) -> Result<(Vec<u8>, Vec<f32>)> {
    let gpu = require_gpu()?;
    let s = gpu.ctx.new_stream().map_err(drv("stream"))?;
    let w = DevLinear::upload(&s, lin)?.to_fp8(&gpu, &s, blocking.block_len(lin.shape().1)?)?;
    let (mut codes, mut scales) = (vec![0u8; w.n * w.row_stride], vec![0f32; w.n * w.bpr]);
    s.memcpy_dtoh(&w.data, &mut codes).map_err(drv("read"))?;
    s.memcpy_dtoh(&w.scales, &mut scales).map_err(drv("read"))?;
    s.synchronize().map_err(drv("sync"))?;
    Ok((codes, scales))
}

/// `lin` (a `Native` linear) rounded to bf16 on the device: (n, row_stride) bf16 bits, padded.
pub fn to_bf16(lin: &Linear) -> Result<(usize, Vec<u16>)> {
    let gpu = require_gpu()?;
    let s = gpu.ctx.new_stream().map_err(drv("stream"))?;
    let Linear::Native(nat) = lin else { return Err(Error::Internal("to_bf16 takes a native linear".into())) };
    let w = DevLinear::from_parts(&gpu, &s, &nat.parts.iter().collect::<Vec<_>>(), crate::formats::WeightFormat::Bf16)?;
    let mut bytes = vec![0u8; w.n * w.row_stride * 2];
    s.memcpy_dtoh(&w.data, &mut bytes).map_err(drv("read"))?;
    s.synchronize().map_err(drv("sync"))?;
    Ok((w.row_stride, bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()))
}

/// Device memory held until dropped (the out-of-memory tests).
pub struct MemoryHog(#[allow(dead_code)] Vec<cudarc::driver::CudaSlice<u8>>);

/// Allocates all but `leave` bytes of the GPU's free memory (in 1 GiB pieces, then the rest).
pub fn hog_memory(leave: usize) -> Result<MemoryHog> {
    let gpu = require_gpu()?;
    let s = gpu.ctx.new_stream().map_err(drv("stream"))?;
    let mut held = Vec::new();
    loop {
        let (free, _) = gpu.ctx.mem_get_info().map_err(drv("mem_get_info"))?;
        let want = free.saturating_sub(leave).min(1 << 30);
        if want < (2 << 20) {
            break;
        }
        held.push(s.alloc_zeros::<u8>(want).map_err(drv("hog alloc"))?);
        s.synchronize().map_err(drv("sync"))?;
    }
    Ok(MemoryHog(held))
}

/// Free device memory in bytes.
pub fn free_memory() -> Result<usize> {
    let gpu = require_gpu()?;
    Ok(gpu.ctx.mem_get_info().map_err(drv("mem_get_info"))?.0)
}

/// Opens (and drops) a GPU session of `max_seq` positions on `llm`: KV cache and scratch.
pub fn open_session(llm: &Llm, max_seq: usize) -> Result<()> {
    CudaSession::new(cuda_model(llm)?, max_seq).map(|_| ())
}
