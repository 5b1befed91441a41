defmodule Viva.LowLevelTest do
  # Viva.LowLevel, Viva.Safetensors and Viva.Tokenizer over the HF fixtures.
  use ExUnit.Case, async: true

  alias :viva_tensor_test_support, as: Support
  alias Viva.LowLevel, as: L

  defp fixture(name), do: Support.fixture(String.to_charlist(name)) |> List.to_string()
  defp expected(name), do: Support.expected(String.to_charlist(name))

  test "a decode_step loop reproduces generate's greedy tokens" do
    exp = expected("tiny_tied_llama3")
    model = Viva.load_model!(fixture("tiny_tied_llama3"), weights: :native)
    {:ok, cache} = L.kv_cache_new(model, 64)
    ids = exp["input_ids"]

    first =
      ids
      |> Enum.with_index()
      |> Enum.reduce(nil, fn {id, pos}, _ -> elem(L.decode_step(model, id, cache, pos), 1) end)

    {tokens, _} =
      Enum.map_reduce(1..19, {first, length(ids)}, fn _, {last, pos} ->
        {:ok, next} = L.decode_step(model, last, cache, pos)
        {next, {next, pos + 1}}
      end)

    assert [first | tokens] == exp["greedy_tokens"]
    assert {:ok, [{_, _} | _] = top} = L.decode_step_topk(model, 1, cache, 0, 4)
    assert length(top) == 4
    assert {:error, {:invalid_option, :k, 0}} = L.decode_step_topk(model, 1, cache, 0, 0)
  end

  test "fp8 prepack and linears stay close to the f32 product" do
    {n, k} = {8, 32}
    w = for r <- 0..(n - 1), c <- 0..(k - 1), do: :math.sin(r * 7 + c) / 4
    x = for c <- 0..(k - 1), do: :math.cos(c)
    exact = for r <- 0..(n - 1), do: Enum.sum(for c <- 0..(k - 1), do: Enum.at(w, r * k + c) * Enum.at(x, c))
    {:ok, p} = L.prepack_fp8_weight_blocked(L.f32_binary(w), [n, k], 16)
    assert {:ok, %{n: ^n, k: ^k, block: 16}} = L.packed_info(p)
    assert {:ok, {out, [1, ^n]}} = L.linear_fp8_w8a16({L.f32_binary(x), [1, k]}, p, nil)
    # E4M3's 3 mantissa bits: ≤ 2^-4 relative per weight; the sums stay within ~6%
    for {a, e} <- Enum.zip(L.to_floats(out), exact), do: assert(abs(a - e) <= 0.06 * (1 + abs(e)))
    assert {:error, {:shape_mismatch, _, _, _}} = L.linear_fp8({L.f32_binary(x), [1, k - 1]}, p, nil)
    assert {:error, {:invalid_option, :packed, _}} = L.linear_fp8({L.f32_binary(x), [1, k]}, make_ref(), nil)
  end

  test "embedding tables" do
    {:ok, t} = L.embedding_table_new(L.f32_binary([1, 2, 3, 4, 5, 6]), 3, 2, :f32)
    assert {:ok, row} = L.embedding_row(t, 1)
    assert L.to_floats(row) == [3.0, 4.0]
    assert {:error, {:token_out_of_range, 3, 3}} = L.embedding_row(t, 3)
  end

  test "safetensors helpers and the tokenizer" do
    assert {:ok, %{"model.norm.weight" => %{dtype: "BF16", shape: [256]}}} =
             Viva.Safetensors.open_header(fixture("tiny_gqa"))

    assert {:ok, {[256], bf16}} = Viva.Safetensors.read_tensor_bf16(fixture("tiny_gqa"), "model.norm.weight")
    assert {:ok, f32} = Viva.Safetensors.bf16_to_fp32_binary(bf16)
    assert byte_size(f32) == 1024
    assert {:ok, t} = Viva.Safetensors.transpose_fp32(L.f32_binary([1, 2, 3, 4, 5, 6]), 2, 3)
    assert L.to_floats(t) == [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]

    exp = expected("tiny_gqa")
    {:ok, tok} = Viva.Tokenizer.load(Path.join(fixture("tiny_gqa"), "tokenizer.json"))
    assert Viva.Tokenizer.encode(tok, exp["prompt"]) == {:ok, exp["input_ids"]}
    assert Viva.Tokenizer.decode(tok, exp["greedy_tokens"]) == {:ok, exp["greedy_text"]}
    assert {:error, :invalid_utf8} = Viva.Tokenizer.encode(tok, <<255, 254>>)
  end
end
