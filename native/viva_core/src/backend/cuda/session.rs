//! One generation on the GPU: its stream, KV cache and scratch (all allocated up front), the
//! prompt prefilled with GEMMs, and a decode step captured once into a CUDA graph.
//!
//! Decode reads the token id and position from `io` (a `DecodeIo`, params.rs) in device memory,
//! so the same graph replays at every position: per token the host writes 16 bytes, launches the
//! graph and reads back the 16 (the greedy argmax) or the top-k candidates (sampling).
use std::sync::Arc;

use cudarc::cublas::sys as blas;
use cudarc::driver::{sys, CudaGraph, CudaSlice, CudaStream};

use super::kernels::{GemvMode, Split, SplitOp};
use super::launch::{self, ATT_MAX_CHUNK, ATT_MIN_CHUNK};
use super::model::{ptr, CudaModel};
use super::params::{ArgmaxParams, AttnParams, DecodeIo, DequantParams, EmbedParams, GemvParams, RopeRowsParams, SplitParams, TopkParams};
use super::weights::DevLinear;
use super::{cuda_err, drv, BlasHandle};
use crate::error::{Error, Result};
use crate::formats::WeightKind;
use crate::sampling::MAX_TOP_K;

/// Prompt rows per prefill pass: bounds the prefill scratch (longer prompts run in chunks).
const PREFILL_ROWS: usize = 512;

struct PrefillBufs {
    rows: usize,
    ids: CudaSlice<i32>,  // (rows)
    xs: CudaSlice<f32>,   // (rows, hidden) residual stream
    hi: CudaSlice<u8>,    // (rows, max_k) f32, or 2 × (rows, max_k) bf16/f16: high then middle thirds
    lo: CudaSlice<u8>,    // (rows, max_k) bf16/f16 low thirds
    t: CudaSlice<f32>,    // (rows, max(q_dim + 2·kv_dim, 2·inter)) GEMM outputs
    qb: CudaSlice<f32>,   // (rows, q_dim) roped queries
    att: CudaSlice<f32>,  // (rows, q_dim) attention output
    part: CudaSlice<f32>, // (rows, n_heads, max_splits, head_dim + 2)
    deq: CudaSlice<u8>,   // 2 × (n, k) bf16 (hi, lo) of the largest fp8 linear (fp8 only)
}

pub struct CudaSession<'m> {
    m: &'m CudaModel,
    stream: Arc<CudaStream>,
    blas: Option<BlasHandle>,
    max_seq: usize,
    /// Cache positions per attention split, and splits for max_seq.
    chunk: usize,
    max_splits: usize,
    kc: CudaSlice<f32>,     // (layers, max_seq, kv_dim)
    vc: CudaSlice<f32>,     // (layers, max_seq, kv_dim)
    x: CudaSlice<f32>,      // (hidden)
    q: CudaSlice<f32>,      // (q_dim)
    attn: CudaSlice<f32>,   // (q_dim)
    act: CudaSlice<f32>,    // (intermediate)
    logits: CudaSlice<f32>, // (vocab)
    part: CudaSlice<f32>,   // (n_heads, max_splits, head_dim + 2)
    counters: CudaSlice<i32>, // (PREFILL_ROWS, n_kv_heads) finished attention splits, kept at 0 between launches
    io: CudaSlice<DecodeIo>, // (1)
    rope: CudaSlice<f32>,   // (2, head_dim / 2): cos then sin of the step's position
    /// host read-back buffers for `top_k` (no allocation per sampled token)
    host_val: Vec<f32>,
    host_idx: Vec<i32>,
    cand_val: CudaSlice<f32>, // (MAX_TOP_K)
    cand_idx: CudaSlice<i32>, // (MAX_TOP_K)
    pre: Option<PrefillBufs>,
    graph: Option<CudaGraph>,
    filled: usize,
}

impl Drop for CudaSession<'_> {
    fn drop(&mut self) {
        self.graph = None;
        if let Some(h) = self.blas.take() {
            self.m.gpu.give_blas(h);
        }
    }
}

