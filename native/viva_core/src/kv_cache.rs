//! Per-generation KV cache, preallocated for the generation's whole length.
use crate::config::ModelConfig;

pub struct KvCache {
    /// (layers, max_seq, n_kv_heads * head_dim)
    pub k: Vec<f32>,
    /// (layers, max_seq, n_kv_heads * head_dim)
    pub v: Vec<f32>,
    pub max_seq: usize,
    kv_dim: usize,
}

impl KvCache {
    /// Room for `max_seq` positions: prompt + new tokens, not the model's whole context.
    pub fn new(cfg: &ModelConfig, max_seq: usize) -> Self {
        let kv_dim = cfg.kv_dim();
        let n = cfg.num_hidden_layers * max_seq * kv_dim;
        KvCache { k: vec![0.0; n], v: vec![0.0; n], max_seq, kv_dim }
    }

    /// (max_seq, kv_dim) slices of layer `l`: (k, v).
    pub fn layer_mut(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        let span = self.max_seq * self.kv_dim;
        (&mut self.k[l * span..(l + 1) * span], &mut self.v[l * span..(l + 1) * span])
    }
}
