//! Llama weights and the forward pass of one token on the CPU backend.
//! Weights stay zero-copy views of the memory-mapped checkpoint (HF layout [out, in]).
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::ops::{self, AttnShape};
use crate::safetensors::Checkpoint;
use crate::tensor::TensorView;

pub struct Layer {
    attn_norm: Vec<f32>, // (hidden)
    wq: TensorView,      // (q_dim, hidden)
    wk: TensorView,      // (kv_dim, hidden)
    wv: TensorView,      // (kv_dim, hidden)
    wo: TensorView,      // (hidden, q_dim)
    mlp_norm: Vec<f32>,  // (hidden)
    w_gate: TensorView,  // (intermediate, hidden)
    w_up: TensorView,    // (intermediate, hidden)
    w_down: TensorView,  // (hidden, intermediate)
}

pub struct Model {
    pub config: ModelConfig,
    embed: TensorView, // (vocab, hidden)
    layers: Vec<Layer>,
    norm: Vec<f32>,      // (hidden)
    lm_head: TensorView, // (vocab, hidden); embed_tokens when tied
    inv_freq: Vec<f32>,  // (head_dim / 2) RoPE inverse frequencies, scaling applied
}

/// Every buffer one forward step needs, allocated once per generation.
pub struct Scratch {
    x: Vec<f32>,        // (hidden) residual stream
    xb: Vec<f32>,       // (hidden) normed input / block output
    q: Vec<f32>,        // (q_dim)
    attn: Vec<f32>,     // (q_dim) attention output
    scores: Vec<f32>,   // (n_heads, max_seq)
    gate: Vec<f32>,     // (intermediate)
    up: Vec<f32>,       // (intermediate)
    cos: Vec<f32>,      // (head_dim / 2)
    sin: Vec<f32>,      // (head_dim / 2)
    pub logits: Vec<f32>, // (vocab)
}

impl Scratch {
    pub fn new(cfg: &ModelConfig, max_seq: usize) -> Self {
        let half = cfg.head_dim / 2;
        Scratch {
            x: vec![0.0; cfg.hidden_size],
            xb: vec![0.0; cfg.hidden_size],
            q: vec![0.0; cfg.q_dim()],
            attn: vec![0.0; cfg.q_dim()],
            scores: vec![0.0; cfg.num_attention_heads * max_seq],
            gate: vec![0.0; cfg.intermediate_size],
            up: vec![0.0; cfg.intermediate_size],
            cos: vec![0.0; half],
            sin: vec![0.0; half],
            logits: vec![0.0; cfg.vocab_size],
        }
    }
}

fn norm_weight(ckpt: &Checkpoint, name: &str, n: usize) -> Result<Vec<f32>> {
    Ok(ckpt.get_shaped(name, &[n])?.to_f32_vec())
}

impl Model {
    /// Binds every tensor the config implies, checking its shape. `config.num_hidden_layers`
    /// may be lower than the checkpoint's (the `num_layers` load option): only those blocks load.
    pub fn new(ckpt: &Checkpoint, config: ModelConfig) -> Result<Self> {
        let (h, q, kv, inter, vocab) =
            (config.hidden_size, config.q_dim(), config.kv_dim(), config.intermediate_size, config.vocab_size);
        let embed = ckpt.get_shaped("model.embed_tokens.weight", &[vocab, h])?.clone();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let w = |name: &str, shape: &[usize]| ckpt.get_shaped(&format!("{p}.{name}"), shape).cloned();
            layers.push(Layer {
                attn_norm: norm_weight(ckpt, &format!("{p}.input_layernorm.weight"), h)?,
                wq: w("self_attn.q_proj.weight", &[q, h])?,
                wk: w("self_attn.k_proj.weight", &[kv, h])?,
                wv: w("self_attn.v_proj.weight", &[kv, h])?,
                wo: w("self_attn.o_proj.weight", &[h, q])?,
                mlp_norm: norm_weight(ckpt, &format!("{p}.post_attention_layernorm.weight"), h)?,
                w_gate: w("mlp.gate_proj.weight", &[inter, h])?,
                w_up: w("mlp.up_proj.weight", &[inter, h])?,
                w_down: w("mlp.down_proj.weight", &[h, inter])?,
            });
        }
        let norm = norm_weight(ckpt, "model.norm.weight", h)?;
        let lm_head = if config.tie_word_embeddings || !ckpt.contains("lm_head.weight") {
            embed.clone()
        } else {
            ckpt.get_shaped("lm_head.weight", &[vocab, h])?.clone()
        };
        let inv_freq = ops::rope_inv_freq(&config);
        Ok(Model { config, embed, layers, norm, lm_head, inv_freq })
    }

    /// Runs `token` at position `pos` through the network, appending its K/V to `kv`;
    /// the next-token logits land in `s.logits`.
    pub fn forward(&self, token: u32, pos: usize, kv: &mut KvCache, s: &mut Scratch) -> Result<()> {
        let c = &self.config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        if token as usize >= c.vocab_size {
            return Err(Error::TokenOutOfRange { id: token, vocab: c.vocab_size });
        }
        if pos >= kv.max_seq {
            return Err(Error::ContextOverflow { needed: pos + 1, max: kv.max_seq });
        }
        let kv_dim = c.kv_dim();
        let shape = AttnShape { n_heads: c.num_attention_heads, n_kv_heads: c.num_key_value_heads, head_dim: hd, max_seq: kv.max_seq };

        // x = embed_tokens[token]
        self.embed.read_f32_into(token as usize * h, &mut s.x);
        ops::rope_cos_sin(&self.inv_freq, pos, &mut s.cos, &mut s.sin);

        for (l, layer) in self.layers.iter().enumerate() {
            let (k_cache, v_cache) = kv.layer_mut(l);
            // attention block: x += o_proj(attn(rope(q), rope(k), v)) of rmsnorm(x)
            ops::rmsnorm(&mut s.xb, &s.x, &layer.attn_norm, c.rms_norm_eps);
            ops::matvec(&layer.wq, &s.xb, &mut s.q);
            let k_row = &mut k_cache[pos * kv_dim..(pos + 1) * kv_dim];
            ops::matvec(&layer.wk, &s.xb, k_row);
            ops::matvec(&layer.wv, &s.xb, &mut v_cache[pos * kv_dim..(pos + 1) * kv_dim]);
            ops::apply_rope(&mut s.q, hd, &s.cos, &s.sin);
            ops::apply_rope(k_row, hd, &s.cos, &s.sin);
            ops::attention(&shape, &s.q, k_cache, v_cache, pos, &mut s.scores, &mut s.attn);
            ops::matvec(&layer.wo, &s.attn, &mut s.xb);
            s.x.iter_mut().zip(&s.xb).for_each(|(x, d)| *x += d);

            // MLP block: x += down(silu(gate(n)) * up(n)), n = rmsnorm(x)
            ops::rmsnorm(&mut s.xb, &s.x, &layer.mlp_norm, c.rms_norm_eps);
            ops::matvec(&layer.w_gate, &s.xb, &mut s.gate);
            ops::matvec(&layer.w_up, &s.xb, &mut s.up);
            s.gate.iter_mut().zip(&s.up).for_each(|(g, u)| *g = ops::silu(*g) * u);
            ops::matvec(&layer.w_down, &s.gate, &mut s.xb);
            s.x.iter_mut().zip(&s.xb).for_each(|(x, d)| *x += d);
        }

        ops::rmsnorm(&mut s.xb, &s.x, &self.norm, c.rms_norm_eps);
        ops::matvec(&self.lm_head, &s.xb, &mut s.logits);
        Ok(())
    }
}
