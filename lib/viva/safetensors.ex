defmodule Viva.Safetensors do
  @moduledoc """
  Safetensors access and bulk conversions (wraps `:viva_tensor_safetensors_ffi`), for code
  that builds its own layers. A checkpoint is a `.safetensors` file, a
  `model.safetensors.index.json` or a folder holding either; tensors are little-endian
  binaries, row-major. Every function returns `{:ok, _}` or `{:error, reason}` (reasons as in
  `Viva.Error`).

      {:ok, header} = Viva.Safetensors.open_header("test/fixtures/tiny_gqa")
      %{dtype: "BF16", shape: [256], data_offsets: {_, _}} = header["model.norm.weight"]
      {:ok, {[256], bf16}} = Viva.Safetensors.read_tensor_bf16("test/fixtures/tiny_gqa", "model.norm.weight")
      {:ok, f32} = Viva.Safetensors.bf16_to_fp32_binary(bf16)
      {:ok, f32_t} = Viva.Safetensors.transpose_fp32(f32, 16, 16)
  """

  @typedoc """
  One header entry. `data_offsets` is the header's own `{begin, end}` (relative to the data
  section of `file`, which starts at byte `data_start`); `offset` = `data_start + begin` and
  `size` = `end - begin`. Tensors of dtypes the engine cannot read (`"I64"`, ...) have only
  `:dtype`, `:file` and `:data_start`.
  """
  @type entry :: %{
          required(:dtype) => String.t(),
          required(:file) => binary,
          required(:data_start) => non_neg_integer,
          optional(:shape) => [non_neg_integer],
          optional(:data_offsets) => {non_neg_integer, non_neg_integer},
          optional(:offset) => non_neg_integer,
          optional(:size) => non_neg_integer
        }

  @doc "Every tensor of the checkpoint (all shards): `%{name => entry}`."
  @spec open_header(Path.t()) :: {:ok, %{String.t() => entry}} | {:error, term}
  defdelegate open_header(path), to: :viva_tensor_safetensors_ffi

  @doc """
  `{shape, bf16_binary}` of one tensor: BF16 verbatim, F16/F32 rounded to nearest even
  (±Inf and NaN kept, F32 beyond bf16's range → ±Inf).
  """
  @spec read_tensor_bf16(Path.t(), String.t()) ::
          {:ok, {[non_neg_integer], binary}} | {:error, term}
  defdelegate read_tensor_bf16(path, name), to: :viva_tensor_safetensors_ffi

  @doc "Little-endian bf16 → little-endian f32, exact (an odd byte count is a `:shape_mismatch`)."
  @spec bf16_to_fp32_binary(binary) :: {:ok, binary} | {:error, term}
  defdelegate bf16_to_fp32_binary(bin), to: :viva_tensor_safetensors_ffi

  @doc """
  A `(rows, cols)` row-major f32 matrix transposed to `(cols, rows)`, cache-tiled and
  multi-threaded. `rows * cols * 4 != byte_size(bin)` is
  `{:error, {:shape_mismatch, "transpose_fp32 bytes", [expected], [got]}}`.
  """
  @spec transpose_fp32(binary, pos_integer, pos_integer) :: {:ok, binary} | {:error, term}
  defdelegate transpose_fp32(bin, rows, cols), to: :viva_tensor_safetensors_ffi
end
