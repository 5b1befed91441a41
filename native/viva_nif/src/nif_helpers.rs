//! Seed-compatible helper NIFs: safetensors header/tensor access, bf16 → f32, a tiled f32
//! transpose, and a standalone tokenizer resource (viva_tensor_safetensors_ffi and
//! viva_tensor_tokenizer_ffi wrap them).
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustler::{Atom, Binary, Encoder, Env, OwnedBinary, ResourceArc, Term};
use viva_core::convert;
use viva_core::safetensors::Checkpoint;
use viva_core::tokenizer::Tokenizer;
use viva_core::Error;

use crate::nif_model::guarded;
use crate::reason::{self, error_tuple, invalid_option_error};

rustler::atoms! { path, name, bin, rows, cols, tokenizer, text, ids, dtype, shape, offset, size }

pub struct TokenizerResource(Tokenizer);
#[rustler::resource_impl]
impl rustler::Resource for TokenizerResource {}

type Arg<'a, T> = Result<T, Term<'a>>;

fn run<'a>(env: Env<'a>, body: impl FnOnce() -> Arg<'a, Term<'a>>) -> Term<'a> {
    guarded(env, || body().unwrap_or_else(|e| e))
}

fn bad<'a>(env: Env<'a>, key: Atom, t: Term<'a>) -> Term<'a> {
    invalid_option_error(env, key.encode(env), t)
}

fn engine<'a, T>(env: Env<'a>, r: viva_core::Result<T>) -> Arg<'a, T> {
    r.map_err(|e| error_tuple(env, &e))
}

fn path_arg<'a>(env: Env<'a>, t: Term<'a>) -> Arg<'a, PathBuf> {
    match Binary::from_term(t) {
        Ok(b) if !b.is_empty() => Ok(PathBuf::from(OsStr::from_bytes(b.as_slice()))),
        _ => Err(bad(env, path(), t)),
    }
}

fn ok<'a>(env: Env<'a>, t: impl Encoder) -> Term<'a> {
    (reason::ok(), t).encode(env)
}

fn binary_of<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut b = OwnedBinary::new(bytes.len());
    b.as_mut_slice().copy_from_slice(bytes);
    b.release(env).encode(env)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `#{Name => #{dtype, shape, offset, size}}` of a checkpoint (file, index.json or folder);
/// offset is the tensor's byte offset in its file. Entries of dtypes the engine does not read
/// carry only their dtype.
#[rustler::nif(schedule = "DirtyIo")]
fn safetensors_open_header<'a>(env: Env<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || {
        let ckpt = engine(env, Checkpoint::open(&path_arg(env, p)?))?;
        let mut pairs = Vec::new();
        for n in ckpt.names() {
            let info = match ckpt.get(n) {
                Ok(t) => vec![
                    (dtype().encode(env), format!("{:?}", t.dtype).to_uppercase().encode(env)),
                    (shape().encode(env), t.shape.encode(env)),
                    (offset().encode(env), t.file_offset().encode(env)),
                    (size().encode(env), t.bytes().len().encode(env)),
                ],
                Err(Error::UnsupportedDtype { dtype: d, .. }) => vec![(dtype().encode(env), d.encode(env))],
                Err(e) => return Err(error_tuple(env, &e)),
            };
            let map = Term::map_from_pairs(env, &info).map_err(|_| bad(env, name(), n.encode(env)))?;
            pairs.push((n.encode(env), map));
        }
        let map = Term::map_from_pairs(env, &pairs).map_err(|_| bad(env, path(), p))?;
        Ok(ok(env, map))
    })
}

/// `{ok, {Shape, Bf16Bin}}`: a tensor as little-endian bf16 (f16/f32 rounded to nearest even).
#[rustler::nif(schedule = "DirtyIo")]
fn safetensors_read_tensor_bf16<'a>(env: Env<'a>, p: Term<'a>, n: Term<'a>) -> Term<'a> {
    run(env, || {
        let ckpt = engine(env, Checkpoint::open(&path_arg(env, p)?))?;
        let tensor_name: String = n.decode().map_err(|_| bad(env, name(), n))?;
        let t = engine(env, ckpt.get(&tensor_name))?;
        Ok(ok(env, (t.shape.clone(), binary_of(env, &convert::to_bf16_bytes(t)))))
    })
}

