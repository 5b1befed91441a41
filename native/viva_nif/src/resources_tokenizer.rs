//! The standalone tokenizer resource of `viva_tensor_tokenizer_ffi` (nif_tokenizer.rs).
use viva_core::tokenizer::Tokenizer;

/// A loaded tokenizer.json. `Tokenizer` is `Send + Sync` and immutable, so one handle serves
/// any number of processes at once without a lock.
pub struct TokenizerResource(pub Tokenizer);

#[rustler::resource_impl]
impl rustler::Resource for TokenizerResource {}
