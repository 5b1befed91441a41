//! Rustler binding of viva_core: decode terms → call the engine → encode the result.
//! No math lives here; every NIF returns `{ok, T}` or `{error, Reason}` (see reason.rs) and
//! never lets a panic reach the VM.
mod nif_lowlevel;
mod nif_model;
mod nif_safetensors;
mod nif_stream;
mod nif_tokenizer;
mod reason;
mod resources;
mod resources_tokenizer;

rustler::init!("viva_tensor_nif");
