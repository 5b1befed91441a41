//! The tensors of a Llama-family checkpoint, bound by their HF names with shapes checked: what
//! every backend builds its weights from (the CPU `Model`, the GPU `CudaModel`), and the one
//! list of a layer's tensors ([`layer_tensors`]) that `ModelConfig::check_tensors` checks too.
//! Views are zero-copy; GGUF block tensors are dequantized when asked for, so callers ask for
//! one linear's parts at a time and drop them before the next. Build it with
//! `ModelConfig::tensors` (this file does not depend on the config).
use crate::error::Result;
use crate::safetensors::Checkpoint;
use crate::tensor::TensorView;

/// The dimensions the tensors' shapes follow (from the `ModelConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub hidden: usize,
    /// heads · head_dim
    pub q: usize,
    /// kv heads · head_dim
    pub kv: usize,
    pub inter: usize,
    pub vocab: usize,
}

/// Indexes into [`layer_tensors`].
const ATTN_NORM: usize = 0;
const Q_PROJ: usize = 1;
const K_PROJ: usize = 2;
const V_PROJ: usize = 3;
const O_PROJ: usize = 4;
const MLP_NORM: usize = 5;
const GATE_PROJ: usize = 6;
const UP_PROJ: usize = 7;
const DOWN_PROJ: usize = 8;

/// The tensors of block `layer` (HF names) with the shapes `d` implies.
pub fn layer_tensors(layer: usize, d: &Dims) -> [(String, Vec<usize>); 9] {
    let (h, q, kv, inter) = (d.hidden, d.q, d.kv, d.inter);
    let p = format!("model.layers.{layer}");
    [
        (format!("{p}.input_layernorm.weight"), vec![h]),
        (format!("{p}.self_attn.q_proj.weight"), vec![q, h]),
        (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
        (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
        (format!("{p}.self_attn.o_proj.weight"), vec![h, q]),
        (format!("{p}.post_attention_layernorm.weight"), vec![h]),
        (format!("{p}.mlp.gate_proj.weight"), vec![inter, h]),
        (format!("{p}.mlp.up_proj.weight"), vec![inter, h]),
        (format!("{p}.mlp.down_proj.weight"), vec![h, inter]),
    ]
}

pub struct LlamaTensors<'a> {
    pub ckpt: &'a Checkpoint,
    pub dims: Dims,
    /// lm_head is embed_tokens (`tie_word_embeddings`).
    pub tied: bool,
}

impl LlamaTensors<'_> {
    /// Tensors `ids` of layer `l` (indexes into [`layer_tensors`]), shapes checked.
    fn layer<const N: usize>(&self, l: usize, ids: [usize; N]) -> Result<[TensorView; N]> {
        let all = layer_tensors(l, &self.dims);
        let mut out = Vec::with_capacity(N);
        for i in ids {
            let (name, shape) = &all[i];
            out.push(self.ckpt.get_shaped(name, shape)?);
        }
        out.try_into().map_err(|_| crate::error::Error::Internal("layer tensor count".into()))
    }

    fn one(&self, l: usize, id: usize) -> Result<TensorView> {
        let [t] = self.layer(l, [id])?;
        Ok(t)
    }

    /// `model.embed_tokens.weight` (vocab, hidden).
    pub fn embed(&self) -> Result<TensorView> {
        self.ckpt.get_shaped("model.embed_tokens.weight", &[self.dims.vocab, self.dims.hidden])
    }

    /// `lm_head.weight` (vocab, hidden), or `embed` when tied (or absent).
    pub fn lm_head(&self, embed: &TensorView) -> Result<TensorView> {
        if self.tied || !self.ckpt.contains("lm_head.weight") {
            return Ok(embed.clone());
        }
        self.ckpt.get_shaped("lm_head.weight", &[self.dims.vocab, self.dims.hidden])
    }

    /// `model.norm.weight` (hidden) as f32.
    pub fn final_norm(&self) -> Result<Vec<f32>> {
        Ok(self.ckpt.get_shaped("model.norm.weight", &[self.dims.hidden])?.to_f32_vec())
    }

    /// Layer `l`'s `input_layernorm` (hidden) as f32.
    pub fn attn_norm(&self, l: usize) -> Result<Vec<f32>> {
        Ok(self.one(l, ATTN_NORM)?.to_f32_vec())
    }

    /// Layer `l`'s `post_attention_layernorm` (hidden) as f32.
    pub fn mlp_norm(&self, l: usize) -> Result<Vec<f32>> {
        Ok(self.one(l, MLP_NORM)?.to_f32_vec())
    }

    /// q_proj (q_dim, hidden), k_proj, v_proj (kv_dim, hidden): fused in this order.
    pub fn qkv(&self, l: usize) -> Result<[TensorView; 3]> {
        self.layer(l, [Q_PROJ, K_PROJ, V_PROJ])
    }

    /// o_proj (hidden, q_dim).
    pub fn o(&self, l: usize) -> Result<TensorView> {
        self.one(l, O_PROJ)
    }

    /// gate_proj then up_proj (intermediate, hidden): fused in this order.
    pub fn gate_up(&self, l: usize) -> Result<[TensorView; 2]> {
        self.layer(l, [GATE_PROJ, UP_PROJ])
    }

    /// down_proj (hidden, intermediate).
    pub fn down(&self, l: usize) -> Result<TensorView> {
        self.one(l, DOWN_PROJ)
    }
}
