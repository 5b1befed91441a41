//// The building blocks `viva_tensor.generate` runs on, as BEAM resources (over the Erlang
//// module `viva_tensor_lowlevel`): FP8 prepacked weights and the linears that read them,
//// embedding tables, KV caches and the decode step of a loaded model.
////
//// ```gleam
//// import viva_tensor
//// import viva_tensor/low_level.{MaxSeq, NoBias, Tensor}
////
//// let assert Ok(w) =
////   low_level.prepack_fp8_weight(low_level.f32_bits(weights), [n, k], viva_tensor.Block(16))
//// let assert Ok(out) =
////   low_level.linear_fp8_w8a16(Tensor(low_level.f32_bits(x), [1, k], low_level.F32), w, NoBias)
//// let assert Ok(ys) = low_level.to_floats(out.data)
////
//// let assert Ok(model) = viva_tensor.load_model("test/fixtures/tiny_gqa")
//// let assert Ok(cache) = low_level.kv_cache_new(model, MaxSeq(64))
//// let assert Ok(next_id) = low_level.decode_step(model, 1, cache, 0)
//// ```
////
//// Tensor data are little-endian bit arrays with a shape; weights are `[out, in]` (`[n, k]`),
//// the layout Hugging Face stores. A size that does not match a shape is `ShapeMismatch`, a
//// bad value `InvalidOption`. A `decode_prompt` then `decode_step` loop gives exactly `generate`'s greedy tokens.

import viva_tensor.{type BlockSize, type Error, type Model}

/// An FP8 E4M3 prepacked weight (a NIF resource).
pub type Packed

/// An embedding table (a NIF resource).
pub type EmbeddingTable

/// One sequence's KV cache on one model (a NIF resource).
pub type KvCache

/// Element type of a tensor's little-endian data.
pub type Dtype {
  F32
  F16
  Bf16
}

/// `data` holds `shape`'s product of `dtype` values, little-endian, row-major.
pub type Tensor {
  Tensor(data: BitArray, shape: List(Int), dtype: Dtype)
}

pub type Bias {
  NoBias
  /// f32 little-endian, one per output row (`n`; for SwiGLU the gate's then the up's).
  Bias(BitArray)
}

/// A packed weight's shape, scale grouping, and bytes (codes + scales).
pub type PackedInfo {
  PackedInfo(n: Int, k: Int, block: BlockSize, bytes: Int)
}

/// How many positions a KV cache has room for.
pub type MaxSeq {
  /// The model's whole context (`max_position_embeddings`).
  WholeContext
  MaxSeq(Int)
}

/// FP8 E4M3 prepack of an f32 `[n, k]` weight: `PerChannel` (one scale per output row) or
/// `Block(16 | 32 | 64 | 128)` (one scale per that many values along K; K need not be a
/// multiple). A scale is absmax / 448.
pub fn prepack_fp8_weight(
  weight weight: BitArray,
  shape shape: List(Int),
  block block: BlockSize,
) -> Result(Packed, Error) {
  ffi_prepack(weight, shape, block)
}

/// The shape, scale grouping and size of a packed weight.
pub fn packed_info(packed packed: Packed) -> Result(PackedInfo, Error) {
  ffi_packed_info(packed)
}

/// W8A16 `input · Wᵀ + bias`: activations read in their dtype, weights dequantized in the
/// inner loop, f32 accumulation; `input` is `[m, k]`, the result f32 `[m, n]`.
pub fn linear_fp8_w8a16(
  input input: Tensor,
  packed packed: Packed,
  bias bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(W8a16, input, packed, bias)
}

/// W8A8: each input row quantized to E4M3 with its own absmax scale first; f32 `[m, n]`.
pub fn linear_fp8(
  input input: Tensor,
  packed packed: Packed,
  bias bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(W8a8, input, packed, bias)
}

/// `gelu(input · Wᵀ + bias)`, GELU in its erf form, fused; f32 `[m, n]`.
pub fn linear_gelu_fp8(
  input input: Tensor,
  packed packed: Packed,
  bias bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(Gelu, input, packed, bias)
}

/// SwiGLU, fused, over a weight of gate rows then up rows (`n = 2·i`): f32 `[m, i]` of
/// `silu(x·gateᵀ + b_gate) · (x·upᵀ + b_up)`.
pub fn linear_swiglu_fp8(
  input input: Tensor,
  packed packed: Packed,
  bias bias: Bias,
) -> Result(Tensor, Error) {
  ffi_linear(Swiglu, input, packed, bias)
}

