defmodule Viva.Tokenizer do
  @moduledoc """
  A Hugging Face `tokenizer.json` on its own (wraps `:viva_tensor_tokenizer_ffi`): the same
  tokenizer `Viva.generate/3` uses, as a resource any number of processes may share. Every
  function returns `{:ok, _}` or `{:error, reason}`.

      {:ok, tok} = Viva.Tokenizer.load("test/fixtures/tiny_gqa/tokenizer.json")
      {:ok, [1 | _] = ids} = Viva.Tokenizer.encode(tok, "Hello")
      {:ok, "Hello"} = Viva.Tokenizer.decode(tok, ids)
  """

  @typedoc "A loaded tokenizer (a NIF resource)."
  @opaque t :: :viva_tensor_tokenizer_ffi.tokenizer()

  @doc "Loads a tokenizer.json (`{:file_not_found, path}`, `{:bad_format, path, detail}` on failure)."
  @spec load(Path.t()) :: {:ok, t} | {:error, term}
  defdelegate load(path), to: :viva_tensor_tokenizer_ffi

  @doc """
  Token ids of `text`, special tokens (BOS) added as Hugging Face's `encode` does. A binary
  that is not UTF-8 is `{:error, :invalid_utf8}`.
  """
  @spec encode(t, String.t()) :: {:ok, [non_neg_integer]} | {:error, term}
  defdelegate encode(tokenizer, text), to: :viva_tensor_tokenizer_ffi

  @doc "Text of `ids`, special tokens skipped (ids past the vocabulary decode to nothing)."
  @spec decode(t, [non_neg_integer]) :: {:ok, String.t()} | {:error, term}
  defdelegate decode(tokenizer, ids), to: :viva_tensor_tokenizer_ffi
end
