defmodule Viva.Tokenizer do
  @moduledoc """
  A Hugging Face `tokenizer.json` on its own (wraps `:viva_tensor_tokenizer_ffi`): the same
  tokenizer `Viva.generate/3` uses, as a resource shareable between processes.

      {:ok, tok} = Viva.Tokenizer.load("test/fixtures/tiny_gqa/tokenizer.json")
      {:ok, ids} = Viva.Tokenizer.encode(tok, "Hello")
      {:ok, "Hello"} = Viva.Tokenizer.decode(tok, ids)
  """

  @doc "Loads a tokenizer.json."
  @spec load(Path.t()) :: {:ok, reference} | {:error, term}
  defdelegate load(path), to: :viva_tensor_tokenizer_ffi

  @doc "Token ids, special tokens (BOS) added as Hugging Face does."
  @spec encode(reference, String.t()) :: {:ok, [non_neg_integer]} | {:error, term}
  defdelegate encode(tokenizer, text), to: :viva_tensor_tokenizer_ffi

  @doc "Text of `ids`, special tokens skipped."
  @spec decode(reference, [non_neg_integer]) :: {:ok, String.t()} | {:error, term}
  defdelegate decode(tokenizer, ids), to: :viva_tensor_tokenizer_ffi
end