/// A `(rows, cols)` table from little-endian `dtype` values, copied once, kept in its dtype.
pub fn embedding_table_new(
  data data: BitArray,
  rows rows: Int,
  cols cols: Int,
  dtype dtype: Dtype,
) -> Result(EmbeddingTable, Error) {
  ffi_embedding_table_new(data, rows, cols, dtype)
}

/// Row `id` (0-based) as f32 little-endian bits (`cols` values); past the last row it is
/// `TokenOutOfRange(id, rows)`.
pub fn embedding_row(
  table table: EmbeddingTable,
  id id: Int,
) -> Result(BitArray, Error) {
  ffi_embedding_row(table, id)
}

/// A KV cache for one sequence on `model`; `MaxSeq(n)` takes 1..max_position_embeddings.
pub fn kv_cache_new(
  model model: Model,
  max_seq max_seq: MaxSeq,
) -> Result(KvCache, Error) {
  case max_seq {
    WholeContext -> ffi_kv_cache_new(model, None)
    MaxSeq(n) -> ffi_kv_cache_new(model, Some(n))
  }
}

/// Runs `token` at `pos` (0-based; at most the positions filled so far, a smaller one
/// rewinds), appends its K/V to `cache` and returns the greedy next id.
pub fn decode_step(
  model model: Model,
  token token: Int,
  cache cache: KvCache,
  pos pos: Int,
) -> Result(Int, Error) {
  ffi_decode_step(model, token, cache, pos)
}

/// Runs `tokens` (non-empty) at `pos`, `pos + 1`, … as one batched pass (the path `generate`
/// takes for a prompt) and returns the greedy id after the last: a loop that feeds its prompt
/// so and then one id per `decode_step` gives exactly `generate`'s greedy tokens.
pub fn decode_prompt(
  model model: Model,
  tokens tokens: List(Int),
  cache cache: KvCache,
  pos pos: Int,
) -> Result(Int, Error) {
  ffi_decode_prompt(model, tokens, cache, pos)
}

/// Like `decode_step`, returning the `k` (1..256) best `#(id, logit)` pairs, best first.
pub fn decode_step_topk(
  model model: Model,
  token token: Int,
  cache cache: KvCache,
  pos pos: Int,
  k k: Int,
) -> Result(List(#(Int, Float)), Error) {
  ffi_decode_step_topk(model, token, cache, pos, k)
}

/// Floats as little-endian f32 bits: the data of an `F32` tensor, a weight or a `Bias`.
pub fn f32_bits(values: List(Float)) -> BitArray {
  f32_bits_loop(values, <<>>)
}

fn f32_bits_loop(values: List(Float), acc: BitArray) -> BitArray {
  case values {
    [] -> acc
    [x, ..rest] -> f32_bits_loop(rest, <<acc:bits, x:float-size(32)-little>>)
  }
}

/// Little-endian f32 bits as floats; `Error(Nil)` when the size is not a multiple of 4
/// bytes or a value is NaN or infinite (a BEAM float holds neither).
pub fn to_floats(bits: BitArray) -> Result(List(Float), Nil) {
  to_floats_loop(bits, [])
}

fn to_floats_loop(
  bits: BitArray,
  acc: List(Float),
) -> Result(List(Float), Nil) {
  case bits {
    <<>> -> Ok(reverse(acc, []))
    <<x:float-size(32)-little, rest:bits>> -> to_floats_loop(rest, [x, ..acc])
    _ -> Error(Nil)
  }
}

fn reverse(items: List(a), acc: List(a)) -> List(a) {
  case items {
    [] -> acc
    [x, ..rest] -> reverse(rest, [x, ..acc])
  }
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

@external(erlang, "viva_tensor_low_level_ffi", "decode_step")
fn ffi_decode_prompt(m: Model, t: List(Int), c: KvCache, p: Int) -> Result(Int, Error)

@external(erlang, "viva_tensor_low_level_ffi", "decode_step_topk")
fn ffi_decode_step_topk(
  m: Model,
  t: Int,
  c: KvCache,
  p: Int,
  k: Int,
) -> Result(List(#(Int, Float)), Error)
