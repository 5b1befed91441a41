//! Rustler binding of viva_core: decode terms → call the engine → encode the result.
//! No math lives here; every NIF decodes its arguments with args.rs, runs under `args::run`
//! and returns `{ok, T}` or `{error, Reason}` (reason.rs), never a badarg or a panic.
mod args;
mod nif_lowlevel;
mod nif_model;
mod nif_safetensors;
mod nif_request;
mod nif_tokenizer;
mod reason;
mod resources;
mod resources_tokenizer;

rustler::init!("viva_tensor_nif");
