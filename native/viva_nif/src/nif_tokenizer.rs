//! Tokenizer NIFs behind `viva_tensor_tokenizer_ffi`: load a tokenizer.json as a resource,
//! encode (special tokens added as HF's `encode` does) and decode (special tokens skipped).
use rustler::{Env, ResourceArc, Term};
use viva_core::tokenizer::Tokenizer;

use crate::args::{self, list_of, ok, resource, run, utf8};
use crate::resources_tokenizer::TokenizerResource;

rustler::atoms! { path, tokenizer, text, ids }

/// `{ok, Tokenizer}` from a tokenizer.json path (a binary of path bytes).
#[rustler::nif(schedule = "DirtyIo")]
fn tokenizer_load<'a>(env: Env<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || ok(env, ResourceArc::new(TokenizerResource(Tokenizer::from_file(&args::path(p, path())?)?))))
}

/// `{ok, [Id]}` of a UTF-8 binary, BOS (and any other post-processor tokens) added as HF does.
#[rustler::nif(schedule = "DirtyCpu")]
fn tokenizer_encode<'a>(env: Env<'a>, t: Term<'a>, s: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok = resource::<TokenizerResource>(t, tokenizer())?;
        ok(env, tok.0.encode(utf8(s, text())?, true)?)
    })
}

/// `{ok, Binary}`: the text of a list of ids, special tokens skipped. Ids past the vocabulary
/// decode to nothing, as in HF.
#[rustler::nif(schedule = "DirtyCpu")]
fn tokenizer_decode<'a>(env: Env<'a>, t: Term<'a>, i: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok = resource::<TokenizerResource>(t, tokenizer())?;
        let list: Vec<u32> = list_of(i, ids())?;
        ok(env, tok.0.decode(&list, true)?)
    })
}
