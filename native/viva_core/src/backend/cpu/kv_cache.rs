//! Per-generation KV cache, preallocated for the generation's whole length.
//!
//! Layout (layers, n_kv_heads, max_seq, head_dim), head-major: decode attention reads one KV
//! head's positions as one contiguous stream. Position-major rows (max_seq, kv_heads · head_dim)
//! made each KV group read 1 of every n_kv_heads row segments, and the hardware prefetchers'
//! over-fetch held a 2000-position TinyLlama step's attention to ~27% of the read bandwidth.
use crate::config::ModelConfig;
use crate::error::Result;

pub struct KvCache {
    /// (layers, n_kv_heads, max_seq, head_dim)
    pub k: Vec<f32>,
    /// (layers, n_kv_heads, max_seq, head_dim)
    pub v: Vec<f32>,
    pub max_seq: usize,
    kv_dim: usize,
}

impl KvCache {
    /// Room for `max_seq` positions: prompt + new tokens, not the model's whole context.
    /// `OutOfMemory` when it does not fit (sized by a request: never an abort).
    pub fn new(cfg: &ModelConfig, max_seq: usize) -> Result<Self> {
        let kv_dim = cfg.kv_dim();
        let n = crate::alloc::checked_len(&[cfg.num_hidden_layers, max_seq, kv_dim])?;
        Ok(KvCache { k: crate::alloc::try_zeroed(n)?, v: crate::alloc::try_zeroed(n)?, max_seq, kv_dim })
    }

    /// (n_kv_heads, max_seq, head_dim) slices of layer `l`: (k, v).
    pub fn layer_mut(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        let span = self.max_seq * self.kv_dim;
        (&mut self.k[l * span..(l + 1) * span], &mut self.v[l * span..(l + 1) * span])
    }
}

/// Writes one position's K or V row (`row`: n_kv_heads · head_dim, heads in order) into a
/// layer's (n_kv_heads, max_seq, head_dim) slice at `pos`.
pub fn put_row(layer: &mut [f32], max_seq: usize, head_dim: usize, pos: usize, row: &[f32]) {
    for (h, src) in row.chunks_exact(head_dim).enumerate() {
        let at = (h * max_seq + pos) * head_dim;
        layer[at..at + head_dim].copy_from_slice(src);
    }
}
