//! The only `viva_core::Error` → BEAM Reason mapping. Reasons are atoms or tagged tuples
//! whose strings are binaries (README.md lists them; Gleam mirrors them 1:1).
use rustler::{Atom, Encoder, Env, Term};
use viva_core::Error;

rustler::atoms! {
    ok,
    error,
    file_not_found,
    bad_format,
    missing_tensor,
    shape_mismatch,
    unsupported_dtype,
    invalid_option,
    context_overflow,
    invalid_utf8,
    empty_prompt,
    token_out_of_range,
    no_tokenizer,
    no_chat_template,
    io_error,
    cuda_unavailable,
    cuda_error,
    out_of_memory,
    cancelled,
    internal,
}

/// `Reason` term for an engine error.
pub fn reason<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    match err {
        Error::FileNotFound(path) => (file_not_found(), path.as_str()).encode(env),
        Error::BadFormat { file, detail } => (bad_format(), file.as_str(), detail.as_str()).encode(env),
        Error::MissingTensor(name) => (missing_tensor(), name.as_str()).encode(env),
        Error::ShapeMismatch { name, expected, got } => {
            (shape_mismatch(), name.as_str(), expected.as_slice(), got.as_slice()).encode(env)
        }
        Error::UnsupportedDtype { name, dtype } => {
            (unsupported_dtype(), name.as_str(), dtype.as_str()).encode(env)
        }
        Error::InvalidOption { key, value } => {
            (invalid_option(), option_key(env, key), value.as_str()).encode(env)
        }
        Error::ContextOverflow { needed, max } => (context_overflow(), *needed, *max).encode(env),
        Error::InvalidUtf8 => invalid_utf8().encode(env),
        Error::EmptyPrompt => empty_prompt().encode(env),
        Error::TokenOutOfRange { id, vocab } => (token_out_of_range(), *id, *vocab).encode(env),
        Error::NoTokenizer(path) => (no_tokenizer(), path.as_str()).encode(env),
        Error::NoChatTemplate(path) => (no_chat_template(), path.as_str()).encode(env),
        Error::Io { path, detail } => (io_error(), path.as_str(), detail.as_str()).encode(env),
        Error::CudaUnavailable => cuda_unavailable().encode(env),
        Error::Cuda(msg) => (cuda_error(), msg.as_str()).encode(env),
        Error::OutOfMemory => out_of_memory().encode(env),
        Error::Cancelled => cancelled().encode(env),
        Error::Internal(msg) => internal_reason(env, msg),
    }
}

/// `{error, Reason}` for an engine error.
pub fn error_tuple<'a>(env: Env<'a>, err: &Error) -> Term<'a> {
    (error(), reason(env, err)).encode(env)
}

/// `{error, {internal, Msg}}`: a broken invariant (a caught panic, an encoding failure).
pub fn internal_error<'a>(env: Env<'a>, msg: &str) -> Term<'a> {
    (error(), internal_reason(env, msg)).encode(env)
}

/// `{error, {invalid_option, Key, Value}}` with the caller's own terms, so the Reason shows
/// exactly what was passed.
pub fn invalid_option_error<'a>(env: Env<'a>, key: Term<'a>, value: Term<'a>) -> Term<'a> {
    (error(), (invalid_option(), key, value)).encode(env)
}

fn internal_reason<'a>(env: Env<'a>, msg: &str) -> Term<'a> {
    (internal(), msg).encode(env)
}

/// Option keys are a fixed set of atoms the Erlang layer already created; an unknown key
/// stays a binary so that a string from the engine can never grow the atom table.
fn option_key<'a>(env: Env<'a>, key: &str) -> Term<'a> {
    match Atom::existing_from_str(env, key) {
        Ok(atom) => atom.encode(env),
        Err(_) => key.encode(env),
    }
}