#[rustler::nif(schedule = "DirtyCpu")]
fn bf16_to_fp32_binary<'a>(env: Env<'a>, b: Term<'a>) -> Term<'a> {
    run(env, || {
        let bytes = Binary::from_term(b).map_err(|_| bad(env, bin(), b))?;
        let v = convert::bf16_to_f32(bytes.as_slice()).ok_or_else(|| {
            error_tuple(env, &Error::ShapeMismatch { name: "bf16 bytes".into(), expected: vec![bytes.len() + 1], got: vec![bytes.len()] })
        })?;
        Ok(ok(env, binary_of(env, &f32_bytes(&v))))
    })
}

/// (Rows, Cols) f32 → (Cols, Rows), cache-tiled.
#[rustler::nif(schedule = "DirtyCpu")]
fn transpose_fp32<'a>(env: Env<'a>, b: Term<'a>, r: Term<'a>, c: Term<'a>) -> Term<'a> {
    run(env, || {
        let bytes = Binary::from_term(b).map_err(|_| bad(env, bin(), b))?;
        let nr: usize = r.decode::<u64>().ok().and_then(|v| usize::try_from(v).ok()).filter(|&v| v > 0).ok_or_else(|| bad(env, rows(), r))?;
        let nc: usize = c.decode::<u64>().ok().and_then(|v| usize::try_from(v).ok()).filter(|&v| v > 0).ok_or_else(|| bad(env, cols(), c))?;
        let want = nr.checked_mul(nc).and_then(|x| x.checked_mul(4));
        if want != Some(bytes.len()) {
            return Err(error_tuple(env, &Error::ShapeMismatch { name: "f32 matrix bytes".into(), expected: vec![want.unwrap_or(0)], got: vec![bytes.len()] }));
        }
        // move raw 4-byte words: no f32 decode/encode round trip
        let (src, _) = bytes.as_slice().as_chunks::<4>();
        let mut out = OwnedBinary::new(bytes.len());
        let (dst, _) = out.as_mut_slice().as_chunks_mut::<4>();
        convert::transpose_into(src, dst, nr, nc);
        Ok(ok(env, out.release(env)))
    })
}

#[rustler::nif(schedule = "DirtyIo")]
fn tokenizer_load<'a>(env: Env<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok = engine(env, Tokenizer::from_file(&path_arg(env, p)?))?;
        Ok(ok(env, ResourceArc::new(TokenizerResource(tok))))
    })
}

/// Ids of `Text` with special tokens added as HF does (BOS where the tokenizer adds it).
#[rustler::nif(schedule = "DirtyCpu")]
fn tokenizer_encode<'a>(env: Env<'a>, t: Term<'a>, s: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok: ResourceArc<TokenizerResource> = t.decode().map_err(|_| bad(env, tokenizer(), t))?;
        let bytes = Binary::from_term(s).map_err(|_| bad(env, text(), s))?;
        let input = std::str::from_utf8(bytes.as_slice()).map_err(|_| error_tuple(env, &Error::InvalidUtf8))?;
        Ok(ok(env, engine(env, tok.0.encode(input, true))?))
    })
}

/// Text of `Ids`, special tokens skipped.
#[rustler::nif(schedule = "DirtyCpu")]
fn tokenizer_decode<'a>(env: Env<'a>, t: Term<'a>, i: Term<'a>) -> Term<'a> {
    run(env, || {
        let tok: ResourceArc<TokenizerResource> = t.decode().map_err(|_| bad(env, tokenizer(), t))?;
        let list: Vec<u32> = i.decode().map_err(|_| bad(env, ids(), i))?;
        Ok(ok(env, engine(env, tok.0.decode(&list, true))?))
    })
}
