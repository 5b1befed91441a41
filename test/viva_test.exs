defmodule VivaTest do
  # Viva (Elixir API) against the HF reference fixtures in $VIVA_FIXTURES (default
  # test/fixtures). The module shares its models, so it runs its tests serially.
  use ExUnit.Case, async: false

  alias :viva_tensor_test_support, as: Support

  @fixtures ["tiny_gqa", "tiny_tied_llama3", "tiny_mha_sharded"]
  @greedy [max_new_tokens: 20, stop_on_eos: false]

  setup_all do
    models = Map.new(@fixtures, fn name -> {name, Viva.load_model!(fixture(name), weights: :native)} end)
    expected = Map.new(@fixtures, fn name -> {name, Support.expected(String.to_charlist(name))} end)
    tmp = Support.tmp_dir()
    on_exit(fn -> Support.rm_rf(tmp) end)
    %{models: models, expected: expected, tmp: tmp}
  end

  defp fixture(name), do: name |> String.to_charlist() |> Support.fixture() |> to_string()

  defp broken(kind, tmp), do: kind |> Support.break(tmp) |> to_string()

  # The fixture's reference greedy result, through `model`.
  defp assert_greedy(model, expected) do
    assert {:ok, result} = Viva.generate(model, expected["prompt"], @greedy)
    assert result.tokens == expected["greedy_tokens"]
    assert result.text == expected["greedy_text"]
    assert result.total_tokens == length(expected["input_ids"]) + length(expected["greedy_tokens"])
    result
  end

  # After an error: the VM is up and an already loaded model still generates correctly.
  defp assert_still_works(ctx) do
    assert Process.alive?(self())
    assert_greedy(ctx.models["tiny_gqa"], ctx.expected["tiny_gqa"])
  end

  describe "reference fixtures" do
    for name <- ["tiny_gqa", "tiny_tied_llama3", "tiny_mha_sharded"] do
      @name name
      test "greedy tokens and text equal HF: #{name}", ctx do
        result = assert_greedy(ctx.models[@name], ctx.expected[@name])
        assert length(result.tokens) == 20
        assert is_float(result.ms_per_token) and result.ms_per_token >= 0.0
        assert result |> Map.keys() |> Enum.sort() == [:ms_per_token, :text, :tokens, :total_tokens]
      end
    end

    test "generate!/3 and a map of options give the same result", ctx do
      e = ctx.expected["tiny_tied_llama3"]
      m = ctx.models["tiny_tied_llama3"]
      result = Viva.generate!(m, e["prompt"], Map.new(@greedy))
      assert result.tokens == e["greedy_tokens"]
      assert result.text == e["greedy_text"]
    end

    test "load_model with options and a single-file path", ctx do
      model = Viva.load_model!(Path.join(fixture("tiny_gqa"), "model.safetensors"), device: :cpu, weights: :native)
      assert_greedy(model, ctx.expected["tiny_gqa"])
      assert {:ok, %{num_hidden_layers: 1}} =
               fixture("tiny_gqa") |> Viva.load_model!(num_layers: 1) |> Viva.model_info()
    end

    test "activations: :bf16 loads and follows HF on the first token", ctx do
      e = ctx.expected["tiny_gqa"]

      for weights <- [:native, :bf16, :fp8] do
        model = Viva.load_model!(fixture("tiny_gqa"), weights: weights, activations: :bf16)
        assert %{tokens: [first]} = Viva.generate!(model, e["prompt"], Map.new(@greedy) |> Map.put(:max_new_tokens, 1))
        assert first == hd(e["greedy_tokens"]), "#{weights}"
      end
    end

    test "model_info/1 reports the config", ctx do
      assert {:ok, info} = Viva.model_info(ctx.models["tiny_mha_sharded"])
      assert info.num_attention_heads == info.num_key_value_heads
      assert info.head_dim == 128
    end

    test "backend_info/0 and the model's backend agree with device: :auto", ctx do
      assert {:ok, %{cuda_available: cuda, cuda_reason: why, auto: auto}} = Viva.backend_info()
      assert is_binary(why)
      assert auto == if(cuda, do: :cuda, else: :cpu)
      assert {:ok, %{backend: ^auto}} = Viva.model_info(ctx.models["tiny_gqa"])
      unless cuda, do: assert({:error, :cuda_unavailable} = Viva.load_model(fixture("tiny_gqa"), device: :cuda))
    end
  end

  describe "sampling" do
    test "the same seed gives the same tokens; another seed others", ctx do
      %{"prompt" => prompt} = ctx.expected["tiny_gqa"]
      m = ctx.models["tiny_gqa"]
      opts = [temperature: 1.0, top_k: 50, top_p: 0.95, max_new_tokens: 20, stop_on_eos: false]
      a = Viva.generate!(m, prompt, [seed: 7] ++ opts)
      b = Viva.generate!(m, prompt, [seed: 7] ++ opts)
      c = Viva.generate!(m, prompt, [seed: 8] ++ opts)
      assert a.tokens == b.tokens
      assert a.text == b.text
      assert a.tokens != c.tokens
    end

    test "top_k: 1 equals greedy", ctx do
      e = ctx.expected["tiny_gqa"]
      result = Viva.generate!(ctx.models["tiny_gqa"], e["prompt"], @greedy ++ [temperature: 1.0, top_k: 1, seed: 3])
      assert result.tokens == e["greedy_tokens"]
    end

    test "8 processes on one handle get identical results", ctx do
      %{"prompt" => prompt, "greedy_tokens" => greedy} = ctx.expected["tiny_mha_sharded"]
      m = ctx.models["tiny_mha_sharded"]

      run = fn opts ->
        1..8
        |> Task.async_stream(fn _ -> Viva.generate!(m, prompt, opts) end, timeout: :infinity, max_concurrency: 8)
        |> Enum.map(fn {:ok, r} -> {r.tokens, r.text} end)
        |> Enum.uniq()
      end

      assert [{^greedy, _}] = run.(@greedy)
      assert [_one] = run.(@greedy ++ [temperature: 0.9, seed: 11])
    end
  end

  describe "bad input gives {:error, reason} and the loaded models keep working" do
    test "missing file", ctx do
      path = Path.join(to_string(ctx.tmp), "no_such_model")
      assert {:error, {:file_not_found, ^path}} = Viva.load_model(path)
      assert_still_works(ctx)
    end

    test "broken checkpoints", ctx do
      cases = [
        truncated: &match?({:bad_format, _, _}, &1),
        corrupt_header: &match?({:bad_format, _, _}, &1),
        missing_tensor: &(&1 == {:missing_tensor, "model.norm.weight"}),
        wrong_shape: &match?({:shape_mismatch, name, exp, got} when is_binary(name) and exp != got, &1),
        unknown_dtype: &match?({:unsupported_dtype, _, "XXX" <> _}, &1),
        bad_config_json: &match?({:bad_format, _, _}, &1),
        bad_tokenizer_json: &match?({:bad_format, _, _}, &1),
        bad_index_json: &match?({:bad_format, _, _}, &1),
        no_tokenizer: &match?({:no_tokenizer, _}, &1)
      ]

      for {kind, expected?} <- cases do
        assert {:error, reason} = Viva.load_model(broken(kind, ctx.tmp)), "#{kind} loaded"
        assert expected?.(reason), "#{kind}: unexpected reason #{inspect(reason)}"
        assert_still_works(ctx)
      end
    end

    test "load_model!/2 raises Viva.Error with the reason", ctx do
      error = assert_raise Viva.Error, fn -> Viva.load_model!(broken(:missing_tensor, ctx.tmp)) end
      assert error.reason == {:missing_tensor, "model.norm.weight"}
      assert Exception.message(error) =~ "missing tensor: model.norm.weight"
    end

    test "bad options: each option, wrong type and out of range", ctx do
      m = ctx.models["tiny_gqa"]

      bad = [
        max_new_tokens: [-1, 1.5, "10"],
        temperature: [-0.5, "hot", :hot],
        top_k: [0, 257, 2.0, :inf],
        top_p: [0, 0.0, 1.5, "0.9"],
        seed: [-1, 1.0, Bitwise.bsl(1, 64)],
        stop_on_eos: [1, "true", nil]
      ]

      for {key, values} <- bad, value <- values do
        assert Viva.generate(m, "hi", [{key, value}]) == {:error, {:invalid_option, key, value}}
      end

      assert Viva.generate(m, "hi", bogus: 1) == {:error, {:invalid_option, :bogus, 1}}
      assert Viva.generate(m, "hi", [1, 2]) == {:error, {:invalid_option, :opts, [1, 2]}}
      assert Viva.generate(m, "hi", :fast) == {:error, {:invalid_option, :opts, :fast}}
      assert Viva.generate(m, "hi", seed: 1, seed: 2) == {:error, {:invalid_option, :seed, 2}}
      assert Viva.load_model(fixture("tiny_gqa"), num_layers: 0) == {:error, {:invalid_option, :num_layers, 0}}
      assert Viva.load_model(fixture("tiny_gqa"), device: :gpu) == {:error, {:invalid_option, :device, :gpu}}
      assert Viva.load_model(fixture("tiny_gqa"), tokenizer_path: 42) == {:error, {:invalid_option, :tokenizer_path, 42}}
      assert Viva.load_model(fixture("tiny_gqa"), bogus: true) == {:error, {:invalid_option, :bogus, true}}
      assert Viva.load_model(fixture("tiny_gqa"), activations: :f16) == {:error, {:invalid_option, :activations, :f16}}

      error = assert_raise Viva.Error, fn -> Viva.generate!(m, "hi", top_p: 2.0) end
      assert error.reason == {:invalid_option, :top_p, 2.0}
      assert_still_works(ctx)
    end

    test "Viva.Error.describe/1 has a sentence for every Reason the NIF can return" do
      for {tag, arity} <- :viva_tensor_nif.reason_tags() do
        reason = if arity == 0, do: tag, else: List.to_tuple([tag | List.duplicate("x", arity)])
        text = Viva.Error.describe(reason)
        assert text != inspect(reason), "no describe/1 clause for #{inspect(reason)}"
        assert is_binary(text)
      end
    end

    test "invalid UTF-8 prompt", ctx do
      assert Viva.generate(ctx.models["tiny_gqa"], <<255, 254>>) == {:error, :invalid_utf8}
      assert_still_works(ctx)
    end

    test "prompt longer than the context", ctx do
      m = ctx.models["tiny_gqa"]
      {:ok, %{max_position_embeddings: max}} = Viva.model_info(m)
      prompt = Support.long_prompt(max)
      assert {:error, {:context_overflow, needed, ^max}} = Viva.generate(m, prompt, max_new_tokens: 1)
      assert needed > max

      %{"prompt" => short, "input_ids" => ids} = ctx.expected["tiny_gqa"]
      needed = length(ids) + max
      assert {:error, {:context_overflow, ^needed, ^max}} = Viva.generate(m, short, max_new_tokens: max)
      assert_still_works(ctx)
    end
  end
end