impl<'m> CudaSession<'m> {
    /// Room for `max_seq` positions (prompt + new tokens).
    pub fn new(m: &'m CudaModel, max_seq: usize) -> Result<Self> {
        let c = &m.config;
        let stream = m.gpu.ctx.new_stream().map_err(drv("stream"))?;
        // enough splits to fill ~2 blocks per SM at this session's length, ATT_MIN..MAX_CHUNK each
        let per_block = (max_seq * c.num_key_value_heads).div_ceil(2 * m.gpu.sm_count);
        let chunk = per_block.div_ceil(ATT_MIN_CHUNK).max(1) * ATT_MIN_CHUNK;
        let chunk = chunk.clamp(ATT_MIN_CHUNK, ATT_MAX_CHUNK);
        let max_splits = max_seq.div_ceil(chunk);
        let f = |n: usize| stream.alloc_zeros::<f32>(n.max(1)).map_err(drv("session alloc"));
        let kv = c.num_hidden_layers * max_seq * c.kv_dim();
        Ok(CudaSession {
            max_seq,
            chunk,
            max_splits,
            kc: f(kv)?,
            vc: f(kv)?,
            x: f(c.hidden_size)?,
            q: f(c.q_dim())?,
            attn: f(c.q_dim())?,
            act: f(c.intermediate_size)?,
            logits: f(c.vocab_size)?,
            part: f(c.num_attention_heads * max_splits * (c.head_dim + 2))?,
            io: stream.alloc_zeros::<DecodeIo>(1).map_err(drv("session alloc"))?,
            rope: f(c.head_dim)?,
            host_val: vec![0f32; MAX_TOP_K],
            host_idx: vec![0i32; MAX_TOP_K],
            counters: stream.alloc_zeros::<i32>(PREFILL_ROWS * c.num_key_value_heads).map_err(drv("session alloc"))?,
            cand_val: f(MAX_TOP_K)?,
            cand_idx: stream.alloc_zeros::<i32>(MAX_TOP_K).map_err(drv("session alloc"))?,
            pre: None,
            graph: None,
            filled: 0,
            blas: None,
            stream,
            m,
        })
    }

    pub fn pos(&self) -> usize {
        self.filled
    }

