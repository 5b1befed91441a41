//! The one way NIFs decode their arguments: typed decoders that turn a term the NIF cannot
//! use into `Fail` (`{invalid_option, Key, Value}`, or the engine's Reason for a size or UTF-8
//! problem), and `run`, which every NIF body goes through. Domains the engine validates
//! (top_k's range, block sizes, num_layers against the model) are left to it.
use std::any::Any;
use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use rustler::types::map::MapIterator;
use rustler::{Atom, Binary, Decoder, Encoder, Env, OwnedBinary, ResourceArc, Term};
use viva_core::tensor::DType;
use viva_core::Error;

use crate::reason::{self, Fail};

rustler::atoms! { opts, shape, dtype, f32, f16, bf16, nil, undefined }

/// What a NIF body returns: its `{ok, _}` (or other) term, or why it failed.
pub type Out<'a> = Result<Term<'a>, Fail<'a>>;

/// Runs a NIF body: a `Fail` becomes `{error, Reason}`, a panic (always a bug)
/// `{error, {internal, Msg}}`, and the VM keeps running (`panic = "unwind"` in release).
pub fn run<'a>(env: Env<'a>, body: impl FnOnce() -> Out<'a>) -> Term<'a> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(term)) => term,
        Ok(Err(fail)) => fail.encode(env),
        Err(payload) => Fail::from(Error::Internal(format!("panic: {}", panic_message(payload.as_ref())))).encode(env),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// `{ok, T}`.
pub fn ok<'a>(env: Env<'a>, t: impl Encoder) -> Out<'a> {
    Ok((reason::ok(), t).encode(env))
}

/// `{invalid_option, Key, T}` for the argument or option `key`.
pub fn bad<'a>(key: Atom, t: Term<'a>) -> Fail<'a> {
    Fail::Arg { key: key.encode(t.get_env()), value: t }
}

pub fn decode<'a, T: Decoder<'a>>(t: Term<'a>, key: Atom) -> Result<T, Fail<'a>> {
    t.decode().map_err(|_| bad(key, t))
}

/// A proper list of `T` (rustler's `Vec` decoder panics on an improper list).
pub fn list_of<'a, T: Decoder<'a>>(t: Term<'a>, key: Atom) -> Result<Vec<T>, Fail<'a>> {
    let mut out = Vec::new();
    let mut rest = t;
    while !rest.is_empty_list() {
        let (head, tail) = rest.list_get_cell().map_err(|_| bad(key, t))?;
        out.push(head.decode().map_err(|_| bad(key, t))?);
        rest = tail;
    }
    Ok(out)
}

pub fn resource<'a, T: rustler::Resource>(t: Term<'a>, key: Atom) -> Result<ResourceArc<T>, Fail<'a>> {
    decode(t, key)
}

/// A non-negative integer that fits usize.
pub fn usize_of<'a>(t: Term<'a>, key: Atom) -> Result<usize, Fail<'a>> {
    t.decode::<u64>().ok().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| bad(key, t))
}

/// A positive integer that fits usize.
pub fn dim_of<'a>(t: Term<'a>, key: Atom) -> Result<usize, Fail<'a>> {
    usize_of(t, key).ok().filter(|&v| v > 0).ok_or_else(|| bad(key, t))
}

pub fn binary<'a>(t: Term<'a>, key: Atom) -> Result<Binary<'a>, Fail<'a>> {
    Binary::from_term(t).map_err(|_| bad(key, t))
}

/// A binary holding UTF-8 text (anything else but a binary is `invalid_option`).
pub fn utf8<'a>(t: Term<'a>, key: Atom) -> Result<&'a str, Fail<'a>> {
    std::str::from_utf8(binary(t, key)?.as_slice()).map_err(|_| Error::InvalidUtf8.into())
}

/// A non-empty binary of path bytes (no UTF-8 requirement: file names are bytes on Unix).
pub fn path<'a>(t: Term<'a>, key: Atom) -> Result<PathBuf, Fail<'a>> {
    match Binary::from_term(t) {
        Ok(b) if !b.is_empty() => Ok(PathBuf::from(OsStr::from_bytes(b.as_slice()))),
        _ => Err(bad(key, t)),
    }
}

pub fn is_atom(t: Term, atom: Atom) -> bool {
    t.decode::<Atom>().map(|a| a == atom).unwrap_or(false)
}

/// `nil` or `undefined`: an absent optional argument.
pub fn is_nil(t: Term) -> bool {
    is_atom(t, nil()) || is_atom(t, undefined())
}

/// One of a fixed set of atoms, each standing for a value.
pub fn one_of<'a, T: Copy>(t: Term<'a>, key: Atom, choices: &[(Atom, T)]) -> Result<T, Fail<'a>> {
    let a: Atom = decode(t, key)?;
    choices.iter().find(|(c, _)| *c == a).map(|&(_, v)| v).ok_or_else(|| bad(key, t))
}

