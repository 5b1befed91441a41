//// Safetensors access and bulk conversions (a `.safetensors` file, a
//// `model.safetensors.index.json` or a folder); matrices are f32 little-endian bits.

import viva_tensor.{type Error}

/// `offset` is the byte offset in the tensor's file; dtypes the engine cannot read have
/// `shape: []`, `data_offsets: #(-1, -1)`, `offset: -1`, `size: -1`.
pub type HeaderEntry {
  HeaderEntry(
    name: String,
    dtype: String,
    shape: List(Int),
    /// `#(begin, end)` as in the header, relative to the data section.
    data_offsets: #(Int, Int),
    offset: Int,
    size: Int,
  )
}

/// Every tensor of a checkpoint, sorted by name.
@external(erlang, "viva_tensor_low_level_ffi", "open_header")
pub fn open_header(path: String) -> Result(List(HeaderEntry), Error)

/// `#(shape, bf16 bits)` of a tensor (F16/F32 rounded to nearest even).
@external(erlang, "viva_tensor_low_level_ffi", "read_tensor_bf16")
pub fn read_tensor_bf16(
  path: String,
  name: String,
) -> Result(#(List(Int), BitArray), Error)

/// bf16 → f32, exact.
@external(erlang, "viva_tensor_low_level_ffi", "bf16_to_fp32")
pub fn bf16_to_fp32(data: BitArray) -> Result(BitArray, Error)

/// A `(rows, cols)` f32 matrix transposed to `(cols, rows)`.
@external(erlang, "viva_tensor_low_level_ffi", "transpose_fp32")
pub fn transpose_fp32(
  data: BitArray,
  rows: Int,
  cols: Int,
) -> Result(BitArray, Error)
