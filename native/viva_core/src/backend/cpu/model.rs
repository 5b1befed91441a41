//! Llama weights and the forward pass of one token on the CPU backend.
//! Linears are held in the load's `WeightFormat` (formats/), HF layout [out, in].
use std::sync::OnceLock;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::backend::cpu::gemm::{linear_batch, GemmBuf};
use crate::kv::rows::{put_row, LayerKv};
use crate::kv::{KvDims, KvPool, SeqKv, SharedPool};
use crate::backend::cpu::linear::linear;
use crate::backend::cpu::ops::{self, AttnShape};
use crate::formats::{Activations, Linear, WeightFormat};
use crate::safetensors::Checkpoint;
use crate::tensor::TensorView;
use crate::weights::Embedding;

pub struct Layer {
    pub attn_norm: Vec<f32>, // (hidden)
    pub qkv: Linear,         // (q_dim + 2·kv_dim, hidden): q_proj, k_proj, v_proj stacked
    pub wo: Linear,          // (hidden, q_dim)
    pub mlp_norm: Vec<f32>,  // (hidden)
    pub gate_up: Linear,     // (2·intermediate, hidden): gate_proj rows, then up_proj rows
    pub down: Linear,        // (hidden, intermediate)
}

pub struct Model {
    pub config: ModelConfig,
    pub format: WeightFormat,
    /// What the CPU linears multiply (the `activations` load option); F32 unless set.
    pub activations: Activations,
    pub embed: Embedding,   // (vocab, hidden)
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,     // (hidden)
    pub lm_head: Linear,    // (vocab, hidden); embed_tokens' weights when tied
    pub inv_freq: Vec<f32>, // (head_dim / 2) RoPE inverse frequencies, scaling applied; once per model
    /// The KV blocks the scheduler's sequences of this model take from (`Llm` sets it at load,
    /// sized by the `kv_cache_bytes` option; only the engine thread forwards on it: see
    /// `Backend::new_seq` in cpu/mod.rs). Other sequences get pools of their own.
    pub kv_pool: OnceLock<SharedPool>,
}

/// Every buffer one forward step needs, allocated once per generation.
pub struct Scratch {
    pub(super) x: Vec<f32>,      // (hidden) residual stream
    xb: Vec<f32>,                // (hidden) normed input / block output
    pub(super) qkv: Vec<f32>,    // (q_dim + 2·kv_dim)
    pub(super) attn: Vec<f32>,   // (q_dim) attention output
    pub(super) scores: Vec<f32>, // attention scratch: scores + partials (ops::attention_scratch_len)
    gate_up: Vec<f32>,           // (2·intermediate)
    pub(super) cos: Vec<f32>,    // (head_dim / 2)
    pub(super) sin: Vec<f32>,    // (head_dim / 2)
    pub logits: Vec<f32>, // (vocab)
}

impl Scratch {
    /// `OutOfMemory` when the attention scratch (sized by `max_seq`) does not fit.
    pub fn new(cfg: &ModelConfig, max_seq: usize) -> Result<Self> {
        let half = cfg.head_dim / 2;
        Ok(Scratch {
            x: vec![0.0; cfg.hidden_size],
            xb: vec![0.0; cfg.hidden_size],
            qkv: vec![0.0; cfg.q_dim() + 2 * cfg.kv_dim()],
            attn: vec![0.0; cfg.q_dim()],
            scores: crate::alloc::try_zeroed(ops::attention_scratch_len(&ops::AttnShape::of(cfg, max_seq)))?,
            gate_up: vec![0.0; 2 * cfg.intermediate_size],
            cos: vec![0.0; half],
            sin: vec![0.0; half],
            logits: vec![0.0; cfg.vocab_size],
        })
    }
}

/// Buffers of the prompt pass over up to `rows` positions at once (allocated per prefill, not
/// per token).
pub struct BatchScratch {
    rows: usize,
    x: Vec<f32>,       // (rows, hidden) residual stream
    xb: Vec<f32>,      // (rows, hidden) normed input / block output
    qkv: Vec<f32>,     // (rows, q_dim + 2·kv_dim)
    attn: Vec<f32>,    // (rows, q_dim)
    gate_up: Vec<f32>, // (rows, 2·intermediate)
    act: Vec<f32>,     // (rows, intermediate) silu(gate)·up
    cos: Vec<f32>,     // (rows, head_dim / 2)
    sin: Vec<f32>,     // (rows, head_dim / 2)
    gemm: GemmBuf,
}

