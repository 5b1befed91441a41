defmodule Viva.SmolLM2Test do
  # The real SmolLM2-135M-Instruct GGUF through the Elixir API (needs VIVA_SMOLLM2_GGUF,
  # which scripts/test.sh sets): transformers' greedy tokens and a chat answer.
  use ExUnit.Case, async: false

  @gguf System.get_env("VIVA_SMOLLM2_GGUF")
  if @gguf == nil, do: IO.puts("VIVA_SMOLLM2_GGUF unset: SmolLM2 tests not run")

  if @gguf do
    setup_all do
      %{model: Viva.load_model!(@gguf, weights: :native)}
    end

    test "greedy tokens equal transformers on three prompts", %{model: model} do
      exp = :viva_tensor_test_json.read_file(~c"test/fixtures/gguf/smollm2_expected.json")

      for c <- exp["cases"] do
        r = Viva.generate!(model, c["prompt"], max_new_tokens: 20, stop_on_eos: false)
        assert r.tokens == c["greedy_tokens"]
        assert r.text == c["greedy_text"]
      end
    end

    test "a chat question about France is answered with Paris", %{model: model} do
      r = Viva.chat!(model, [%{role: "user", content: "What is the capital of France?"}], max_new_tokens: 30)
      assert r.text =~ "Paris"
      assert {:error, {:no_chat_template, _}} =
               Viva.chat(Viva.load_model!("test/fixtures/tiny_gqa"), [%{role: "user", content: "hi"}])
    end
  end
end