    /// Feeds the prompt (GEMMs per layer, chunks of PREFILL_ROWS); the last row's logits and
    /// argmax are ready afterwards.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        if ids.len() == 1 {
            return self.step(ids[0]);
        }
        for chunk in ids.chunks(PREFILL_ROWS) {
            self.check_room(chunk.len())?;
            self.prefill_chunk(chunk)?;
        }
        Ok(())
    }

    /// Feeds one token at the next position (one graph launch).
    pub fn step(&mut self, id: u32) -> Result<()> {
        self.check_room(1)?;
        if id as usize >= self.m.config.vocab_size {
            return Err(Error::TokenOutOfRange { id, vocab: self.m.config.vocab_size });
        }
        self.write_io(id, self.filled)?;
        if self.graph.is_none() {
            self.graph = Some(self.capture()?);
        }
        if let Some(g) = &self.graph {
            g.launch().map_err(drv("graph launch"))?;
        }
        self.filled += 1;
        Ok(())
    }

    /// The greedy next token (the argmax the step computed on the device).
    pub fn argmax(&mut self) -> Result<u32> {
        let mut io = [DecodeIo::default()];
        self.stream.memcpy_dtoh(&self.io, &mut io).map_err(drv("read argmax"))?;
        self.stream.synchronize().map_err(drv("sync"))?;
        Ok(io[0].argmax as u32)
    }

    /// The step's inputs (the graph reads them from `io`).
    fn write_io(&mut self, token: u32, pos: usize) -> Result<()> {
        let io = [DecodeIo { token: token as i32, pos: pos as i32, argmax: 0, pad: 0 }];
        self.stream.memcpy_htod(&io, &mut self.io).map_err(drv("write io"))
    }

    /// The `k` (≤ MAX_TOP_K) largest logits as (id, logit), sorted descending, lower id first on
    /// ties, NaN dropped: what `Sampler::sample_candidates` takes.
    pub fn top_k(&mut self, k: usize) -> Result<Vec<(u32, f32)>> {
        let vocab = self.m.config.vocab_size;
        let k = k.clamp(1, MAX_TOP_K).min(vocab);
        let s = &self.stream;
        let p = TopkParams { logits: ptr(&self.logits, s), out_val: ptr(&self.cand_val, s), out_idx: ptr(&self.cand_idx, s), n: vocab as i32, k: k as i32 };
        launch::topk(&self.m.gpu, s, &p)?;
        s.memcpy_dtoh(&self.cand_val, &mut self.host_val).map_err(drv("read candidates"))?;
        s.memcpy_dtoh(&self.cand_idx, &mut self.host_idx).map_err(drv("read candidates"))?;
        s.synchronize().map_err(drv("sync"))?;
        let mut cand: Vec<(u32, f32)> = self.host_idx[..k].iter().zip(&self.host_val[..k]).filter(|(_, v)| !v.is_nan()).map(|(&i, &v)| (i as u32, v)).collect();
        cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(cand)
    }

    /// The logits after the last fed token (vocab), copied to the host.
    pub fn logits(&mut self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.m.config.vocab_size];
        self.stream.memcpy_dtoh(&self.logits, &mut out).map_err(drv("read logits"))?;
        self.stream.synchronize().map_err(drv("sync"))?;
        Ok(out)
    }

    fn check_room(&self, n: usize) -> Result<()> {
        if self.filled + n > self.max_seq {
            return Err(Error::ContextOverflow { needed: self.filled + n, max: self.max_seq });
        }
        Ok(())
    }

    fn capture(&mut self) -> Result<CudaGraph> {
        let s = self.stream.clone();
        s.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(drv("begin capture"))?;
        let queued = self.enqueue_decode(&mut |_| Ok(()));
        let graph = s.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(drv("end capture"));
        queued?;
        graph?.ok_or_else(|| Error::Cuda("empty decode graph".into()))
    }

    /// One decode step: embedding row → layers → final norm + lm_head → argmax into io.argmax.
    fn enqueue_decode(&self, mark: &mut dyn FnMut(&'static str) -> Result<()>) -> Result<()> {
        let (m, s, c) = (self.m, &self.stream, &self.m.config);
        let (h, kv_dim) = (c.hidden_size, c.kv_dim());
        let io = ptr(&self.io, s);
        let p = EmbedParams {
            table: ptr(&m.embed.data, s),
            ids: io + std::mem::offset_of!(DecodeIo, token) as u64,
            x: ptr(&self.x, s),
            io,
            inv_freq: ptr(&m.inv_freq, s),
            rope_tab: ptr(&self.rope, s),
            hidden: h as i32,
            half: (c.head_dim / 2) as i32,
        };
        launch::embed(&m.gpu, s, m.embed.kind, 1, &p)?;
        mark("embed")?;
        let (x, q, attn, act) = (ptr(&self.x, s), ptr(&self.q, s), ptr(&self.attn, s), ptr(&self.act, s));
        let layer_bytes = (self.max_seq * kv_dim * 4) as u64;
        for (l, layer) in m.layers.iter().enumerate() {
            let (kc, vc) = (ptr(&self.kc, s) + l as u64 * layer_bytes, ptr(&self.vc, s) + l as u64 * layer_bytes);
            // attention block: q, k (roped) and v from rmsnorm(x); k/v appended at io.pos
            self.gemv(&layer.qkv, GemvMode::Qkv, x, ptr(&layer.attn_norm, s), q, kc, vc)?;
            mark("qkv (norm, rope, kv append)")?;
            self.attention(q, kc, vc, ptr(&self.part, s), attn, 1)?;
            mark("attention (split + merge)")?;
            self.gemv(&layer.wo, GemvMode::Resid, attn, 0, x, 0, 0)?;
            mark("o_proj + residual")?;
            // MLP block: x += down(silu(gate) * up) of rmsnorm(x)
            self.gemv(&layer.gate_up, GemvMode::Swiglu, x, ptr(&layer.mlp_norm, s), act, 0, 0)?;
            mark("gate_up (norm, silu*mul)")?;
            self.gemv(&layer.down, GemvMode::Resid, act, 0, x, 0, 0)?;
            mark("down + residual")?;
        }
        self.head(x)?;
        mark("lm_head (norm) + argmax")
    }

    /// Times each kernel group of one decode step at the next position (events between launches,
    /// no graph): (label, total ms over the layers). The step's K/V are written like `step`'s.
    pub fn profile_step(&mut self, id: u32) -> Result<Vec<(&'static str, f64)>> {
        use cudarc::driver::sys::CUevent_flags;
        self.check_room(1)?;
        self.write_io(id, self.filled)?;
        let ctx = self.m.gpu.ctx.clone();
        let ev = || ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(drv("event"));
        let mut events = vec![("start", ev()?)];
        events[0].1.record(&self.stream).map_err(drv("event"))?;
        let stream = self.stream.clone();
        self.enqueue_decode(&mut |label| {
            let e = ev()?;
            e.record(&stream).map_err(drv("event"))?;
            events.push((label, e));
            Ok(())
        })?;
        self.stream.synchronize().map_err(drv("sync"))?;
        let mut out: Vec<(&'static str, f64)> = Vec::new();
        for w in events.windows(2) {
            let ms = w[0].1.elapsed_ms(&w[1].1).map_err(drv("event"))? as f64;
            match out.iter_mut().find(|(l, _)| *l == w[1].0) {
                Some(e) => e.1 += ms,
                None => out.push((w[1].0, ms)),
            }
        }
        self.filled += 1;
        Ok(out)
    }

    /// logits = lm_head(rmsnorm(x_row)), then io.argmax = argmax.
    fn head(&self, x_row: u64) -> Result<()> {
        let (m, s) = (self.m, &self.stream);
        self.gemv(&m.lm_head, GemvMode::Store, x_row, ptr(&m.norm, s), ptr(&self.logits, s), 0, 0)?;
        let p = ArgmaxParams { logits: ptr(&self.logits, s), io: ptr(&self.io, s), n: m.config.vocab_size as i32, pad: 0 };
        launch::argmax(&m.gpu, s, &p)
    }

    /// Flash-decoding attention of `rows` queries at positions io.pos.. over the layer's cache.
    fn attention(&self, q: u64, kc: u64, vc: u64, part: u64, out: u64, rows: usize) -> Result<()> {
        let (s, c) = (&self.stream, &self.m.config);
        let p = AttnParams {
            q,
            kc,
            vc,
            part,
            counters: ptr(&self.counters, s),
            out,
            io: ptr(&self.io, s),
            n_heads: c.num_attention_heads as i32,
            n_kv: c.num_key_value_heads as i32,
            hd: c.head_dim as i32,
            max_splits: self.max_splits as i32,
            chunk: self.chunk as i32,
            pad: 0,
        };
        launch::attention(&self.m.gpu, s, rows, &p)
    }

    /// One GEMV of `w` on x (norm ≠ 0: RMSNorm x with that weight first); kc/vc: QKV only.
    #[allow(clippy::too_many_arguments)]
    fn gemv(&self, w: &DevLinear, mode: GemvMode, x: u64, norm_w: u64, out: u64, kc: u64, vc: u64) -> Result<()> {
        let (m, s, c) = (self.m, &self.stream, &self.m.config);
        let p = GemvParams {
            w: w.view(s),
            x,
            norm_w,
            out,
            kc,
            vc,
            io: ptr(&self.io, s),
            rope_tab: ptr(&self.rope, s),
            eps: c.rms_norm_eps,
            hd: c.head_dim as i32,
            q_dim: c.q_dim() as i32,
            kv_dim: c.kv_dim() as i32,
            inter: c.intermediate_size as i32,
            ..Default::default()
        };
        launch::gemv(&m.gpu, s, w.kind, mode, p)
    }

    fn prefill_bufs(&mut self, rows: usize) -> Result<()> {
        if self.pre.as_ref().is_some_and(|p| p.rows >= rows) {
            return Ok(());
        }
        let (m, s, c) = (self.m, &self.stream, &self.m.config);
        let rows = rows.max(self.pre.as_ref().map_or(0, |p| p.rows));
        let max_k = c.hidden_size.max(c.q_dim()).max(c.intermediate_size);
        let max_n = (c.q_dim() + 2 * c.kv_dim()).max(2 * c.intermediate_size);
        let deq = m.linears().filter(|l| l.kind == WeightKind::Fp8).map(|l| l.n * l.k * 4).max().unwrap_or(1);
        let f = |n: usize| s.alloc_zeros::<f32>(n).map_err(drv("prefill alloc"));
        let b = |n: usize| s.alloc_zeros::<u8>(n).map_err(drv("prefill alloc"));
        self.pre = None; // free the smaller set first
        self.pre = Some(PrefillBufs {
            rows,
            ids: s.alloc_zeros::<i32>(rows).map_err(drv("prefill alloc"))?,
            xs: f(rows * c.hidden_size)?,
            hi: b(rows * max_k * 4)?,
            lo: b(rows * max_k * 2)?,
            t: f(rows * max_n)?,
            qb: f(rows * c.q_dim())?,
            att: f(rows * c.q_dim())?,
            part: f(rows * c.num_attention_heads * self.max_splits * (c.head_dim + 2))?,
            deq: b(deq)?,
        });
        Ok(())
    }

    fn prefill_chunk(&mut self, ids: &[u32]) -> Result<()> {
        let rows = ids.len();
        self.prefill_bufs(rows)?;
        if self.blas.is_none() {
            self.blas = Some(self.m.gpu.take_blas()?);
        }
        let vocab = self.m.config.vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        let (m, s, c) = (self.m, self.stream.clone(), self.m.config.clone());
        let gpu = &m.gpu;
        let Some(p) = self.pre.as_mut() else { return Err(Error::Internal("prefill buffers".into())) };
        let ids_i: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        s.memcpy_htod(&ids_i, &mut p.ids).map_err(drv("write ids"))?;
        self.write_io(0, self.filled)?;
        let p = self.pre.as_ref().ok_or_else(|| Error::Internal("prefill buffers".into()))?;
        let (h, kv_dim, inter, q_dim) = (c.hidden_size, c.kv_dim(), c.intermediate_size, c.q_dim());
        let (xs, hi, lo, t, qb, att, part) =
            (ptr(&p.xs, &s), ptr(&p.hi, &s), ptr(&p.lo, &s), ptr(&p.t, &s), ptr(&p.qb, &s), ptr(&p.att, &s), ptr(&p.part, &s));
        let embed = EmbedParams { table: ptr(&m.embed.data, &s), ids: ptr(&p.ids, &s), x: xs, hidden: h as i32, ..Default::default() };
        launch::embed(gpu, &s, m.embed.kind, rows, &embed)?;
        let layer_bytes = (self.max_seq * kv_dim * 4) as u64;
        let eps = c.rms_norm_eps;
        // split the activations x (rows, k) for `w`'s GEMM, after `op`
        let split = |op: SplitOp, w: &DevLinear, x: u64, norm_w: u64, k: usize| {
            launch::split(gpu, &s, op, split_for(w.kind), rows, &SplitParams { x, norm_w, hi, lo, k: k as i32, eps })
        };
        for (l, layer) in m.layers.iter().enumerate() {
            let (kc, vc) = (ptr(&self.kc, &s) + l as u64 * layer_bytes, ptr(&self.vc, &s) + l as u64 * layer_bytes);
            split(SplitOp::RmsNorm, &layer.qkv, xs, ptr(&layer.attn_norm, &s), h)?;
            self.gemm(&layer.qkv, hi, lo, rows, t, 0.0)?;
            let rope = RopeRowsParams {
                qkv: t,
                q_out: qb,
                kc,
                vc,
                io: ptr(&self.io, &s),
                inv_freq: ptr(&m.inv_freq, &s),
                hd: c.head_dim as i32,
                q_dim: q_dim as i32,
                kv_dim: kv_dim as i32,
                pad: 0,
            };
            launch::rope_rows(gpu, &s, rows, &rope)?;
            self.attention(qb, kc, vc, part, att, rows)?;
            split(SplitOp::Copy, &layer.wo, att, 0, q_dim)?;
            self.gemm(&layer.wo, hi, lo, rows, xs, 1.0)?;
            split(SplitOp::RmsNorm, &layer.gate_up, xs, ptr(&layer.mlp_norm, &s), h)?;
            self.gemm(&layer.gate_up, hi, lo, rows, t, 0.0)?;
            split(SplitOp::Swiglu, &layer.down, t, 0, inter)?;
            self.gemm(&layer.down, hi, lo, rows, xs, 1.0)?;
        }
        self.head(xs + ((rows - 1) * h * 4) as u64)?;
        self.filled += rows;
        Ok(())
    }

    /// out (rows, n) = beta·out + W · (hi + lo) for every row: cuBLAS, f32 accumulation.
    fn gemm(&self, w: &DevLinear, hi: u64, lo: u64, rows: usize, out: u64, beta: f32) -> Result<()> {
        use blas::cudaDataType::{CUDA_R_16BF, CUDA_R_16F, CUDA_R_32F};
        let s = &self.stream;
        let h = self.blas.as_ref().ok_or_else(|| Error::Internal("no cuBLAS handle".into()))?.0;
        // (weight, activation, beta) products summed into out; the activations' middle third sits
        // right after their high third (kernels/prefill.cu store_split)
        let mid = hi + (rows * w.k * 2) as u64;
        let mut terms: Vec<(u64, u64, f32)> = Vec::with_capacity(3);
        let (a_type, lda) = match w.kind {
            WeightKind::Fp8 => {
                let deq = ptr(&self.pre.as_ref().ok_or_else(|| Error::Internal("prefill buffers".into()))?.deq, s);
                let deq_lo = deq + (w.n * w.k * 2) as u64;
                launch::dequant_fp8(&self.m.gpu, s, &DequantParams { w: w.view(s), hi: deq, lo: deq_lo })?;
                // W·x ≈ Whi·(xhi + xmid) + Wlo·xhi: the dropped terms are ≤ 2^-16 of the product
                terms.extend([(deq, hi, beta), (deq, mid, 1.0), (deq_lo, hi, 1.0)]);
                (CUDA_R_16BF, w.k)
            }
            WeightKind::F32 => {
                terms.push((w.view(s).data, hi, beta));
                (CUDA_R_32F, w.row_stride)
            }
            kind => {
                terms.extend([(w.view(s).data, hi, beta), (w.view(s).data, mid, 1.0), (w.view(s).data, lo, 1.0)]);
                (if kind == WeightKind::F16 { CUDA_R_16F } else { CUDA_R_16BF }, w.row_stride)
            }
        };
        let one = 1.0f32;
        // SAFETY: the handle is this session's; pointers are live device allocations of the sizes
        // the dimensions imply (W (n, lda), activations (rows, k), out (rows, n)).
        unsafe {
            cudarc::cublas::result::set_stream(h, s.cu_stream() as _).map_err(|e| cuda_err("cublasSetStream", e))?;
            for &(a, x, b) in &terms {
                cudarc::cublas::result::gemm_ex(
                    h,
                    blas::cublasOperation_t::CUBLAS_OP_T,
                    blas::cublasOperation_t::CUBLAS_OP_N,
                    w.n as i32,
                    rows as i32,
                    w.k as i32,
                    &one as *const f32 as *const _,
                    a as *const _,
                    a_type,
                    lda as i32,
                    x as *const _,
                    a_type,
                    w.k as i32,
                    &b as *const f32 as *const _,
                    out as *mut _,
                    CUDA_R_32F,
                    w.n as i32,
                    blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
                .map_err(|e| cuda_err("cublasGemmEx", e))?;
            }
        }
        Ok(())
    }
}

/// The activation split a weight kind's GEMM takes.
fn split_for(kind: WeightKind) -> Split {
    match kind {
        WeightKind::Fp8 | WeightKind::Bf16 => Split::Bf16,
        WeightKind::F16 => Split::F16,
        WeightKind::F32 => Split::F32,
    }
}