impl BatchScratch {
    pub fn new(cfg: &ModelConfig, rows: usize) -> Self {
        let half = cfg.head_dim / 2;
        BatchScratch {
            rows,
            x: vec![0.0; rows * cfg.hidden_size],
            xb: vec![0.0; rows * cfg.hidden_size],
            qkv: vec![0.0; rows * (cfg.q_dim() + 2 * cfg.kv_dim())],
            attn: vec![0.0; rows * cfg.q_dim()],
            gate_up: vec![0.0; rows * 2 * cfg.intermediate_size],
            act: vec![0.0; rows * cfg.intermediate_size],
            cos: vec![0.0; rows * half],
            sin: vec![0.0; rows * half],
            gemm: GemmBuf::default(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
}

impl Model {
    /// Binds every tensor the config implies, checking its shape. `config.num_hidden_layers`
    /// may be lower than the checkpoint's (the `num_layers` load option): only those blocks load.
    /// `on_layer(i)` runs after block i is bound and packed (load progress).
    pub fn new(ckpt: &Checkpoint, config: ModelConfig, format: WeightFormat, on_layer: &mut dyn FnMut(usize)) -> Result<Self> {
        let t = config.tensors(ckpt);
        let embed_t = t.embed()?;
        let mut layers = crate::alloc::try_with_capacity(config.num_hidden_layers)?;
        let fuse = |parts: &[TensorView]| Linear::fuse(&parts.iter().collect::<Vec<_>>(), format);
        for i in 0..config.num_hidden_layers {
            layers.push(Layer {
                attn_norm: t.attn_norm(i)?,
                qkv: fuse(&t.qkv(i)?)?,
                wo: fuse(&[t.o(i)?])?,
                mlp_norm: t.mlp_norm(i)?,
                gate_up: fuse(&t.gate_up(i)?)?,
                down: fuse(&[t.down(i)?])?,
            });
            on_layer(i);
        }
        let norm = t.final_norm()?;
        let lm_head = fuse(&[t.lm_head(&embed_t)?])?;
        let embed = Embedding::new(&embed_t, format);
        let inv_freq = ops::rope_inv_freq(&config);
        Ok(Model { config, format, activations: Activations::F32, embed, layers, norm, lm_head, inv_freq, kv_pool: OnceLock::new() })
    }

    /// Bytes of weights one decode step reads (every linear once, plus one embedding row).
    pub fn bytes_per_token(&self) -> usize {
        let per_layer: usize = self.layers.iter().map(|l| l.qkv.nbytes() + l.wo.nbytes() + l.gate_up.nbytes() + l.down.nbytes()).sum();
        per_layer + self.lm_head.nbytes()
    }

    /// Runs `token` at position `pos` through the network, appending its K/V to `kv`; returns
    /// the next-token logits (vocab), which live in `s.logits`. No allocation: every buffer is
    /// in `s` or `kv`.
    pub fn forward<'s>(&self, token: u32, pos: usize, kv: &mut SeqKv, s: &'s mut Scratch) -> Result<&'s [f32]> {
        on_pool(|| self.forward_step(token, pos, kv, s))
    }

    fn forward_step<'s>(&self, token: u32, pos: usize, kv: &mut SeqKv, s: &'s mut Scratch) -> Result<&'s [f32]> {
        let c = &self.config;
        let hd = c.head_dim;
        if token as usize >= c.vocab_size {
            return Err(Error::TokenOutOfRange { id: token, vocab: c.vocab_size });
        }
        if pos >= kv.max_seq {
            return Err(Error::ContextOverflow { needed: pos + 1, max: kv.max_seq });
        }
        let kv_dim = c.kv_dim();
        let shape = AttnShape::of(c, kv.max_seq);
        let handle = kv.pool().clone();
        let mut guard = handle.lock()?;
        SeqKv::check_dims(&guard, c)?;
        kv.prepare_write(&mut guard, pos, 1)?;
        let (pool, dims, table) = (&mut *guard, KvDims::of(c), kv.table());

        // x = embed_tokens[token]
        self.embed.row(token as usize, &mut s.x);
        ops::rope_cos_sin(&self.inv_freq, pos, &mut s.cos, &mut s.sin);
        let q_dim = c.q_dim();
        let inter = c.intermediate_size;

