//! One generation: its own KV cache, scratch, position, sampler and detokenizer state, so that
//! any number of sessions can run on one shared model at once.
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::model::{Model, Scratch};
use crate::sampling::Sampler;
use crate::tokenizer::{Detokenizer, Tokenizer};

pub struct Session<'m> {
    model: &'m Model,
    kv: KvCache,
    scratch: Scratch,
    pos: usize,
    pub sampler: Sampler,
    pub detok: Detokenizer,
}

impl<'m> Session<'m> {
    /// `max_seq`: positions this session may fill (prompt + new tokens).
    pub fn new(model: &'m Model, max_seq: usize, sampler: Sampler) -> Self {
        Session {
            model,
            kv: KvCache::new(&model.config, max_seq),
            scratch: Scratch::new(&model.config, max_seq),
            pos: 0,
            sampler,
            detok: Detokenizer::new(),
        }
    }

    /// Feeds the prompt; returns the logits after its last token.
    /// Token by token for now (a later issue batches the prompt into GEMMs).
    pub fn prefill(&mut self, ids: &[u32]) -> Result<&[f32]> {
        for &id in ids {
            self.step(id)?;
        }
        Ok(&self.scratch.logits)
    }

    /// Feeds one token at the next position; returns the next-token logits.
    pub fn step(&mut self, id: u32) -> Result<&[f32]> {
        self.model.forward(id, self.pos, &mut self.kv, &mut self.scratch)?;
        self.pos += 1;
        Ok(&self.scratch.logits)
    }

    pub fn sample(&mut self) -> u32 {
        self.sampler.sample(&self.scratch.logits)
    }

    /// The text `id` completes, valid UTF-8 (possibly empty).
    pub fn detokenize(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.detok.push(tok, id)
    }

    pub fn pos(&self) -> usize {
        self.pos
    }
}
