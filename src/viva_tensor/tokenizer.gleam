//// A Hugging Face `tokenizer.json` on its own: the tokenizer `viva_tensor.generate` uses.

import viva_tensor.{type Error}

pub type Tokenizer

@external(erlang, "viva_tensor_low_level_ffi", "tokenizer_load")
pub fn load(path: String) -> Result(Tokenizer, Error)

/// Token ids, special tokens (BOS) added as Hugging Face does.
@external(erlang, "viva_tensor_low_level_ffi", "tokenizer_encode")
pub fn encode(tokenizer: Tokenizer, text: String) -> Result(List(Int), Error)

/// Text of `ids`, special tokens skipped.
@external(erlang, "viva_tensor_low_level_ffi", "tokenizer_decode")
pub fn decode(tokenizer: Tokenizer, ids: List(Int)) -> Result(String, Error)
