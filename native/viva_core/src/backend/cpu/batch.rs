//! The batched decode step on the CPU: one token for each of b sequences, every linear run once
//! for all of them (`linear_multi`: the weights stream from memory once per step, not once per
//! sequence); norms, RoPE, KV append and attention per sequence, exactly as `Model::forward`
//! does them. Each sequence's logits are bit for bit the ones `forward` gives it alone (the
//! scheduler's batch invariance; tests/batch_step.rs).
use crate::backend::cpu::linear::linear_multi;
use crate::backend::cpu::model::{Model, Scratch};
use crate::backend::cpu::ops::{self, AttnShape};
use crate::error::{Error, Result};
use crate::kv::rows::put_row;
use crate::kv::{KvDims, SeqKv};

/// One sequence of the step: `token` at position `pos`, its KV blocks and its scratch.
pub struct Row<'a> {
    pub token: u32,
    pub pos: usize,
    pub kv: &'a mut SeqKv,
    pub s: &'a mut Scratch,
}

impl Model {
    /// Runs every row's token through the network together; each row's next-token logits land
    /// in its `s.logits`. The rows' KV blocks must come from one pool (the model's).
    pub fn forward_multi(&self, rows: &mut [Row<'_>]) -> Result<()> {
        super::model::on_pool(|| self.forward_multi_step(rows))
    }

    fn forward_multi_step(&self, rows: &mut [Row<'_>]) -> Result<()> {
        let c = &self.config;
        let b = rows.len();
        let (h, hd, inter, vocab) = (c.hidden_size, c.head_dim, c.intermediate_size, c.vocab_size);
        let (q_dim, kv_dim) = (c.q_dim(), c.kv_dim());
        let qkv_dim = q_dim + 2 * kv_dim;
        let Some(first) = rows.first() else { return Ok(()) };
        for r in rows.iter() {
            if r.token as usize >= vocab {
                return Err(Error::TokenOutOfRange { id: r.token, vocab });
            }
            if r.pos >= r.kv.max_seq {
                return Err(Error::ContextOverflow { needed: r.pos + 1, max: r.kv.max_seq });
            }
            if !r.kv.pool().same(first.kv.pool()) {
                return Err(Error::Internal("a batched step over sequences of different pools".into()));
            }
        }
        // inputs (b, width) and outputs (width, b) of the step's linears
        let xin: &mut [f32] = &mut crate::alloc::try_zeroed(b * h.max(q_dim).max(inter))?;
        let yout: &mut [f32] = &mut crate::alloc::try_zeroed(b * qkv_dim.max(h).max(2 * inter).max(vocab))?;
        let handle = first.kv.pool().clone();
        let mut guard = handle.lock()?;
        SeqKv::check_dims(&guard, c)?;
        for r in rows.iter_mut() {
            r.kv.prepare_write(&mut guard, r.pos, 1)?;
        }
        let (pool, dims) = (&mut *guard, KvDims::of(c));
        let act = self.activations;
        for r in rows.iter_mut() {
            self.embed.row(r.token as usize, &mut r.s.x);
            ops::rope_cos_sin(&self.inv_freq, r.pos, &mut r.s.cos, &mut r.s.sin);
        }
        // y column j → row j's buffer; `f` combines (element of the buffer, value)
        let scatter = |yout: &[f32], j: usize, dst: &mut [f32], f: fn(&mut f32, f32)| {
            for (i, d) in dst.iter_mut().enumerate() {
                f(d, yout[i * b + j]);
            }
        };
        for (l, layer) in self.layers.iter().enumerate() {
            // attention block: x += o_proj(attn(rope(q), rope(k), v)) of rmsnorm(x), per row
            for (j, r) in rows.iter().enumerate() {
                ops::rmsnorm(&mut xin[j * h..(j + 1) * h], &r.s.x, &layer.attn_norm, c.rms_norm_eps);
            }
            linear_multi(&layer.qkv, &xin[..b * h], b, &mut yout[..qkv_dim * b], act);
            for (j, r) in rows.iter_mut().enumerate() {
                let s = &mut *r.s;
                scatter(yout, j, &mut s.qkv, |d, v| *d = v);
                let (q, kv_new) = s.qkv.split_at_mut(q_dim);
                let (k_new, v_new) = kv_new.split_at_mut(kv_dim);
                ops::apply_rope(q, hd, &s.cos, &s.sin);
                ops::apply_rope(k_new, hd, &s.cos, &s.sin);
                let table = r.kv.table();
                if !(put_row(&mut pool.k, table, dims, l, r.pos, k_new) && put_row(&mut pool.v, table, dims, l, r.pos, v_new)) {
                    return Err(super::model::bad_table());
                }
                let (k_cache, v_cache) = super::model::layer_kv(pool, table, l)?;
                ops::attention(&AttnShape::of(c, r.kv.max_seq), q, &k_cache, &v_cache, r.pos, &mut s.scores, &mut s.attn);
                xin[j * q_dim..(j + 1) * q_dim].copy_from_slice(&s.attn);
            }
            linear_multi(&layer.wo, &xin[..b * q_dim], b, &mut yout[..h * b], act);
            for (j, r) in rows.iter_mut().enumerate() {
                scatter(yout, j, &mut r.s.x, |d, v| *d += v);
            }

            // MLP block: x += down(silu(gate(n)) * up(n)), n = rmsnorm(x), per row
            for (j, r) in rows.iter().enumerate() {
                ops::rmsnorm(&mut xin[j * h..(j + 1) * h], &r.s.x, &layer.mlp_norm, c.rms_norm_eps);
            }
            linear_multi(&layer.gate_up, &xin[..b * h], b, &mut yout[..2 * inter * b], act);
            for j in 0..b {
                for i in 0..inter {
                    xin[j * inter + i] = ops::silu(yout[i * b + j]) * yout[(inter + i) * b + j];
                }
            }
            linear_multi(&layer.down, &xin[..b * inter], b, &mut yout[..h * b], act);
            for (j, r) in rows.iter_mut().enumerate() {
                scatter(yout, j, &mut r.s.x, |d, v| *d += v);
            }
        }
        for (j, r) in rows.iter().enumerate() {
            ops::rmsnorm(&mut xin[j * h..(j + 1) * h], &r.s.x, &self.norm, c.rms_norm_eps);
        }
        linear_multi(&self.lm_head, &xin[..b * h], b, &mut yout[..vocab * b], act);
        for (j, r) in rows.iter_mut().enumerate() {
            scatter(yout, j, &mut r.s.logits, |d, v| *d = v);
            r.kv.wrote(pool, r.pos, &[r.token], false);
        }
        Ok(())
    }
}
