//! Model hyper-parameters. Read from HF `config.json` (key names verbatim, defaults as
//! transformers' `LlamaConfig`), or inferred from tensor shapes when there is no
//! config.json (TinyLlama-compatible defaults), then `generation_config.json`'s ids.
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::llama_tensors::{layer_tensors, Dims, LlamaTensors};
use crate::safetensors::Checkpoint;

pub const CONFIG_FILE: &str = "config.json";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

// transformers `LlamaConfig` defaults for keys a config.json may leave out.
const HF_RMS_NORM_EPS: f32 = 1e-6;
const HF_ROPE_THETA: f32 = 10_000.0;
const HF_MAX_POSITION_EMBEDDINGS: usize = 2048;
const HF_BOS: u32 = 1;
const HF_EOS: u32 = 2;
/// No tensor bounds the context length, and the KV cache of a generation is sized by it
/// (prompt + max_new_tokens ≤ it): above this a config is refused. Llama 3.1 has 131072;
/// this is ×128 that.
pub const MAX_POSITION_EMBEDDINGS: usize = 1 << 24;
// TinyLlama-1.1B values, used when there is no config.json at all.
const TINYLLAMA_HEAD_DIM: usize = 64;
const TINYLLAMA_RMS_NORM_EPS: f32 = 1e-5;

/// RoPE frequency scaling (`rope_scaling` / `rope_parameters` "rope_type").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: inv_freq[i] = theta^(-2i/head_dim).
    Default,
    /// Llama 3.1 wavelength-dependent scaling of inv_freq.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these (config.json's, replaced by generation_config.json's).
    pub eos_token_ids: Vec<u32>,
}

/// Typed access to a JSON object; every error names the file and the key.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    file: &'a Path,
    prefix: &'a str,
}

impl<'a> Obj<'a> {
    fn bad(&self, key: &str, what: &str) -> Error {
        Error::bad_format(self.file, format!("{}{key}: {what}", self.prefix))
    }

    /// The value of `key`, with JSON null treated as absent (HF writes nulls for unset fields).
    fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.bad(key, &format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn usize_req(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| self.bad(key, "missing"))
    }

    fn u32_opt(&self, key: &str) -> Result<Option<u32>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => token_id(v).map(Some).ok_or_else(|| self.bad(key, &format!("expected a token id, got {v}"))),
        }
    }

    /// Integers are accepted too (`"rope_theta": 500000`).
    fn f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(|x| Some(x as f32)).ok_or_else(|| self.bad(key, &format!("expected a number, got {v}"))),
        }
    }

    fn f32_req(&self, key: &str) -> Result<f32> {
        self.f32_opt(key)?.ok_or_else(|| self.bad(key, "missing"))
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.bad(key, &format!("expected true or false, got {v}"))),
        }
    }

    fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.bad(key, &format!("expected a string, got {v}"))),
        }
    }

    fn obj_opt(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_object().map(Some).ok_or_else(|| self.bad(key, &format!("expected an object, got {v}"))),
        }
    }

    /// An id or a list of ids (eos_token_id); `None` when absent or null.
    fn ids_opt(&self, key: &str) -> Result<Option<Vec<u32>>> {
        let ids = match self.raw(key) {
            None => return Ok(None),
            Some(Value::Array(a)) => a.iter().map(token_id).collect::<Option<Vec<u32>>>(),
            Some(v) => token_id(v).map(|id| vec![id]),
        };
        ids.map(|v| Some(dedup(v))).ok_or_else(|| self.bad(key, "expected a token id or a list of token ids"))
    }
}

fn token_id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Removes repeats, keeping first-seen order.
fn dedup(ids: Vec<u32>) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::with_capacity(ids.len());
    for id in ids {
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

fn parse_object<'a>(json: &'a Value, file: &'a Path) -> Result<Obj<'a>> {
    let map = json.as_object().ok_or_else(|| Error::bad_format(file, "top level is not a JSON object"))?;
    Ok(Obj { map, file, prefix: "" })
}

fn read_text(path: &Path) -> Result<String> {
    crate::alloc::read_text(path, crate::alloc::MAX_SMALL_JSON)
}

fn parse_json(text: &str, file: &Path) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| Error::bad_format(file, format!("not JSON: {e}")))
}

