//// The building blocks `viva_tensor.generate` runs on, as BEAM resources: FP8 prepacked
//// weights and their linears, embedding tables, KV caches and the decode step. Weights are
//// `[out, in]` (the layout Hugging Face stores); tensor data are little-endian bit arrays.

import viva_tensor.{type BlockSize, type Error, type Model}

/// An FP8 E4M3 prepacked weight.
pub type Packed

pub type EmbeddingTable

/// One sequence's KV cache on one model.
pub type KvCache

pub type Dtype {
  F32
  F16
  Bf16
}

pub type Tensor {
  Tensor(data: BitArray, shape: List(Int), dtype: Dtype)
}

pub type Bias {
  NoBias
  /// f32, one per output row.
  Bias(BitArray)
}

pub type PackedInfo {
  PackedInfo(n: Int, k: Int, block: BlockSize, bytes: Int)
}

pub type MaxSeq {
  WholeContext
  MaxSeq(Int)
}

/// `weight`: f32 `[n, k]`; `block`: `Block(16 | 32 | 64 | 128)` or `PerChannel`.
pub fn prepack_fp8_weight(
  weight weight: BitArray,
  shape shape: List(Int),
  block block: BlockSize,
) -> Result(Packed, Error) {
  ffi_prepack(weight, shape, block)
}

pub fn packed_info(packed: Packed) -> Result(PackedInfo, Error) {
  ffi_packed_info(packed)
}

/// `input · Wᵀ + bias`, activations read in their dtype; the result is f32 `[m, n]`.
pub fn linear_fp8_w8a16(
  input: Tensor,
  packed: Packed,
  bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(W8a16, input, packed, bias)
}

/// W8A8: each input row quantized to E4M3 with its own absmax scale.
pub fn linear_fp8(
  input: Tensor,
  packed: Packed,
  bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(W8a8, input, packed, bias)
}

/// `gelu(input · Wᵀ + bias)` (erf GELU).
pub fn linear_gelu_fp8(
  input: Tensor,
  packed: Packed,
  bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(Gelu, input, packed, bias)
}

/// SwiGLU over a weight of gate rows then up rows; the result is `[m, n / 2]`.
pub fn linear_swiglu_fp8(
  input: Tensor,
  packed: Packed,
  bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(Swiglu, input, packed, bias)
}

pub fn embedding_table_new(
  data data: BitArray,
  rows rows: Int,
  cols cols: Int,
  dtype dtype: Dtype,
) -> Result(EmbeddingTable, Error) {
  ffi_embedding_table_new(data, rows, cols, dtype)
}

/// Row `id` as f32 little-endian bits.
pub fn embedding_row(
  table: EmbeddingTable,
  id: Int,
) -> Result(BitArray, Error) {
  ffi_embedding_row(table, id)
}

pub fn kv_cache_new(model: Model, max_seq: MaxSeq) -> Result(KvCache, Error) {
  case max_seq {
    WholeContext -> ffi_kv_cache_new(model, None)
    MaxSeq(n) -> ffi_kv_cache_new(model, Some(n))
  }
}

/// Runs `token` at `pos` (at most the positions filled so far) and returns the greedy next id.
pub fn decode_step(
  model model: Model,
  token token: Int,
  cache cache: KvCache,
  pos pos: Int,
) -> Result(Int, Error) {
  ffi_decode_step(model, token, cache, pos)
}

/// The `k` (1..256) best `#(id, logit)` pairs after `token` at `pos`, best first.
pub fn decode_step_topk(
  model model: Model,
  token token: Int,
  cache cache: KvCache,
  pos pos: Int,
  k k: Int,
) -> Result(List(#(Int, Float)), Error) {
  ffi_decode_step_topk(model, token, cache, pos, k)
}

type LinearKind {
  W8a16
  W8a8
  Gelu
  Swiglu
}

type Optional {
  Some(Int)
  None
}

@external(erlang, "viva_tensor_low_level_ffi", "prepack")
fn ffi_prepack(
  w: BitArray,
  shape: List(Int),
  block: BlockSize,
) -> Result(Packed, Error)

@external(erlang, "viva_tensor_low_level_ffi", "packed_info")
fn ffi_packed_info(p: Packed) -> Result(PackedInfo, Error)

@external(erlang, "viva_tensor_low_level_ffi", "linear")
fn ffi_linear(
  kind: LinearKind,
  input: Tensor,
  p: Packed,
  bias: Bias,
) -> Result(Tensor, Error)

@external(erlang, "viva_tensor_low_level_ffi", "embedding_table_new")
fn ffi_embedding_table_new(
  data: BitArray,
  rows: Int,
  cols: Int,
  dtype: Dtype,
) -> Result(EmbeddingTable, Error)

@external(erlang, "viva_tensor_low_level_ffi", "embedding_row")
fn ffi_embedding_row(t: EmbeddingTable, id: Int) -> Result(BitArray, Error)

@external(erlang, "viva_tensor_low_level_ffi", "kv_cache_new")
fn ffi_kv_cache_new(m: Model, max_seq: Optional) -> Result(KvCache, Error)

@external(erlang, "viva_tensor_low_level_ffi", "decode_step")
fn ffi_decode_step(m: Model, t: Int, c: KvCache, p: Int) -> Result(Int, Error)

@external(erlang, "viva_tensor_low_level_ffi", "decode_step_topk")
fn ffi_decode_step_topk(
  m: Model,
  t: Int,
  c: KvCache,
  p: Int,
  k: Int,
) -> Result(List(#(Int, Float)), Error)
