//! GGUF reader (versions 2 and 3, little-endian), memory-mapped.
//!
//! Layout (ggml's docs/gguf.md): magic "GGUF", u32 version, u64 tensor count, u64 metadata
//! count; metadata as (string key, u32 type, value); tensor infos as (string name, u32 n_dims,
//! u64 dims[n_dims], u32 ggml type, u64 offset); then the data section, aligned to
//! `general.alignment` (default 32), where each offset points. Strings are a u64 length and
//! bytes. Dims list the fastest-varying dimension first (ne0), so a 2-D tensor with
//! dims [ne0, ne1] is row-major [rows = ne1, cols = ne0] — HF's [out, in] for linears.
//!
//! Every length and offset is checked against the file before use: a hostile or truncated
//! file is `Error::BadFormat`, never a panic or an allocation the file cannot back.
mod dequant;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

pub use dequant::{dequantize_into, GgmlType};

use crate::config::{ModelConfig, RopeScaling};
use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, TensorView};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Bounds that no real model comes near; larger values mean a corrupt file.
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: u32 = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer type as u64 (negative → None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: ne0 (fastest) first.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Absolute byte offset of the data in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    /// Row-major shape, slowest dimension first (dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// The element count of a tensor of a type this reader knows (so its bytes, checked at
    /// open to lie in the file, bound it); `UnsupportedDtype` for other types, before a
    /// buffer of an unbounded count is made.
    fn known_numel(&self) -> Result<usize> {
        GgmlType::from_u32(self.ggml_type)
            .map(|_| self.numel())
            .ok_or_else(|| Error::UnsupportedDtype { name: self.name.clone(), dtype: format!("ggml type {}", self.ggml_type) })
    }
}

pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    tensors: BTreeMap<String, TensorInfo>,
    /// The mapped file: F32/F16/BF16 tensors are views into it (no copy).
    storage: Arc<Storage>,
}

/// A bounds-checked little-endian reader over the mapped bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> Error {
        Error::bad_format(self.file, format!("{what} at byte {}", self.pos))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.err(&format!("truncated {what}")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items each at least `min_item` bytes long: must fit in what is left.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item.max(1) as u64) > left {
            return Err(self.err(&format!("{what} {n} exceeds the file")));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(&format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>("u8")?[0]),
            1 => GgufValue::I8(self.array::<1>("i8")?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => GgufValue::U32(self.u32("u32")?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(&format!("bool value {b}"))),
            },
            8 => GgufValue::String(self.string("string")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err("arrays nested too deep"));
                }
                let elem = self.u32("array type")?;
                let n = self.count("array length", min_size(elem))?;
                // a value is 32 bytes in memory for 1 in the file: reserve fallibly
                let mut v = crate::alloc::try_with_capacity(n)?;
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64("u64")?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array("f64")?)),
            t => return Err(self.err(&format!("unknown metadata type {t}"))),
        })
    }
}

/// Smallest encoding of a metadata value of type `ty` (bounds array lengths before allocating).
fn min_size(ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8..=12 => 8,
        _ => 1,
    }
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap-based loader we rely on the file not
        // being truncated underneath us while the model is loaded.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (version, metadata, tensors) = parse(&map, path)?;
        Ok(Gguf { path: path.to_path_buf(), version, metadata, tensors, storage: Arc::new(Storage::Mmap(map)) })
    }

    /// A GGUF file already in memory; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let (version, metadata, tensors) = parse(&bytes, path)?;
        Ok(Gguf { path: path.to_path_buf(), version, metadata, tensors, storage: Arc::new(Storage::Heap(bytes)) })
    }

    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.keys().map(|s| s.as_str()).collect()
    }

    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// Raw bytes of a tensor (checked at open to lie inside the file).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_info(name)?;
        Ok(&self.storage.bytes()[t.start..t.start + t.len])
    }

    /// A tensor as f32, with its row-major shape.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensor_info(name)?;
        let mut out = crate::alloc::try_zeroed(t.known_numel()?)?;
        dequantize_tensor(&self.storage, t, &self.path, None, &mut out)?;
        Ok((t.shape(), out))
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(GgufValue::as_f64)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    pub fn get_array(&self, key: &str) -> Option<&[GgufValue]> {
        self.get(key).and_then(GgufValue::as_array)
    }
}