        for (l, layer) in self.layers.iter().enumerate() {
            // attention block: x += o_proj(attn(rope(q), rope(k), v)) of rmsnorm(x)
            ops::rmsnorm(&mut s.xb, &s.x, &layer.attn_norm, c.rms_norm_eps);
            linear(&layer.qkv, &s.xb, &mut s.qkv, self.activations);
            let (q, kv_new) = s.qkv.split_at_mut(q_dim);
            let (k_new, v_new) = kv_new.split_at_mut(kv_dim);
            ops::apply_rope(q, hd, &s.cos, &s.sin);
            ops::apply_rope(k_new, hd, &s.cos, &s.sin);
            if !(put_row(&mut pool.k, table, dims, l, pos, k_new) && put_row(&mut pool.v, table, dims, l, pos, v_new)) {
                return Err(bad_table());
            }
            let (k_cache, v_cache) = layer_kv(pool, table, l)?;
            ops::attention(&shape, q, &k_cache, &v_cache, pos, &mut s.scores, &mut s.attn);
            linear(&layer.wo, &s.attn, &mut s.xb, self.activations);
            s.x.iter_mut().zip(&s.xb).for_each(|(x, d)| *x += d);

            // MLP block: x += down(silu(gate(n)) * up(n)), n = rmsnorm(x)
            ops::rmsnorm(&mut s.xb, &s.x, &layer.mlp_norm, c.rms_norm_eps);
            linear(&layer.gate_up, &s.xb, &mut s.gate_up, self.activations);
            let (gate, up) = s.gate_up.split_at_mut(inter);
            gate.iter_mut().zip(up.iter()).for_each(|(g, u)| *g = ops::silu(*g) * u);
            linear(&layer.down, gate, &mut s.xb, self.activations);
            s.x.iter_mut().zip(&s.xb).for_each(|(x, d)| *x += d);
        }