/// The `(Key, Value)` pairs of an options map, keys atoms; anything but a map is
/// `{invalid_option, opts, T}`, a key that is not an atom `{invalid_option, Key, Value}`.
pub fn options<'a>(t: Term<'a>) -> Result<Vec<(Atom, Term<'a>)>, Fail<'a>> {
    let iter = MapIterator::new(t).ok_or_else(|| bad(opts(), t))?;
    iter.map(|(k, v)| k.decode::<Atom>().map(|a| (a, v)).map_err(|_| Fail::Arg { key: k, value: v })).collect()
}

/// The engine's result for a call given the options map `opts`: an `InvalidOption` the engine
/// found (its own range rules) is reported with the caller's term for that key, as the Erlang
/// layer reports it.
pub fn with_option_terms<'a, T>(opts: Term<'a>, r: viva_core::Result<T>) -> Result<T, Fail<'a>> {
    r.map_err(|e| {
        let env = opts.get_env();
        let caller = match &e {
            Error::InvalidOption { key, .. } => Atom::existing_from_str(env, key)
                .ok()
                .and_then(|a| opts.map_get(a.encode(env)).ok().map(|v| bad(a, v))),
            _ => None,
        };
        caller.unwrap_or(Fail::Engine(e))
    })
}

/// A non-empty list of positive dimensions.
pub fn shape_of<'a>(t: Term<'a>) -> Result<Vec<usize>, Fail<'a>> {
    let dims: Vec<u64> = list_of(t, shape())?;
    let dims: Option<Vec<usize>> = dims.into_iter().map(|d| usize::try_from(d).ok().filter(|&d| d > 0)).collect();
    dims.filter(|d| !d.is_empty()).ok_or_else(|| bad(shape(), t))
}

pub fn dtype_of<'a>(t: Term<'a>) -> Result<DType, Fail<'a>> {
    one_of(t, dtype(), &[(f32(), DType::F32), (f16(), DType::F16), (bf16(), DType::BF16)])
}

/// The `ShapeMismatch` for a binary or shape argument of the wrong size.
pub fn size_error<'a>(name: &str, expected: Vec<usize>, got: Vec<usize>) -> Fail<'a> {
    Error::ShapeMismatch { name: name.into(), expected, got }.into()
}

/// `n × size` bytes, or None when it overflows.
pub fn bytes_for(n: &[usize], size: usize) -> Option<usize> {
    n.iter().try_fold(size, |acc, &d| acc.checked_mul(d))
}

/// `got` bytes must hold exactly `dims`' product of `size`-byte values, else
/// `{shape_mismatch, Name, [Bytes], [Got]}` (`Dims ++ [Size]` when the product overflows).
pub fn check_bytes<'a>(name: &str, dims: &[usize], size: usize, got: usize) -> Result<(), Fail<'a>> {
    match bytes_for(dims, size) {
        Some(want) if want == got => Ok(()),
        want => Err(size_error(name, want.map_or_else(|| [dims, &[size]].concat(), |w| vec![w]), vec![got])),
    }
}

/// A little-endian f32 binary of exactly `dims`' product floats.
pub fn f32s<'a>(t: Term<'a>, key: Atom, dims: &[usize]) -> Result<Vec<f32>, Fail<'a>> {
    let b = binary(t, key)?;
    check_bytes(&format!("{key:?} bytes"), dims, 4, b.len())?;
    Ok(b.as_slice().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// An uninitialised binary of `size` bytes, or `{error, out_of_memory}`: `OwnedBinary::new`
/// aborts the VM when the allocator refuses, and a caller's sizes can be anything.
pub fn alloc_binary<'a>(size: usize) -> Result<OwnedBinary, Fail<'a>> {
    let mut raw = MaybeUninit::<rustler::sys::ErlNifBinary>::uninit();
    // SAFETY: enif_alloc_binary initialises `raw` exactly when it returns non-zero; the
    // OwnedBinary then owns that binary and releases it when dropped or released to the VM.
    unsafe {
        if rustler::sys::enif_alloc_binary(size, raw.as_mut_ptr()) == 0 {
            return Err(Error::OutOfMemory.into());
        }
        Ok(OwnedBinary::from_raw(raw.assume_init()))
    }
}

/// Floats as a little-endian f32 binary.
pub fn f32_binary<'a>(env: Env<'a>, v: &[f32]) -> Result<Term<'a>, Fail<'a>> {
    let mut bin = alloc_binary(v.len().checked_mul(4).ok_or(Error::OutOfMemory)?)?;
    for (dst, x) in bin.as_mut_slice().chunks_exact_mut(4).zip(v) {
        dst.copy_from_slice(&x.to_le_bytes());
    }
    Ok(bin.release(env).encode(env))
}
