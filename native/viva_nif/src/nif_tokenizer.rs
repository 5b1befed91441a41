//! Tokenizer NIFs behind `viva_tensor_tokenizer_ffi`: load a tokenizer.json as a resource,
//! encode (special tokens added as HF's `encode` does) and decode (special tokens skipped).
use rustler::{Binary, Env, ResourceArc, Term};
use viva_core::tokenizer::Tokenizer;
use viva_core::Error;

use crate::nif_safetensors::{bad, engine, ok, path_arg, run};
use crate::reason::error_tuple;
use crate::resources_tokenizer::TokenizerResource;

rustler::atoms! { path, tokenizer, text, ids }

/// `{ok, Tokenizer}` from a tokenizer.json path (a binary of path bytes).
#[rustler::nif(schedule = "DirtyIo")]
fn tokenizer_load<'a>(env: Env<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok = engine(env, Tokenizer::from_file(&path_arg(env, p, path())?))?;
        Ok(ok(env, ResourceArc::new(TokenizerResource(tok))))
    })
}

/// `{ok, [Id]}` of a UTF-8 binary, BOS (and any other post-processor tokens) added as HF does.
#[rustler::nif(schedule = "DirtyCpu")]
fn tokenizer_encode<'a>(env: Env<'a>, t: Term<'a>, s: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok: ResourceArc<TokenizerResource> = t.decode().map_err(|_| bad(env, tokenizer(), t))?;
        let bytes = Binary::from_term(s).map_err(|_| bad(env, text(), s))?;
        let input = std::str::from_utf8(bytes.as_slice()).map_err(|_| error_tuple(env, &Error::InvalidUtf8))?;
        Ok(ok(env, engine(env, tok.0.encode(input, true))?))
    })
}

/// `{ok, Binary}`: the text of a list of ids, special tokens skipped. Ids past the vocabulary
/// decode to nothing, as in HF.
#[rustler::nif(schedule = "DirtyCpu")]
fn tokenizer_decode<'a>(env: Env<'a>, t: Term<'a>, i: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok: ResourceArc<TokenizerResource> = t.decode().map_err(|_| bad(env, tokenizer(), t))?;
        let list: Vec<u32> = i.decode().map_err(|_| bad(env, ids(), i))?;
        Ok(ok(env, engine(env, tok.0.decode(&list, true))?))
    })
}
