defmodule Viva.LowLevel do
  @moduledoc """
  The building blocks `Viva.generate/3` runs on, as BEAM resources (wraps
  `:viva_tensor_lowlevel`): FP8 prepacked weights and their linears, embedding tables,
  KV caches and the decode step.

  Tensors are `{binary, shape}` (little-endian f32) or `{binary, shape, dtype}` with dtype
  `:f32 | :f16 | :bf16`; weights are `[out, in]`, the layout Hugging Face stores. Every
  function returns `{:ok, value}` or `{:error, reason}` (see `Viva`'s docs for reasons).

      {:ok, w} = Viva.LowLevel.prepack_fp8_weight_blocked(Viva.LowLevel.f32_binary(weights), [n, k], 16)
      {:ok, {out, [1, ^n]}} = Viva.LowLevel.linear_fp8_w8a16({Viva.LowLevel.f32_binary(x), [1, k]}, w, nil)

      {:ok, model} = Viva.load_model("test/fixtures/tiny_gqa")
      {:ok, cache} = Viva.LowLevel.kv_cache_new(model, 64)
      {:ok, next_id} = Viva.LowLevel.decode_step(model, 1, cache, 0)
  """

  @type tensor :: {binary, [pos_integer]} | {binary, [pos_integer], :f32 | :f16 | :bf16}
  @type packed :: reference
  @type table :: reference
  @type kv_cache :: reference
  @type bias :: binary | nil
  @type reason :: term

  @doc "FP8 E4M3 prepack with one scale per output row; `weight` is `[n, k]` f32."
  @spec prepack_fp8_weight(binary, [pos_integer]) :: {:ok, packed} | {:error, reason}
  defdelegate prepack_fp8_weight(weight, shape), to: :viva_tensor_lowlevel

  @doc "FP8 E4M3 prepack with one scale per `block` (16, 32, 64, 128) values along K."
  @spec prepack_fp8_weight_blocked(binary, [pos_integer], 16 | 32 | 64 | 128) :: {:ok, packed} | {:error, reason}
  defdelegate prepack_fp8_weight_blocked(weight, shape, block), to: :viva_tensor_lowlevel

  @doc "`%{n:, k:, block:, bytes:}` of a packed weight."
  @spec packed_info(packed) :: {:ok, map} | {:error, reason}
  defdelegate packed_info(packed), to: :viva_tensor_lowlevel

  @doc "`input · Wᵀ + bias`, activations in their own dtype, weights dequantized in the inner loop."
  @spec linear_fp8_w8a16(tensor, packed, bias) :: {:ok, tensor} | {:error, reason}
  defdelegate linear_fp8_w8a16(input, packed, bias), to: :viva_tensor_lowlevel

  @doc "W8A8: each input row is quantized to E4M3 with its own absmax scale first."
  @spec linear_fp8(tensor, packed, bias) :: {:ok, tensor} | {:error, reason}
  defdelegate linear_fp8(input, packed, bias), to: :viva_tensor_lowlevel

  @doc "`gelu(input · Wᵀ + bias)` (erf GELU)."
  @spec linear_gelu_fp8(tensor, packed, bias) :: {:ok, tensor} | {:error, reason}
  defdelegate linear_gelu_fp8(input, packed, bias), to: :viva_tensor_lowlevel

  @doc "SwiGLU over a weight holding gate rows then up rows; returns `[m, n / 2]`."
  @spec linear_swiglu_fp8(tensor, packed, bias) :: {:ok, tensor} | {:error, reason}
  defdelegate linear_swiglu_fp8(input, packed, bias), to: :viva_tensor_lowlevel

  @doc "A `(rows, cols)` embedding table from a binary of `dtype` values."
  @spec embedding_table_new(binary, pos_integer, pos_integer, :f32 | :f16 | :bf16) :: {:ok, table} | {:error, reason}
  defdelegate embedding_table_new(bin, rows, cols, dtype), to: :viva_tensor_lowlevel

  @doc "Row `id` of a table as an f32 binary."
  @spec embedding_row(table, non_neg_integer) :: {:ok, binary} | {:error, reason}
  defdelegate embedding_row(table, id), to: :viva_tensor_lowlevel

  @doc "A KV cache for one sequence on `model` (room for its whole context, or `max_seq` positions)."
  @spec kv_cache_new(Viva.model(), pos_integer | nil) :: {:ok, kv_cache} | {:error, reason}
  def kv_cache_new(model, max_seq \\ nil)
  def kv_cache_new(model, nil), do: :viva_tensor_lowlevel.kv_cache_new(model)
  def kv_cache_new(model, max_seq), do: :viva_tensor_lowlevel.kv_cache_new(model, max_seq)

  @doc "Runs `token` at `pos` (at most the positions filled so far) and returns the greedy next id."
  @spec decode_step(Viva.model(), non_neg_integer, kv_cache, non_neg_integer) :: {:ok, non_neg_integer} | {:error, reason}
  defdelegate decode_step(model, token, cache, pos), to: :viva_tensor_lowlevel

  @doc "Like `decode_step/4`, returning the `k` (≤ 256) best `{id, logit}` pairs, best first."
  @spec decode_step_topk(Viva.model(), non_neg_integer, kv_cache, non_neg_integer, 1..256) ::
          {:ok, [{non_neg_integer, float}]} | {:error, reason}
  defdelegate decode_step_topk(model, token, cache, pos, k), to: :viva_tensor_lowlevel

  @doc "A list of numbers as a little-endian f32 binary."
  @spec f32_binary([number]) :: binary
  def f32_binary(list), do: for(x <- list, into: <<>>, do: <<x * 1.0::float-32-little>>)

  @doc "A little-endian f32 binary as a list of floats."
  @spec to_floats(binary) :: [float]
  def to_floats(bin), do: for(<<x::float-32-little <- bin>>, do: x)
end