        kv.wrote(pool, pos, &[token], false);
        ops::rmsnorm(&mut s.xb, &s.x, &self.norm, c.rms_norm_eps);
        linear(&self.lm_head, &s.xb, &mut s.logits, self.activations);
        Ok(&s.logits)
    }

    /// The prompt pass: runs `ids` at positions pos0..pos0+m through the network as batched
    /// GEMMs (gemm.rs), appending their K/V to `kv`, and writes the logits after the last one
    /// into `logits` (vocab). Same equations as [`Model::forward`], m rows at a time; every id is
    /// checked before the cache is touched. m ≤ `s.rows()`.
    pub fn forward_batch(&self, ids: &[u32], pos0: usize, kv: &mut SeqKv, s: &mut BatchScratch, logits: &mut [f32]) -> Result<()> {
        on_pool(|| self.forward_batch_step(ids, pos0, kv, s, logits))
    }

    fn forward_batch_step(&self, ids: &[u32], pos0: usize, kv: &mut SeqKv, s: &mut BatchScratch, logits: &mut [f32]) -> Result<()> {
        let c = &self.config;
        let m = ids.len();
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::TokenOutOfRange { id: bad, vocab: c.vocab_size });
        }
        if pos0 + m > kv.max_seq {
            return Err(Error::ContextOverflow { needed: pos0 + m, max: kv.max_seq });
        }
        if m == 0 || m > s.rows {
            return Err(Error::Internal(format!("forward_batch: {m} rows for a scratch of {}", s.rows)));
        }
        let (h, hd, half) = (c.hidden_size, c.head_dim, c.head_dim / 2);
        let (q_dim, kv_dim, inter) = (c.q_dim(), c.kv_dim(), c.intermediate_size);
        let qkv_dim = q_dim + 2 * kv_dim;
        let shape = AttnShape::of(c, kv.max_seq);
        let handle = kv.pool().clone();
        let mut guard = handle.lock()?;
        SeqKv::check_dims(&guard, c)?;
        kv.prepare_write(&mut guard, pos0, m)?;
        let (pool, dims, table) = (&mut *guard, KvDims::of(c), kv.table());
        let (x, xb) = (&mut s.x[..m * h], &mut s.xb[..m * h]);
        let (qkv, attn) = (&mut s.qkv[..m * qkv_dim], &mut s.attn[..m * q_dim]);
        let (gate_up, act) = (&mut s.gate_up[..m * 2 * inter], &mut s.act[..m * inter]);

        // x[i] = embed_tokens[ids[i]]; RoPE angles of every row's position
        for (i, &id) in ids.iter().enumerate() {
            self.embed.row(id as usize, &mut x[i * h..(i + 1) * h]);
            ops::rope_cos_sin(&self.inv_freq, pos0 + i, &mut s.cos[i * half..(i + 1) * half], &mut s.sin[i * half..(i + 1) * half]);
        }
        let norm_rows = |out: &mut [f32], x: &[f32], w: &[f32]| {
            for (o, xi) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                ops::rmsnorm(o, xi, w, c.rms_norm_eps);
            }
        };
        let add_rows = |x: &mut [f32], d: &[f32]| x.iter_mut().zip(d).for_each(|(x, d)| *x += d);

        for (l, layer) in self.layers.iter().enumerate() {
            // attention block: x += o_proj(attn(rope(q), rope(k), v)) of rmsnorm(x), every row
            norm_rows(xb, x, &layer.attn_norm);
            linear_batch(&layer.qkv, xb, m, qkv, &mut s.gemm, self.activations);
            for (i, row) in qkv.chunks_exact_mut(qkv_dim).enumerate() {
                let (cos, sin) = (&s.cos[i * half..(i + 1) * half], &s.sin[i * half..(i + 1) * half]);
                let (q, kv_new) = row.split_at_mut(q_dim);
                ops::apply_rope(q, hd, cos, sin);
                ops::apply_rope(&mut kv_new[..kv_dim], hd, cos, sin);
                let (k_new, v_new) = kv_new.split_at(kv_dim);
                if !(put_row(&mut pool.k, table, dims, l, pos0 + i, k_new) && put_row(&mut pool.v, table, dims, l, pos0 + i, v_new)) {
                    return Err(bad_table());
                }
            }
            let (k_cache, v_cache) = layer_kv(pool, table, l)?;
            ops::attention_rows(&shape, qkv, qkv_dim, &k_cache, &v_cache, pos0, attn);
            linear_batch(&layer.wo, attn, m, xb, &mut s.gemm, self.activations);
            add_rows(x, xb);

            // MLP block: x += down(silu(gate(n)) * up(n)), n = rmsnorm(x), every row
            norm_rows(xb, x, &layer.mlp_norm);
            linear_batch(&layer.gate_up, xb, m, gate_up, &mut s.gemm, self.activations);
            for (a, gu) in act.chunks_exact_mut(inter).zip(gate_up.chunks_exact(2 * inter)) {
                let (g, u) = gu.split_at(inter);
                for ((a, &g), &u) in a.iter_mut().zip(g).zip(u) {
                    *a = ops::silu(g) * u;
                }
            }
            linear_batch(&layer.down, act, m, xb, &mut s.gemm, self.activations);
            add_rows(x, xb);
        }

        kv.wrote(pool, pos0, ids, true);
        // only the last row's logits are needed: one GEMV
        let last = &x[(m - 1) * h..];
        ops::rmsnorm(&mut xb[..h], last, &self.norm, c.rms_norm_eps);
        linear(&self.lm_head, &xb[..h], logits, self.activations);
        Ok(())
    }
}

/// Layer `l`'s K and V rows of the sequence with block table `table`.
pub(super) fn layer_kv<'a>(pool: &'a KvPool, table: &'a [u32], l: usize) -> Result<(LayerKv<'a>, LayerKv<'a>)> {
    match (LayerKv::new(&pool.k, table, pool.dims, l), LayerKv::new(&pool.v, table, pool.dims, l)) {
        (Some(k), Some(v)) => Ok((k, v)),
        _ => Err(bad_table()),
    }
}

pub(super) fn bad_table() -> Error {
    Error::Internal("a block table entry outside its kv pool".into())
}

/// Runs `f` (one forward pass) on a worker of the rayon pool. A decode step runs ~90 parallel
/// loops (every linear and attention): started on a worker, each goes to that worker's own
/// queue, where its peers, still spinning from the last loop, pick it up; started from outside
/// the pool (a dirty scheduler, the caller's thread), each would be injected and the caller
/// parked and woken again. Measured on 2 cores, bf16 TinyLlama decode: +4.5 % (median of 8
/// alternating rounds).
pub(super) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
