defmodule Viva.Safetensors do
  @moduledoc """
  Safetensors access and bulk conversions (wraps `:viva_tensor_safetensors_ffi`). A
  checkpoint is a `.safetensors` file, a `model.safetensors.index.json` or a folder; matrices
  are little-endian f32 binaries, row-major.

      {:ok, header} = Viva.Safetensors.open_header("test/fixtures/tiny_gqa")
      {:ok, {[256], bf16}} = Viva.Safetensors.read_tensor_bf16("test/fixtures/tiny_gqa", "model.norm.weight")
      {:ok, f32} = Viva.Safetensors.bf16_to_fp32_binary(bf16)
  """

  @doc "Every tensor: `%{name => %{dtype:, shape:, offset:, size:}}` (offset within its file)."
  @spec open_header(Path.t()) :: {:ok, %{binary => map}} | {:error, term}
  defdelegate open_header(path), to: :viva_tensor_safetensors_ffi

  @doc "`{shape, bf16_binary}` of a tensor (F16/F32 rounded to nearest even)."
  @spec read_tensor_bf16(Path.t(), String.t()) :: {:ok, {[non_neg_integer], binary}} | {:error, term}
  defdelegate read_tensor_bf16(path, name), to: :viva_tensor_safetensors_ffi

  @doc "bf16 → f32, exact."
  @spec bf16_to_fp32_binary(binary) :: {:ok, binary} | {:error, term}
  defdelegate bf16_to_fp32_binary(bin), to: :viva_tensor_safetensors_ffi

  @doc "A `(rows, cols)` f32 matrix transposed to `(cols, rows)` (cache-tiled, multi-threaded)."
  @spec transpose_fp32(binary, pos_integer, pos_integer) :: {:ok, binary} | {:error, term}
  defdelegate transpose_fp32(bin, rows, cols), to: :viva_tensor_safetensors_ffi
end