/// RoPE settings from either spelling: transformers 5 writes
/// `"rope_parameters": {"rope_type", "rope_theta", ..}`, older files write top-level
/// `"rope_theta"` + `"rope_scaling": {"rope_type" | "type", ..}` (or null).
fn parse_rope(cfg: &Obj, max_position_embeddings: usize) -> Result<(f32, RopeScaling)> {
    let top_theta = cfg.f32_opt("rope_theta")?;
    let (params, key) = match cfg.obj_opt("rope_parameters")? {
        Some(p) => (Some(p), "rope_parameters"),
        None => (cfg.obj_opt("rope_scaling")?, "rope_scaling"),
    };
    let Some(params) = params else {
        return Ok((top_theta.unwrap_or(HF_ROPE_THETA), RopeScaling::Default));
    };
    let prefix = format!("{key}.");
    let p = Obj { map: params, file: cfg.file, prefix: &prefix };
    // The nested rope_theta wins, as in transformers' standardize_rope_params.
    let theta = p.f32_opt("rope_theta")?.or(top_theta).unwrap_or(HF_ROPE_THETA);
    let rope_type = match p.str_opt("rope_type")? {
        Some(t) => t,
        None => p.str_opt("type")?.unwrap_or("default"),
    };
    let scaling = match rope_type {
        "default" => RopeScaling::Default,
        "llama3" => RopeScaling::Llama3 {
            factor: p.f32_req("factor")?,
            low_freq_factor: p.f32_req("low_freq_factor")?,
            high_freq_factor: p.f32_req("high_freq_factor")?,
            // transformers fills it from max_position_embeddings when absent.
            original_max_position_embeddings: p
                .usize_opt("original_max_position_embeddings")?
                .unwrap_or(max_position_embeddings),
        },
        other => return Err(p.bad("rope_type", &format!("unsupported RoPE type {other:?} (supported: default, llama3)"))),
    };
    Ok((theta, scaling))
}

