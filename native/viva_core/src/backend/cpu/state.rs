//! Decoding state. `DecodeState` is one sequence's KV cache + scratch + filled length: the
//! CPU backend's sequence (backend/cpu), also stepped by the low-level decode_step NIFs, so
//! the two paths run the same code and give the same tokens.
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::backend::cpu::batch::Row;
use crate::kv::{KvDims, SeqKv, SharedPool};
use crate::backend::cpu::model::{BatchScratch, Model, Scratch};

pub struct DecodeState {
    /// The config the buffers were sized for; stepping with another model's weights is refused.
    config: ModelConfig,
    kv: SeqKv,
    scratch: Scratch,
    /// Positions 0..filled hold valid K/V.
    filled: usize,
}

impl DecodeState {
    /// Room for `max_seq` positions; `OutOfMemory` when they do not fit, `ContextOverflow`
    /// past any model's context (the buffer sizes cannot overflow below that).
    pub fn new(model: &Model, max_seq: usize) -> Result<Self> {
        Self::with_kv(model, max_seq, None)
    }

    /// `with_kv` from `pool` for a sequence about to be fed `prompt`: the cached blocks holding a
    /// prefix of it are taken (prefix sharing) and count as filled; returns how many positions.
    pub fn with_prefix(model: &Model, max_seq: usize, pool: &SharedPool, prompt: &[u32]) -> Result<(Self, usize)> {
        check_max_seq(max_seq)?;
        let (kv, found) = SeqKv::with_prefix(pool, max_seq, prompt)?;
        let scratch = Scratch::new(&model.config, max_seq)?;
        Ok((DecodeState { config: model.config.clone(), kv, scratch, filled: found }, found))
    }

    /// `new` with the KV blocks from `pool` (the model's shared pool); `OutOfMemory` while it
    /// has too few free blocks. Without a pool, a pool of its own.
    pub fn with_kv(model: &Model, max_seq: usize, pool: Option<&SharedPool>) -> Result<Self> {
        check_max_seq(max_seq)?;
        let kv = match pool {
            Some(p) => SeqKv::new(p, max_seq)?,
            None => SeqKv::private(KvDims::of(&model.config), max_seq)?,
        };
        Ok(DecodeState { config: model.config.clone(), kv, scratch: Scratch::new(&model.config, max_seq)?, filled: 0 })
    }

    pub fn max_seq(&self) -> usize {
        self.kv.max_seq
    }

    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Runs `id` at position `pos` (≤ filled: stepping back rewrites the cache from there) and
    /// returns the next-token logits (vocab).
    pub fn step_at(&mut self, model: &Model, id: u32, pos: usize) -> Result<&[f32]> {
        self.check_model(model)?;
        if pos > self.filled {
            return Err(Error::InvalidOption { key: "pos".into(), value: format!("{pos} (filled up to {})", self.filled) });
        }
        model.forward(id, pos, &mut self.kv, &mut self.scratch)?;
        self.filled = pos + 1;
        Ok(&self.scratch.logits)
    }

    /// `prefill` from position `pos` (≤ filled: feeding back rewrites the cache from there), the
    /// path generate takes for a prompt; returns the logits after the last of `ids`.
    pub fn prefill_at(&mut self, model: &Model, ids: &[u32], pos: usize) -> Result<&[f32]> {
        if pos > self.filled {
            return Err(Error::InvalidOption { key: "pos".into(), value: format!("{pos} (filled up to {})", self.filled) });
        }
        self.check_model(model)?;
        if pos + ids.len() > self.kv.max_seq {
            return Err(Error::ContextOverflow { needed: pos + ids.len(), max: self.kv.max_seq });
        }
        self.filled = pos;
        self.prefill(model, ids)
    }

    /// One decode step for each (sequence, token), at each sequence's next position: two or
    /// more sequences of one pool go through `Model::forward_multi` (the weights read once for
    /// all), others one by one; the same logits either way.
    pub fn step_many(model: &Model, batch: &mut [(&mut DecodeState, u32)]) -> Result<()> {
        for (s, _) in batch.iter() {
            s.check_model(model)?;
        }
        let one_pool = batch.windows(2).all(|w| w[0].0.kv.pool().same(w[1].0.kv.pool()));
        if batch.len() < 2 || !one_pool {
            for (s, id) in batch.iter_mut() {
                let pos = s.filled;
                s.step_at(model, *id, pos)?;
            }
            return Ok(());
        }
        let mut rows: Vec<Row<'_>> = crate::alloc::try_with_capacity(batch.len())?;
        for (s, id) in batch.iter_mut() {
            let s = &mut **s;
            rows.push(Row { token: *id, pos: s.filled, kv: &mut s.kv, s: &mut s.scratch });
        }
        model.forward_multi(&mut rows)?;
        drop(rows);
        for (s, _) in batch.iter_mut() {
            s.filled += 1;
        }
        Ok(())
    }

    pub fn logits(&self) -> &[f32] {
        &self.scratch.logits
    }

    /// Stepping with another model's weights is refused.
    fn check_model(&self, model: &Model) -> Result<()> {
        if model.config != self.config {
            return Err(Error::InvalidOption { key: "kv_cache".into(), value: "sized for another model".into() });
        }
        Ok(())
    }

    /// Feeds `ids` at the next positions as batched GEMMs (`PREFILL_ROWS` at a time) and returns
    /// the logits after the last one (vocab); the same cache contents and logits as stepping them
    /// one by one, up to summation order (and the opt-in bf16 fp8 GEMM's roundings: gemm.rs).
    pub fn prefill(&mut self, model: &Model, ids: &[u32]) -> Result<&[f32]> {
        self.check_model(model)?;
        if self.filled + ids.len() > self.kv.max_seq {
            return Err(Error::ContextOverflow { needed: self.filled + ids.len(), max: self.kv.max_seq });
        }
        if ids.is_empty() {
            return Ok(&self.scratch.logits);
        }
        let mut batch = BatchScratch::new(&self.config, ids.len().min(PREFILL_ROWS));
        for chunk in ids.chunks(PREFILL_ROWS) {
            model.forward_batch(chunk, self.filled, &mut self.kv, &mut batch, &mut self.scratch.logits)?;
            self.filled += chunk.len();
        }
        Ok(&self.scratch.logits)
    }
}

/// Prompt positions per batched forward: large enough that each weight band is expanded once
/// for many tokens, small enough to bound the pass's buffers (~40 MB for a 1B model).
pub const PREFILL_ROWS: usize = 256;

/// `ContextOverflow` past any model's context (the buffer sizes cannot overflow below that).
fn check_max_seq(max_seq: usize) -> Result<()> {
    let max = crate::config::MAX_POSITION_EMBEDDINGS;
    if max_seq > max {
        return Err(Error::ContextOverflow { needed: max_seq, max });
    }
    Ok(())
}