type Parsed = (u32, BTreeMap<String, GgufValue>, BTreeMap<String, TensorInfo>);

fn parse(buf: &[u8], path: &Path) -> Result<Parsed> {
    let mut c = Cursor { buf, pos: 0, file: path };
    if c.take(4, "magic").ok() != Some(&MAGIC[..]) {
        return Err(Error::bad_format(path, "not a GGUF file (bad magic)"));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::bad_format(path, format!("unsupported GGUF version {version}")));
    }
    // a tensor info is at least 8 (name len) + 4 + 4 + 8 bytes; a kv at least 8 + 4 + 1
    let n_tensors = c.count("tensor count", 24)?;
    let n_kv = c.count("metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32("metadata type")?;
        let value = c.value(ty, 0)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => v.as_u64().filter(|a| a.is_power_of_two()).ok_or_else(|| Error::bad_format(path, "general.alignment is not a power of two"))?,
    };
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32("tensor dims")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(c.err(&format!("tensor {name}: {n_dims} dimensions")));
        }
        let dims = (0..n_dims).map(|_| c.u64("tensor dim")).collect::<Result<Vec<_>>>()?;
        let ty = c.u32("tensor type")?;
        let offset = c.u64("tensor offset")?;
        infos.push((name, dims, ty, offset));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = BTreeMap::new();
    for (name, dims, ty, offset) in infos {
        let bad = |d: &str| Error::bad_format(path, format!("tensor {name}: {d}"));
        let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).ok_or_else(|| bad("element count overflows"))?;
        let len = match GgmlType::from_u32(ty) {
            Some(t) => t.byte_len(numel).ok_or_else(|| bad("element count is not a whole number of blocks"))?,
            None => 0, // unknown type: kept, refused when read
        };
        if offset % alignment != 0 {
            return Err(bad("misaligned offset"));
        }
        let start = data_start.checked_add(offset).ok_or_else(|| bad("offset overflows"))?;
        let end = start.checked_add(len).ok_or_else(|| bad("size overflows"))?;
        if end > buf.len() as u64 {
            return Err(bad(&format!("data {start}..{end} past the end of the file ({} bytes)", buf.len())));
        }
        let info = TensorInfo { name: name.clone(), dims, ggml_type: ty, start: start as usize, len: len as usize };
        if tensors.insert(name.clone(), info).is_some() {
            return Err(bad("duplicate name"));
        }
    }
    Ok((version, metadata, tensors))
}

/// Tensor `t` of the file mapped in `storage` (`path`, for errors) as f32, with its row-major shape.
/// Tensor `t` dequantized to f32 into `out` (numel values); with `heads`, a q/k weight whose
/// rows go back to HF's order on the way ([`qk_source_row`]), row by row across the pool.
fn dequantize_tensor(storage: &Storage, t: &TensorInfo, path: &Path, heads: Option<usize>, out: &mut [f32]) -> Result<()> {
    let ty = GgmlType::from_u32(t.ggml_type)
        .ok_or_else(|| Error::UnsupportedDtype { name: t.name.clone(), dtype: format!("ggml type {}", t.ggml_type) })?;
    let bytes = &storage.bytes()[t.start..t.start + t.len];
    let bad = |detail: String| Error::bad_format(path, format!("{}: {detail}", t.name));
    let shape = t.shape();
    let (Some(h), &[rows, cols]) = (heads, shape.as_slice()) else {
        return dequantize_into(ty, bytes, out).map_err(bad);
    };
    let row_bytes = t.len / rows.max(1);
    if out.len() != rows * cols || row_bytes * rows != t.len {
        return Err(bad(format!("{} bytes for {rows} rows", t.len)));
    }
    // an empty q/k weight (0 columns) has nothing to regroup; par_chunks_mut(0) would panic
    // (found by the gguf fuzzer, fuzz/regressions/gguf/)
    if out.is_empty() {
        return Ok(());
    }
    out.par_chunks_mut(cols).enumerate().try_for_each(|(dst, o)| {
        let src = qk_source_row(dst, rows / h.max(1));
        dequantize_into(ty, &bytes[src * row_bytes..(src + 1) * row_bytes], o)
    })
    .map_err(bad)
}

