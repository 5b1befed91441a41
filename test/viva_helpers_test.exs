defmodule Viva.HelpersTest do
  # Viva.Safetensors and Viva.Tokenizer over the HF fixtures (the EUnit suite
  # viva_tensor_helpers_tests checks every tensor and the bit-level conversions; these cases
  # check the Elixir surface).
  use ExUnit.Case, async: true

  alias :viva_tensor_test_support, as: Support

  defp fixture(name), do: Support.fixture(String.to_charlist(name)) |> List.to_string()
  defp expected(name), do: Support.expected(String.to_charlist(name))
  defp f32(list), do: for(x <- list, into: <<>>, do: <<x * 1.0::float-32-little>>)

  test "open_header: header offsets, shards, unreadable paths" do
    {:ok, header} = Viva.Safetensors.open_header(fixture("tiny_gqa"))

    assert %{
             dtype: "BF16",
             shape: [256],
             data_offsets: {b, e},
             offset: off,
             size: 512,
             file: file,
             data_start: start
           } = header["model.norm.weight"]

    assert e - b == 512 and off == start + b
    # the bytes at `offset` are the tensor: read_tensor_bf16 of a BF16 tensor is verbatim
    {:ok, raw} = File.read(file)

    assert {:ok, {[256], binary_part(raw, off, 512)}} ==
             Viva.Safetensors.read_tensor_bf16(fixture("tiny_gqa"), "model.norm.weight")

    {:ok, sharded} = Viva.Safetensors.open_header(fixture("tiny_mha_sharded"))
    assert sharded |> Map.values() |> Enum.map(& &1.file) |> Enum.uniq() |> length() == 2

    assert {:error, {:file_not_found, _}} =
             Viva.Safetensors.open_header("/nonexistent/model.safetensors")

    assert {:error, {:missing_tensor, "nope"}} =
             Viva.Safetensors.read_tensor_bf16(fixture("tiny_gqa"), "nope")
  end

  test "bf16 → f32 and transpose" do
    # an F32 tensor read as bf16 and widened back stays within 2^-8 relative
    {:ok, {[128], bf16}} =
      Viva.Safetensors.read_tensor_bf16(fixture("tiny_tied_llama3"), "model.norm.weight")

    {:ok, f32s} = Viva.Safetensors.bf16_to_fp32_binary(bf16)
    assert byte_size(f32s) == 512

    assert {:ok, <<1.0::float-32-little, -2.0::float-32-little>>} =
             Viva.Safetensors.bf16_to_fp32_binary(<<0x80, 0x3F, 0x00, 0xC0>>)

    assert {:error, {:shape_mismatch, _, [4], [3]}} =
             Viva.Safetensors.bf16_to_fp32_binary(<<1, 2, 3>>)

    m = f32([1, 2, 3, 4, 5, 6])
    assert {:ok, f32([1, 4, 2, 5, 3, 6])} == Viva.Safetensors.transpose_fp32(m, 2, 3)
    big = :rand.bytes(300 * 70 * 4)
    {:ok, t} = Viva.Safetensors.transpose_fp32(big, 300, 70)
    assert {:ok, big} == Viva.Safetensors.transpose_fp32(t, 70, 300)

    assert {:error, {:shape_mismatch, "transpose_fp32 bytes", [48], [24]}} =
             Viva.Safetensors.transpose_fp32(m, 4, 3)

    assert {:error, {:invalid_option, :rows, 0}} = Viva.Safetensors.transpose_fp32(m, 0, 3)
  end

  test "tokenizer: HF ids and text for every fixture, errors" do
    for name <- ["tiny_gqa", "tiny_tied_llama3", "tiny_mha_sharded"] do
      exp = expected(name)
      {:ok, tok} = Viva.Tokenizer.load(Path.join(fixture(name), "tokenizer.json"))
      assert Viva.Tokenizer.encode(tok, exp["prompt"]) == {:ok, exp["input_ids"]}
      assert Viva.Tokenizer.decode(tok, exp["greedy_tokens"]) == {:ok, exp["greedy_text"]}
      assert Viva.Tokenizer.decode(tok, exp["input_ids"]) == {:ok, exp["prompt"]}
    end

    {:ok, tok} = Viva.Tokenizer.load(Path.join(fixture("tiny_gqa"), "tokenizer.json"))
    assert {:error, :invalid_utf8} = Viva.Tokenizer.encode(tok, <<255, 254>>)
    assert {:error, {:invalid_option, :tokenizer, _}} = Viva.Tokenizer.encode(make_ref(), "x")
    assert {:error, {:invalid_option, :ids, _}} = Viva.Tokenizer.decode(tok, [:a])
    assert {:error, {:file_not_found, _}} = Viva.Tokenizer.load("/nonexistent/tokenizer.json")

    # shared by processes
    results =
      1..4
      |> Enum.map(fn _ -> Task.async(fn -> Viva.Tokenizer.encode(tok, "hello world") end) end)
      |> Task.await_many()

    assert results |> Enum.uniq() |> length() == 1
  end
end
