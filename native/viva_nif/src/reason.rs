//! The only `viva_core::Error` → BEAM Reason mapping, and `Fail`, the one error type of every
//! NIF body. Reasons are atoms or tagged tuples whose strings are binaries (README.md lists
//! them; the Erlang `reason()` type, `Viva.Error` and the Gleam `Error` mirror them, and
//! test/viva_tensor_reasons_tests.erl checks every mirror against `TAGS`).
use rustler::types::tuple::make_tuple;
use rustler::{Atom, Encoder, Env, Term};
use viva_core::Error;

rustler::atoms! { ok, error }

/// An engine error as its Reason term.
pub struct Reason<'e>(pub &'e Error);

/// Why a NIF call failed: encodes as `{error, Reason}`.
pub enum Fail<'a> {
    Engine(Error),
    /// An argument or option term the NIF cannot decode: `{invalid_option, Key, Value}` with
    /// the caller's own terms, so the Reason shows exactly what was passed.
    Arg { key: Term<'a>, value: Term<'a> },
}

impl From<Error> for Fail<'_> {
    fn from(e: Error) -> Self {
        Fail::Engine(e)
    }
}

impl Encoder for Fail<'_> {
    fn encode<'b>(&self, env: Env<'b>) -> Term<'b> {
        let reason = match self {
            Fail::Engine(e) => Reason(e).encode(env),
            Fail::Arg { key, value } => (tag::invalid_option(), *key, *value).encode(env),
        };
        (error(), reason).encode(env)
    }
}

/// An option key from the engine: the atom the Erlang layer already created, else a binary,
/// so that a string from the engine can never grow the atom table.
struct OptionKey<'s>(&'s str);

impl Encoder for OptionKey<'_> {
    fn encode<'b>(&self, env: Env<'b>) -> Term<'b> {
        match Atom::existing_from_str(env, self.0) {
            Ok(atom) => atom.encode(env),
            Err(_) => self.0.encode(env),
        }
    }
}

macro_rules! one {
    ($x:expr) => {
        1
    };
}

/// One line per `Error` variant: its pattern, the Reason's tag, the tuple's fields. The match
/// is exhaustive, so a new variant does not compile until it has a line here, and `TAGS` (what
/// the mirrors are tested against) comes from the same lines.
macro_rules! reasons {
    ($($pat:pat => $tag:ident $(($($field:expr),+))?;)*) => {
        mod tag {
            rustler::atoms! { $($tag,)* }
        }

        impl Encoder for Reason<'_> {
            fn encode<'b>(&self, env: Env<'b>) -> Term<'b> {
                match self.0 {
                    $($pat => tagged(env, tag::$tag(), &[$($(($field).encode(env)),+)?]),)*
                }
            }
        }

        /// Every Reason's tag and arity (fields after the tag; 0 = a bare atom).
        pub const TAGS: &[(&str, usize)] = &[$((stringify!($tag), 0 $($(+ one!($field))+)?)),*];
    };
}

reasons! {
    Error::FileNotFound(path) => file_not_found(path);
    Error::BadFormat { file, detail } => bad_format(file, detail);
    Error::MissingTensor(name) => missing_tensor(name);
    Error::ShapeMismatch { name, expected, got } => shape_mismatch(name, expected, got);
    Error::UnsupportedDtype { name, dtype } => unsupported_dtype(name, dtype);
    Error::InvalidOption { key, value } => invalid_option(OptionKey(key), value);
    Error::ContextOverflow { needed, max } => context_overflow(needed, max);
    Error::InvalidUtf8 => invalid_utf8;
    Error::EmptyPrompt => empty_prompt;
    Error::TokenOutOfRange { id, vocab } => token_out_of_range(id, vocab);
    Error::NoTokenizer(path) => no_tokenizer(path);
    Error::NoChatTemplate(path) => no_chat_template(path);
    Error::Io { path, detail } => io_error(path, detail);
    Error::CudaUnavailable => cuda_unavailable;
    Error::Cuda(msg) => cuda_error(msg);
    Error::OutOfMemory => out_of_memory;
    Error::Cancelled => cancelled;
    Error::Overloaded => overloaded;
    Error::Internal(msg) => internal(msg);
}

/// A bare atom, or `{Tag, Field...}`.
fn tagged<'b>(env: Env<'b>, tag: Atom, fields: &[Term<'b>]) -> Term<'b> {
    if fields.is_empty() {
        return tag.encode(env);
    }
    let mut all = Vec::with_capacity(fields.len() + 1);
    all.push(tag.encode(env));
    all.extend_from_slice(fields);
    make_tuple(env, &all)
}

/// `[{Tag, Arity}]` of every Reason, for the test that checks the mirrors.
#[rustler::nif]
fn reason_tags(env: Env) -> Term {
    let list: Vec<(Atom, usize)> =
        TAGS.iter().filter_map(|&(t, n)| Atom::from_str(env, t).ok().map(|a| (a, n))).collect();
    list.encode(env)
}