impl ModelConfig {
    /// Parses HF config.json text; `file` is only used in error messages.
    pub fn from_json_str(json: &str, file: &Path) -> Result<Self> {
        let value = parse_json(json, file)?;
        let cfg = parse_object(&value, file)?;

        let hidden_size = cfg.usize_req("hidden_size")?;
        let num_attention_heads = cfg.usize_req("num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(cfg.bad("num_attention_heads", "must be > 0"));
        }
        let head_dim = match cfg.usize_opt("head_dim")? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => hidden_size / num_attention_heads,
            None => {
                return Err(cfg.bad(
                    "head_dim",
                    &format!("missing, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                ))
            }
        };
        let max_position_embeddings = cfg.usize_opt("max_position_embeddings")?.unwrap_or(HF_MAX_POSITION_EMBEDDINGS);
        let (rope_theta, rope_scaling) = parse_rope(&cfg, max_position_embeddings)?;

        let config = ModelConfig {
            hidden_size,
            num_hidden_layers: cfg.usize_req("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: cfg.usize_opt("num_key_value_heads")?.unwrap_or(num_attention_heads),
            head_dim,
            intermediate_size: cfg.usize_req("intermediate_size")?,
            rms_norm_eps: cfg.f32_opt("rms_norm_eps")?.unwrap_or(HF_RMS_NORM_EPS),
            rope_theta,
            rope_scaling,
            vocab_size: cfg.usize_req("vocab_size")?,
            max_position_embeddings,
            tie_word_embeddings: cfg.bool_opt("tie_word_embeddings")?.unwrap_or(false),
            // Absent → LlamaConfig's defaults; an explicit null → none.
            bos_token_id: match cfg.map.get("bos_token_id") {
                None => Some(HF_BOS),
                Some(_) => cfg.u32_opt("bos_token_id")?,
            },
            eos_token_ids: match cfg.map.get("eos_token_id") {
                None => vec![HF_EOS],
                Some(_) => cfg.ids_opt("eos_token_id")?.unwrap_or_default(),
            },
        };
        Ok(config)
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        Self::from_json_str(&read_text(path)?, path)
    }

    /// Without config.json: what the tensor shapes tell (vocab, hidden, layers, q/kv dims,
    /// intermediate, tying), heads from TinyLlama's head_dim of 64, the rest TinyLlama's.
    pub fn infer(ckpt: &Checkpoint) -> Result<Self> {
        let file = ckpt.dir.join(CONFIG_FILE);
        let bad = |detail: String| Error::bad_format(&file, format!("no config.json and cannot infer it: {detail}"));
        let dims2 = |name: &str| -> Result<(usize, usize)> {
            let shape = match ckpt.shape(name) {
                Some(s) => s.to_vec(),
                None => ckpt.get(name)?.shape, // the error: MissingTensor or UnsupportedDtype
            };
            match shape.as_slice() {
                &[rows, cols] => Ok((rows, cols)),
                s => Err(bad(format!("{name} has shape {s:?}, expected 2-D"))),
            }
        };

        let (vocab_size, hidden_size) = dims2("model.embed_tokens.weight")?; // (vocab, hidden)
        let num_hidden_layers = ckpt
            .names()
            .iter()
            .filter_map(|n| n.strip_prefix("model.layers.")?.split('.').next()?.parse::<usize>().ok())
            .max()
            .map_or(0, |m| m + 1);
        if num_hidden_layers == 0 {
            return Err(bad("no model.layers.N tensors".to_string()));
        }
        let (q_dim, _) = dims2("model.layers.0.self_attn.q_proj.weight")?; // (q_dim, hidden)
        let (kv_dim, _) = dims2("model.layers.0.self_attn.k_proj.weight")?; // (kv_dim, hidden)
        let (intermediate_size, _) = dims2("model.layers.0.mlp.gate_proj.weight")?; // (inter, hidden)
        let head_dim = TINYLLAMA_HEAD_DIM;
        if q_dim == 0 || !q_dim.is_multiple_of(head_dim) || kv_dim == 0 || !kv_dim.is_multiple_of(head_dim) {
            return Err(bad(format!("q dim {q_dim} / kv dim {kv_dim} are not multiples of head_dim {head_dim}")));
        }

        let config = ModelConfig {
            hidden_size,
            num_hidden_layers,
            num_attention_heads: q_dim / head_dim,
            num_key_value_heads: kv_dim / head_dim,
            head_dim,
            intermediate_size,
            rms_norm_eps: TINYLLAMA_RMS_NORM_EPS,
            rope_theta: HF_ROPE_THETA,
            rope_scaling: RopeScaling::Default,
            vocab_size,
            max_position_embeddings: HF_MAX_POSITION_EMBEDDINGS,
            tie_word_embeddings: !ckpt.contains("lm_head.weight"),
            bos_token_id: Some(HF_BOS),
            eos_token_ids: vec![HF_EOS],
        };
        Ok(config)
    }

    /// generation_config.json: its `eos_token_id` (an id or a list) replaces the eos ids, as
    /// transformers' generate() uses the generation config's; `bos_token_id` likewise.
    /// Absent or null keys leave the current values.
    pub fn apply_generation_config(&mut self, path: &Path) -> Result<()> {
        let value = parse_json(&read_text(path)?, path)?;
        let cfg = parse_object(&value, path)?;
        if let Some(ids) = cfg.ids_opt("eos_token_id")? {
            self.eos_token_ids = ids;
        }
        if let Some(bos) = cfg.u32_opt("bos_token_id")? {
            self.bos_token_id = Some(bos);
        }
        Ok(())
    }

    /// config.json in the checkpoint's folder if present, else `infer`; then
    /// generation_config.json if present; then `validate`.
    pub fn for_checkpoint(ckpt: &Checkpoint) -> Result<Self> {
        let config_path: PathBuf = ckpt.dir.join(CONFIG_FILE);
        let mut config =
            if config_path.is_file() { Self::from_json_file(&config_path)? } else { Self::infer(ckpt)? };
        let gen_path = ckpt.dir.join(GENERATION_CONFIG_FILE);
        if gen_path.is_file() {
            config.apply_generation_config(&gen_path)?;
        }
        config.validate()?;
        config.check_tensors(ckpt)?;
        Ok(config)
    }

    /// The dimensions the checkpoint's tensors follow.
    pub fn dims(&self) -> Dims {
        Dims { hidden: self.hidden_size, q: self.q_dim(), kv: self.kv_dim(), inter: self.intermediate_size, vocab: self.vocab_size }
    }

    /// The tensors of `ckpt` as this config names and shapes them.
    pub fn tensors<'a>(&self, ckpt: &'a Checkpoint) -> LlamaTensors<'a> {
        LlamaTensors { ckpt, dims: self.dims(), tied: self.tie_word_embeddings }
    }

    /// Every tensor this config implies is in `ckpt` with the shape it implies (shapes only:
    /// nothing is read). Tensors' byte sizes are bounded by the files, so this bounds every
    /// dimension of the config before anything is sized by it: a config.json or GGUF header
    /// claiming a huge `num_hidden_layers`, `vocab_size`, `hidden_size` or
    /// `intermediate_size` gives the `MissingTensor` / `ShapeMismatch` the model builder
    /// would, before it sizes anything. Call after `validate` (q_dim cannot overflow).
    /// The loop over blocks ends at the first absent block, so it is bounded by the
    /// checkpoint's tensor count, not by `num_hidden_layers`.
    pub fn check_tensors(&self, ckpt: &Checkpoint) -> Result<()> {
        let (h, vocab, dims) = (self.hidden_size, self.vocab_size, self.dims());
        let check = |name: &str, want: &[usize]| -> Result<()> {
            match ckpt.shape(name) {
                Some(got) if got == want => Ok(()),
                Some(got) => {
                    Err(Error::ShapeMismatch { name: name.to_string(), expected: want.to_vec(), got: got.to_vec() })
                }
                // absent → MissingTensor, unsupported dtype → UnsupportedDtype (nothing is made)
                None => ckpt.get(name).map(|_| ()),
            }
        };
        check("model.embed_tokens.weight", &[vocab, h])?;
        for layer in 0..self.num_hidden_layers {
            for (name, shape) in layer_tensors(layer, &dims) {
                check(&name, &shape)?;
            }
        }
        check("model.norm.weight", &[h])?;
        if !self.tie_word_embeddings && ckpt.contains("lm_head.weight") {
            check("lm_head.weight", &[vocab, h])?;
        }
        Ok(())
    }

    /// Structural sanity: positive dims, heads divisible into kv groups, usable RoPE and
    /// norm constants. Errors are `BadFormat` against "config.json" naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, detail: String| Error::bad_format(CONFIG_FILE, format!("{key}: {detail}"));
        let dims = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (key, v) in dims {
            if v == 0 {
                return Err(bad(key, "must be > 0".to_string()));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!("{} does not divide num_attention_heads {}", self.num_key_value_heads, self.num_attention_heads),
            ));
        }
        // RoPE rotates (x[i], x[i + head_dim/2]) pairs.
        if !self.head_dim.is_multiple_of(2) {
            return Err(bad("head_dim", format!("{} is odd; RoPE needs an even head_dim", self.head_dim)));
        }
        if self.num_attention_heads.checked_mul(self.head_dim).is_none() {
            return Err(bad("head_dim", "num_attention_heads × head_dim overflows".to_string()));
        }
        if self.max_position_embeddings > MAX_POSITION_EMBEDDINGS {
            return Err(bad(
                "max_position_embeddings",
                format!("{} exceeds the supported {MAX_POSITION_EMBEDDINGS}", self.max_position_embeddings),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(bad("rms_norm_eps", format!("{} is not a positive number", self.rms_norm_eps)));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(bad("rope_theta", format!("{} is not a positive number", self.rope_theta)));
        }
        if let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } =
            self.rope_scaling
        {
            if !(factor.is_finite() && factor > 0.0) {
                return Err(bad("rope_scaling.factor", format!("{factor} is not a positive number")));
            }
            // The smoothing interpolation divides by (high - low).
            if !(low_freq_factor.is_finite() && high_freq_factor.is_finite() && high_freq_factor > low_freq_factor) {
                return Err(bad(
                    "rope_scaling.high_freq_factor",
                    format!("{high_freq_factor} must exceed low_freq_factor {low_freq_factor}"),
                ));
            }
            if original_max_position_embeddings == 0 || original_max_position_embeddings > MAX_POSITION_EMBEDDINGS {
                return Err(bad(
                    "rope_scaling.original_max_position_embeddings",
                    format!("{original_max_position_embeddings} is not in 1..={MAX_POSITION_EMBEDDINGS}"),
                ));
            }
        }
        Ok(())
    }

    /// Width of the K (and V) projection: num_key_value_heads × head_dim.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Width of the Q projection: num_attention_heads × head_dim (may differ from hidden_size).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
}
