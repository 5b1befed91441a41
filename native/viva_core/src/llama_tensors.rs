//! The tensors of a Llama-family checkpoint, bound by their HF names with shapes checked: what
//! every backend builds its weights from (the CPU `Model`, the GPU `CudaModel`). Views are
//! zero-copy; GGUF block tensors are dequantized when asked for, so callers ask for one linear's
//! parts at a time and drop them before the next.
use crate::config::ModelConfig;
use crate::error::Result;
use crate::safetensors::Checkpoint;
use crate::tensor::TensorView;

pub struct LlamaTensors<'a> {
    pub ckpt: &'a Checkpoint,
    pub config: &'a ModelConfig,
}

impl LlamaTensors<'_> {
    fn layer(&self, l: usize, name: &str, shape: &[usize]) -> Result<TensorView> {
        self.ckpt.get_shaped(&format!("model.layers.{l}.{name}"), shape)
    }

    /// `model.embed_tokens.weight` (vocab, hidden).
    pub fn embed(&self) -> Result<TensorView> {
        self.ckpt.get_shaped("model.embed_tokens.weight", &[self.config.vocab_size, self.config.hidden_size])
    }

    /// `lm_head.weight` (vocab, hidden), or `embed` when tied (or absent).
    pub fn lm_head(&self, embed: &TensorView) -> Result<TensorView> {
        if self.config.tie_word_embeddings || !self.ckpt.contains("lm_head.weight") {
            return Ok(embed.clone());
        }
        self.ckpt.get_shaped("lm_head.weight", &[self.config.vocab_size, self.config.hidden_size])
    }

    /// `model.norm.weight` (hidden) as f32.
    pub fn final_norm(&self) -> Result<Vec<f32>> {
        Ok(self.ckpt.get_shaped("model.norm.weight", &[self.config.hidden_size])?.to_f32_vec())
    }

    /// Layer `l`'s `input_layernorm` (hidden) as f32.
    pub fn attn_norm(&self, l: usize) -> Result<Vec<f32>> {
        Ok(self.layer(l, "input_layernorm.weight", &[self.config.hidden_size])?.to_f32_vec())
    }

    /// Layer `l`'s `post_attention_layernorm` (hidden) as f32.
    pub fn mlp_norm(&self, l: usize) -> Result<Vec<f32>> {
        Ok(self.layer(l, "post_attention_layernorm.weight", &[self.config.hidden_size])?.to_f32_vec())
    }

    /// q_proj (q_dim, hidden), k_proj, v_proj (kv_dim, hidden): fused in this order.
    pub fn qkv(&self, l: usize) -> Result<[TensorView; 3]> {
        let (h, q, kv) = (self.config.hidden_size, self.config.q_dim(), self.config.kv_dim());
        Ok([
            self.layer(l, "self_attn.q_proj.weight", &[q, h])?,
            self.layer(l, "self_attn.k_proj.weight", &[kv, h])?,
            self.layer(l, "self_attn.v_proj.weight", &[kv, h])?,
        ])
    }

    /// o_proj (hidden, q_dim).
    pub fn o(&self, l: usize) -> Result<TensorView> {
        self.layer(l, "self_attn.o_proj.weight", &[self.config.hidden_size, self.config.q_dim()])
    }

    /// gate_proj then up_proj (intermediate, hidden): fused in this order.
    pub fn gate_up(&self, l: usize) -> Result<[TensorView; 2]> {
        let (h, inter) = (self.config.hidden_size, self.config.intermediate_size);
        Ok([self.layer(l, "mlp.gate_proj.weight", &[inter, h])?, self.layer(l, "mlp.up_proj.weight", &[inter, h])?])
    }

    /// down_proj (hidden, intermediate).
    pub fn down(&self, l: usize) -> Result<TensorView> {
        self.layer(l, "mlp.down_proj.weight", &[self.config.hidden_size, self.config.intermediate_size])
    }
}
