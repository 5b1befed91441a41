//! The CPU backend: a sequence is a `DecodeState` (KV cache + scratch) stepped with the host
//! `Model`'s forward pass.
pub mod attn;
pub mod batch;
pub mod gemm;
pub mod linear;
pub mod model;
pub mod ops;
pub mod par;
pub mod simd;
pub mod state;

use super::Backend;
use crate::error::Result;
use crate::backend::cpu::model::Model;
use crate::sampling::{argmax, top_k_into, Sampler, MAX_TOP_K};
use crate::backend::cpu::state::DecodeState;

impl<'m> Backend for &'m Model {
    type Seq = DecodeState;

    fn name(self) -> &'static str {
        "cpu"
    }

    /// A pool of its own: the model's shared pool is the scheduler's (`new_seq_for`). A forward
    /// holds its pool's lock across rayon work, and a pool worker waiting in a parallel loop may
    /// pick up another forward; two threads forwarding on one pool could then wait on each other.
    /// The scheduler's one engine thread is the only one that forwards on the shared pool.
    fn new_seq(self, max_seq: usize) -> Result<DecodeState> {
        DecodeState::new(self, max_seq)
    }

    fn new_seq_for(self, max_seq: usize, prompt: &[u32]) -> Result<(DecodeState, usize)> {
        match self.kv_pool.get() {
            Some(pool) => DecodeState::with_prefix(self, max_seq, pool, prompt),
            None => Ok((DecodeState::new(self, max_seq)?, 0)),
        }
    }

    fn filled(self, seq: &DecodeState) -> usize {
        seq.filled()
    }

    fn prefill(self, seq: &mut DecodeState, ids: &[u32]) -> Result<()> {
        seq.prefill(self, ids).map(|_| ())
    }

    fn step(self, batch: &mut [(&mut DecodeState, u32)]) -> Result<()> {
        DecodeState::step_many(self, batch)
    }

    fn logits(self, seq: &mut DecodeState) -> Result<Vec<f32>> {
        Ok(seq.logits().to_vec())
    }

    fn argmax(self, seq: &mut DecodeState) -> Result<u32> {
        Ok(argmax(seq.logits()))
    }

    fn top_k(self, seq: &mut DecodeState, k: usize) -> Result<Vec<(u32, f32)>> {
        let mut cand = Vec::with_capacity(MAX_TOP_K);
        top_k_into(seq.logits(), k.clamp(1, MAX_TOP_K), &mut cand);
        Ok(cand)
    }

    /// The sampler over the full logits (no candidate copy per token).
    fn sample(self, seq: &mut DecodeState, sampler: &mut Sampler) -> Result<u32> {
        Ok(sampler.sample(seq.logits()))
    }
}