/// llama.cpp's conversion regroups each q_proj / k_proj head's rows from HF's rotate-half order
/// [half (2)][pair (d/2)] into interleaved order [pair (d/2)][half (2)] so ggml's RoPE can
/// rotate adjacent rows: HF's row (h, half, i) is GGUF's row (h, i, half). This is the GGUF row
/// HF row `dst` comes from, for heads of `head_dim` rows.
fn qk_source_row(dst: usize, head_dim: usize) -> usize {
    let half = (head_dim / 2).max(1);
    let (h, rem) = (dst / head_dim.max(1), dst % head_dim.max(1));
    h * head_dim + (rem % half) * 2 + rem / half
}

/// Undoes llama.cpp's q/k row reordering ([`qk_source_row`]) for `rows` (n_heads · head_dim,
/// cols) of any element (f32 values, or the raw bytes of a 16-bit tensor with cols = its
/// row's bytes).
pub fn unpermute_qk<T: Copy + Default>(rows: &[T], n_heads: usize, cols: usize) -> Vec<T> {
    let n = rows.len() / cols.max(1);
    let head_dim = n / n_heads.max(1);
    let mut out = vec![T::default(); rows.len()];
    for (dst, o) in out.chunks_exact_mut(cols.max(1)).enumerate() {
        let src = qk_source_row(dst, head_dim);
        o.copy_from_slice(&rows[src * cols..(src + 1) * cols]);
    }
    out
}

