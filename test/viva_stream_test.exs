defmodule Viva.StreamTest do
  use ExUnit.Case, async: true

  alias :viva_tensor_test_support, as: Support

  test "Viva.stream/3 chunks concatenate to generate's text; halting early cancels" do
    model = Viva.load_model!(Support.fixture(~c"tiny_gqa") |> List.to_string(), weights: :native)
    opts = [max_new_tokens: 30, stop_on_eos: false]
    text = model |> Viva.stream("The quick brown fox", opts) |> Enum.join()
    assert text == Viva.generate!(model, "The quick brown fox", opts).text
    assert [_, _] = model |> Viva.stream("The quick brown fox", opts) |> Enum.take(2)
    assert_raise Viva.Error, fn -> model |> Viva.stream("hi", top_k: 0) |> Enum.to_list() end
    assert_raise Viva.Error, fn -> model |> Viva.stream("hi", max_new_tokens: 1000) |> Enum.to_list() end
  end
end
