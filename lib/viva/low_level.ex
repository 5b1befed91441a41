defmodule Viva.LowLevel do
  @moduledoc """
  The building blocks `Viva.generate/3` runs on, as BEAM resources (a thin wrapper over
  `:viva_tensor_lowlevel`): FP8 prepacked weights and the linears that read them, embedding
  tables, KV caches and the decode step of a loaded model.

  Tensors are `{binary, shape}` (little-endian f32) or `{binary, shape, dtype}` with dtype
  `:f32 | :f16 | :bf16`. Weights are `[out, in]` (`[n, k]`), the layout Hugging Face stores
  (`nn.Linear.weight`); a bias is an f32 binary of `n` values or `nil`. Every function
  returns `{:ok, value}` or `{:error, reason}` with the Reasons listed in `Viva`'s docs:
  a size that does not match a shape is `{:shape_mismatch, name, expected, got}`, an
  argument of the wrong type (a packed weight where a KV cache belongs, say) is
  `{:invalid_option, arg, value}` — never an exception.

      alias Viva.LowLevel, as: L
      {:ok, w} = L.prepack_fp8_weight_blocked(L.f32_binary(weights), [n, k], 16)
      {:ok, {out, [1, ^n]}} = L.linear_fp8_w8a16({L.f32_binary(x), [1, k]}, w, nil)
      L.to_floats(out)

      {:ok, model} = Viva.load_model("test/fixtures/tiny_gqa")
      {:ok, cache} = L.kv_cache_new(model, 64)
      {:ok, next_id} = L.decode_step(model, 1, cache, 0)

  A `decode_step/4` loop that feeds its prompt as one list gives exactly `Viva.generate/3`'s
  greedy tokens: both run the same Rust decode state.

  FP8 weights are E4M3 codes (3 mantissa bits) with an f32 scale per output row
  (`prepack_fp8_weight/2`) or per `block` values along K (`prepack_fp8_weight_blocked/3`),
  scale = absmax / 448; each weight is off by at most 2⁻⁴ of itself plus 2⁻¹⁰ of its scale.
  K need not be a multiple of the block (the last block of a row is shorter).
  """

  @typedoc "Element type of a tensor's little-endian binary."
  @type dtype :: :f32 | :f16 | :bf16

  @typedoc "`{binary, [m, k]}` (f32) or `{binary, [m, k], dtype}`."
  @type tensor :: {binary, [pos_integer]} | {binary, [pos_integer], dtype}

  @typedoc "An FP8 E4M3 prepacked weight (a NIF resource)."
  @type packed :: reference

  @typedoc "An embedding table (a NIF resource)."
  @type table :: reference

  @typedoc "One sequence's KV cache on one model (a NIF resource)."
  @type kv_cache :: reference

  @typedoc "f32 little-endian, one value per output row, or `nil`."
  @type bias :: binary | nil

  @typedoc "`%{n: n, k: k, block: 16 | 32 | 64 | 128 | :per_channel, bytes: bytes}`."
  @type packed_info :: %{
          n: pos_integer,
          k: pos_integer,
          block: 16 | 32 | 64 | 128 | :per_channel,
          bytes: pos_integer
        }

  @doc """
  FP8 E4M3 prepack with one scale per output row; `weight` is f32 `[n, k]` (`[out, in]`).

      {:ok, w} = Viva.LowLevel.prepack_fp8_weight(Viva.LowLevel.f32_binary(floats), [n, k])
  """
  @spec prepack_fp8_weight(binary, [pos_integer]) :: {:ok, packed} | {:error, Viva.reason()}
  defdelegate prepack_fp8_weight(weight, shape), to: :viva_tensor_lowlevel

  @doc """
  FP8 E4M3 prepack with one scale per `block` (16, 32, 64 or 128) values along K;
  another block size is `{:error, {:invalid_option, :block, block}}`.

      {:ok, w} = Viva.LowLevel.prepack_fp8_weight_blocked(weight_f32, [n, k], 16)
  """
  @spec prepack_fp8_weight_blocked(binary, [pos_integer], 16 | 32 | 64 | 128) ::
          {:ok, packed} | {:error, Viva.reason()}
  defdelegate prepack_fp8_weight_blocked(weight, shape, block), to: :viva_tensor_lowlevel

  @doc """
  The shape, scale grouping and size in bytes (codes + scales) of a packed weight.

      {:ok, %{n: 8, k: 32, block: 16, bytes: 320}} = Viva.LowLevel.packed_info(w)   # 256 codes + 16 scales
  """
  @spec packed_info(packed) :: {:ok, packed_info} | {:error, Viva.reason()}
  defdelegate packed_info(packed), to: :viva_tensor_lowlevel

  @doc """
  `input · Wᵀ + bias` (W8A16): activations are read in their own dtype, weights dequantized
  in the inner loop, f32 accumulation. `input` is `[m, k]`; the result is f32 `[m, n]`.

      {:ok, {out, [2, n]}} = Viva.LowLevel.linear_fp8_w8a16({x_bf16, [2, k], :bf16}, w, nil)
  """
  @spec linear_fp8_w8a16(tensor, packed, bias) :: {:ok, tensor} | {:error, Viva.reason()}
  defdelegate linear_fp8_w8a16(input, packed, bias), to: :viva_tensor_lowlevel

  @doc """
  W8A8: each input row is first quantized to E4M3 with its own absmax scale, then
  multiplied as `linear_fp8_w8a16/3` does. Result f32 `[m, n]`.

      {:ok, {out, [1, n]}} = Viva.LowLevel.linear_fp8({x, [1, k]}, w, bias)
  """
  @spec linear_fp8(tensor, packed, bias) :: {:ok, tensor} | {:error, Viva.reason()}
  defdelegate linear_fp8(input, packed, bias), to: :viva_tensor_lowlevel

  @doc """
  `gelu(input · Wᵀ + bias)`, GELU in its erf form (Hugging Face's `"gelu"`), fused.

      {:ok, {out, [1, n]}} = Viva.LowLevel.linear_gelu_fp8({x, [1, k]}, w, nil)
  """
  @spec linear_gelu_fp8(tensor, packed, bias) :: {:ok, tensor} | {:error, Viva.reason()}
  defdelegate linear_gelu_fp8(input, packed, bias), to: :viva_tensor_lowlevel

  @doc """
  SwiGLU, fused: `packed` holds the gate rows then the up rows (`2·i` rows, so `n = 2·i`);
  the result is f32 `[m, i]` of `silu(x·gateᵀ + b_gate) · (x·upᵀ + b_up)`. A bias, if any,
  has `n` values: the gate's then the up's.

      {:ok, gate_up} = Viva.LowLevel.prepack_fp8_weight_blocked(gate <> up, [2 * i, k], 16)
      {:ok, {out, [1, ^i]}} = Viva.LowLevel.linear_swiglu_fp8({x, [1, k]}, gate_up, nil)
  """
  @spec linear_swiglu_fp8(tensor, packed, bias) :: {:ok, tensor} | {:error, Viva.reason()}
  defdelegate linear_swiglu_fp8(input, packed, bias), to: :viva_tensor_lowlevel

  @doc """
  A `(rows, cols)` embedding table from a little-endian binary of `dtype` values, copied
  once and kept in its dtype.

      {:ok, table} = Viva.LowLevel.embedding_table_new(bf16_bin, vocab, hidden, :bf16)
  """
  @spec embedding_table_new(binary, pos_integer, pos_integer, dtype) ::
          {:ok, table} | {:error, Viva.reason()}
  defdelegate embedding_table_new(bin, rows, cols, dtype), to: :viva_tensor_lowlevel

  @doc """
  Row `id` (0-based) of a table as an f32 binary of `cols` values; past the last row it is
  `{:error, {:token_out_of_range, id, rows}}`.

      {:ok, row} = Viva.LowLevel.embedding_row(table, 42)
      Viva.LowLevel.to_floats(row)
  """
  @spec embedding_row(table, non_neg_integer) :: {:ok, binary} | {:error, Viva.reason()}
  defdelegate embedding_row(table, id), to: :viva_tensor_lowlevel

  @doc """
  A KV cache for one sequence on `model`, with room for its whole context
  (`max_position_embeddings`).

      {:ok, cache} = Viva.LowLevel.kv_cache_new(model)
  """
  @spec kv_cache_new(Viva.model()) :: {:ok, kv_cache} | {:error, Viva.reason()}
  defdelegate kv_cache_new(model), to: :viva_tensor_lowlevel

  @doc """
  A KV cache with room for `max_seq` positions (1..`max_position_embeddings`; another value
  is `{:error, {:invalid_option, :max_seq, max_seq}}`).

      {:ok, cache} = Viva.LowLevel.kv_cache_new(model, 64)
  """
  @spec kv_cache_new(Viva.model(), pos_integer) :: {:ok, kv_cache} | {:error, Viva.reason()}
  defdelegate kv_cache_new(model, max_seq), to: :viva_tensor_lowlevel

  @doc """
  Runs `token` at position `pos` (0-based), appends its K/V to `cache` and returns the
  greedy (argmax) next id. `pos` may be at most the number of positions filled so far; a
  smaller one rewinds the sequence to there. A cache belongs to the model it was made for.

  `token` may be a non-empty list of ids, fed at `pos`, `pos + 1`, … as one batched pass (the
  path `Viva.generate/3` takes for a prompt): a loop that feeds its prompt so and then one id
  per step gives exactly generate's greedy tokens; feeding the prompt one id at a time agrees
  up to summation order.

      {:ok, cache} = Viva.LowLevel.kv_cache_new(model, 64)
      {:ok, next} = Viva.LowLevel.decode_step(model, prompt_ids, cache, 0)
      {:ok, after_next} = Viva.LowLevel.decode_step(model, next, cache, length(prompt_ids))
  """
  @spec decode_step(Viva.model(), non_neg_integer | [non_neg_integer, ...], kv_cache, non_neg_integer) ::
          {:ok, non_neg_integer} | {:error, Viva.reason()}
  defdelegate decode_step(model, token, cache, pos), to: :viva_tensor_lowlevel

  @doc """
  Like `decode_step/4`, but returns the `k` (1..256) best `{id, logit}` pairs, highest
  logit first (lower id first on ties) — the raw material of a custom sampler.

      {:ok, [{best_id, best_logit} | _]} = Viva.LowLevel.decode_step_topk(model, 1, cache, 0, 40)
  """
  @spec decode_step_topk(Viva.model(), non_neg_integer, kv_cache, non_neg_integer, 1..256) ::
          {:ok, [{non_neg_integer, float}]} | {:error, Viva.reason()}
  defdelegate decode_step_topk(model, token, cache, pos, k), to: :viva_tensor_lowlevel

  @doc """
  A list of numbers as a little-endian f32 binary (`:nan`, `:infinity` and `:neg_infinity`
  allowed, as `to_floats/1` gives them back).

      <<0, 0, 128, 63, 0, 0, 0, 64>> = Viva.LowLevel.f32_binary([1, 2.0])
  """
  @spec f32_binary([number | :nan | :infinity | :neg_infinity]) :: binary
  def f32_binary(list) when is_list(list), do: for(x <- list, into: <<>>, do: f32(x))

  defp f32(x) when is_number(x), do: <<x::float-32-little>>
  defp f32(:nan), do: <<0x7FC00000::32-little>>
  defp f32(:infinity), do: <<0x7F800000::32-little>>
  defp f32(:neg_infinity), do: <<0xFF800000::32-little>>

  @doc """
  A little-endian f32 binary as a list of floats; NaN and the infinities, which BEAM floats
  cannot hold, come back as `:nan`, `:infinity` and `:neg_infinity`.

      [1.0, 2.0] = Viva.LowLevel.to_floats(<<0, 0, 128, 63, 0, 0, 0, 64>>)
  """
  @spec to_floats(binary) :: [float | :nan | :infinity | :neg_infinity]
  def to_floats(bin) when is_binary(bin) and rem(byte_size(bin), 4) == 0,
    do: for(<<bits::32-little <- bin>>, do: float(bits))

  defp float(bits) do
    case <<bits::32>> do
      <<x::float-32>> -> x
      <<0::1, 0xFF::8, 0::23>> -> :infinity
      <<1::1, 0xFF::8, 0::23>> -> :neg_infinity
      _ -> :nan
    end
  end
end