impl Gguf {
    /// The model config from `llama.*` metadata (llama.cpp's names), checked like config.json.
    /// Tied embeddings: no `output.weight` tensor.
    pub fn llama_config(&self) -> Result<ModelConfig> {
        let arch = self.get_str("general.architecture").unwrap_or("");
        if arch != "llama" {
            return Err(Error::bad_format(&self.path, format!("general.architecture is {arch:?}, expected \"llama\"")));
        }
        let need = |key: &str| -> Result<usize> {
            self.get_u64(key)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| Error::bad_format(&self.path, format!("{key}: missing or not an integer")))
        };
        let hidden = need("llama.embedding_length")?;
        let heads = need("llama.attention.head_count")?;
        let vocab = match self.get_u64("llama.vocab_size") {
            Some(v) => v as usize,
            None => self.get_array("tokenizer.ggml.tokens").map(|a| a.len()).ok_or_else(|| {
                Error::bad_format(&self.path, "neither llama.vocab_size nor tokenizer.ggml.tokens")
            })?,
        };
        let rope_scaling = match self.get_str("llama.rope.scaling.type") {
            None | Some("none") => RopeScaling::Default,
            Some(other) => return Err(Error::bad_format(&self.path, format!("rope scaling {other:?} is not supported"))),
        };
        let token = |key: &str| self.get_u64(key).and_then(|v| u32::try_from(v).ok());
        let cfg = ModelConfig {
            hidden_size: hidden,
            num_hidden_layers: need("llama.block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: self.get_u64("llama.attention.head_count_kv").map_or(heads, |v| v as usize),
            head_dim: self.get_u64("llama.attention.key_length").map_or(hidden / heads.max(1), |v| v as usize),
            intermediate_size: need("llama.feed_forward_length")?,
            rms_norm_eps: self.get_f64("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope_theta: self.get_f64("llama.rope.freq_base").unwrap_or(10_000.0) as f32,
            rope_scaling,
            vocab_size: vocab,
            max_position_embeddings: need("llama.context_length")?,
            tie_word_embeddings: !self.tensors.contains_key("output.weight"),
            bos_token_id: token("tokenizer.ggml.bos_token_id"),
            eos_token_ids: token("tokenizer.ggml.eos_token_id").into_iter().collect(),
        };
        cfg.validate().map_err(|e| match e {
            Error::BadFormat { detail, .. } => Error::bad_format(&self.path, detail),
            other => other,
        })?;
        Ok(cfg)
    }
}

/// GGUF tensor names of a llama block → HF names (llama.cpp's convert mapping).
const BLOCK_NAMES: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// HF name of a GGUF tensor name, None for tensors the Llama model does not use.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let (stem, suffix) = gguf_name.rsplit_once('.')?;
    match stem {
        "token_embd" => return Some(format!("model.embed_tokens.{suffix}")),
        "output_norm" => return Some(format!("model.norm.{suffix}")),
        "output" => return Some(format!("lm_head.{suffix}")),
        _ => {}
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = BLOCK_NAMES.iter().find(|(g, _)| *g == part)?.1;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

impl Gguf {
    /// Every Llama tensor under its HF name, q_proj / k_proj rows put back in HF's rotate-half
    /// order: a `Checkpoint` the model builder reads like safetensors. F32/F16/BF16 tensors stay
    /// in their dtype, as views of the mapped file (q/k: a reordered copy of their bytes); the
    /// block-quantized ones are dequantized to f32 when the model builder asks for them (lazy
    /// entries: one layer's f32 in memory at a time, not the whole model's). Copying a BF16
    /// file's weights into f32 first doubled them in memory and made the load of a 1.1B model
    /// ~13 s (page faults of 6.6 GB).
    pub fn to_checkpoint(&self, cfg: &ModelConfig) -> Result<crate::safetensors::Checkpoint> {
        let mut out = Vec::new();
        let mut lazy: Vec<(String, Vec<usize>, crate::safetensors::MakeTensor)> = Vec::new();
        // one layer's dequantized tensors at a time, in buffers reused from layer to layer
        let pool = Arc::new(crate::tensor::F32Pool::default());
        for name in self.tensor_names() {
            let Some(hf) = hf_name(name) else { continue };
            let heads = if hf.ends_with("q_proj.weight") {
                Some(cfg.num_attention_heads)
            } else if hf.ends_with("k_proj.weight") {
                Some(cfg.num_key_value_heads)
            } else {
                None
            };
            let t = self.tensor_info(name)?;
            let shape = t.shape();
            if let (Some(h), &[rows, _]) = (heads, shape.as_slice()) {
                // the row regrouping works within whole heads of an even head_dim
                if h == 0 || !rows.is_multiple_of(h) || !(rows / h).is_multiple_of(2) {
                    return Err(Error::bad_format(&self.path, format!("{name}: {rows} rows are not {h} heads of an even head_dim")));
                }
            }
            let dtype = match GgmlType::from_u32(t.ggml_type) {
                Some(GgmlType::F32) => Some(DType::F32),
                Some(GgmlType::F16) => Some(DType::F16),
                Some(GgmlType::BF16) => Some(DType::BF16),
                _ => None,
            };
            let view = match (dtype, heads, shape.as_slice()) {
                (Some(dt), _, _) if t.len != t.numel() * dt.size() => {
                    return Err(Error::bad_format(&self.path, format!("{name}: {} bytes for {} {dt:?} values", t.len, t.numel())));
                }
                (Some(dt), Some(h), [_, cols]) => {
                    let bytes = unpermute_qk(self.tensor_bytes(name)?, h, cols * dt.size());
                    TensorView::new(hf, dt, shape, Arc::new(Storage::Heap(bytes)), 0, t.len)
                }
                (Some(dt), _, _) => TensorView::new(hf, dt, shape, self.storage.clone(), t.start, t.len),
                (None, _, _) => {
                    let (storage, t, path, key, pool) = (self.storage.clone(), t.clone(), self.path.clone(), hf.clone(), pool.clone());
                    let make = move || {
                        let mut data = pool.take(t.known_numel()?);
                        dequantize_tensor(&storage, &t, &path, heads, &mut data)?;
                        Ok(TensorView::from_pooled(&hf, t.shape(), data, &pool))
                    };
                    lazy.push((key, shape, Box::new(make)));
                    continue;
                }
            };
            out.push(view);
        }
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut ckpt = crate::safetensors::Checkpoint::from_tensors(dir, vec![self.path.clone()], out);
        for (name, shape, make) in lazy {
            ckpt.add_lazy(name, shape, make);
        }
        Ok(ckpt)
    }

    /// `to_checkpoint` for a model: also checks that every tensor `cfg` implies is there with
    /// its shape ([`ModelConfig::check_tensors`]), so no dimension of the metadata that the
    /// tensors do not back reaches the model builder.
    pub fn model_checkpoint(&self, cfg: &ModelConfig) -> Result<crate::safetensors::Checkpoint> {
        let ckpt = self.to_checkpoint(cfg)?;
        cfg.check_tensors(&ckpt)?;
        Ok(ckpt)
    }
}
