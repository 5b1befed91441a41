//! Safetensors and conversion NIFs behind `viva_tensor_safetensors_ffi`: a checkpoint's header,
//! one tensor as bf16, bf16 → f32 and a cache-tiled f32 transpose (viva_core::convert does the
//! work). Results are written straight into the BEAM binary they return.
use std::os::unix::ffi::OsStrExt;

use rustler::{Encoder, Env, OwnedBinary, Term};
use viva_core::convert::{self, HeaderEntry};
use viva_core::safetensors::Checkpoint;
use viva_core::Error;

use crate::args::{self, alloc_binary, binary, check_bytes, decode, dim_of, ok, run};
use crate::reason::Fail;

rustler::atoms! { path, name, bin, rows, cols, dtype, shape, data_offsets, offset, size, file, data_start }

fn header_map<'a>(env: Env<'a>, e: &HeaderEntry) -> Result<Term<'a>, Fail<'a>> {
    let mut pairs = vec![
        (dtype().encode(env), e.dtype.encode(env)),
        (file().encode(env), bytes_term(env, e.file.as_os_str().as_bytes())),
        (data_start().encode(env), e.data_start.encode(env)),
    ];
    if let Some(l) = &e.layout {
        let (begin, end) = l.data_offsets;
        pairs.extend([
            (shape().encode(env), l.shape.encode(env)),
            (data_offsets().encode(env), (begin, end).encode(env)),
            (offset().encode(env), (e.data_start + begin).encode(env)),
            (size().encode(env), (end - begin).encode(env)),
        ]);
    }
    Term::map_from_pairs(env, &pairs).map_err(|_| Error::Internal(format!("header map of {}", e.name)).into())
}

/// Small bytes (a path) as an Erlang binary; a `&[u8]` would encode as a list.
fn bytes_term<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    OwnedBinary::from_slice(bytes).release(env).encode(env)
}

/// `{ok, #{Name => #{dtype, shape, data_offsets => {Begin, End}, offset, size, file, data_start}}}`
/// of a checkpoint (file, index.json or folder). `data_offsets` is the header's own pair
/// (relative to the file's data section, which starts at byte `data_start` = 8 + header length),
/// `offset` = `data_start + Begin` the absolute byte offset in `file`, `size` = `End - Begin`.
/// Tensors of dtypes the engine does not read carry only `dtype`, `file` and `data_start`.
#[rustler::nif(schedule = "DirtyIo")]
fn safetensors_open_header<'a>(env: Env<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || {
        let file = args::path(p, path())?;
        let entries = convert::header_entries(&file)?;
        let mut pairs = Vec::with_capacity(entries.len());
        for e in &entries {
            pairs.push((e.name.encode(env), header_map(env, e)?));
        }
        let map = Term::map_from_pairs(env, &pairs).map_err(|_| Error::bad_format(&file, "a tensor name appears twice"))?;
        ok(env, map)
    })
}

/// `{ok, {Shape, Bf16Bin}}`: one tensor as little-endian bf16 (BF16 copied verbatim, F16/F32
/// rounded to nearest even); `Name` is a UTF-8 binary.
#[rustler::nif(schedule = "DirtyIo")]
fn safetensors_read_tensor_bf16<'a>(env: Env<'a>, p: Term<'a>, n: Term<'a>) -> Term<'a> {
    run(env, || {
        let ckpt = Checkpoint::open(&args::path(p, path())?)?;
        let tensor_name: String = decode(n, name())?;
        let t = ckpt.get(&tensor_name)?;
        let mut out = alloc_binary(convert::bf16_len(&t))?;
        convert::write_bf16(&t, out.as_mut_slice())?;
        ok(env, (t.shape.as_slice(), out.release(env)))
    })
}

/// `{ok, F32Bin}`: little-endian bf16 → little-endian f32, exact; an odd byte count is
/// `{error, {shape_mismatch, _, _, _}}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn bf16_to_fp32_binary<'a>(env: Env<'a>, b: Term<'a>) -> Term<'a> {
    run(env, || {
        let src = binary(b, bin())?;
        let mut out = alloc_binary(convert::bf16_to_f32_len(src.len())?)?;
        convert::bf16_to_f32_into(src.as_slice(), out.as_mut_slice())?;
        ok(env, out.release(env))
    })
}

/// `{ok, TransposedBin}`: a (Rows, Cols) row-major f32 matrix → (Cols, Rows), cache-tiled
/// and parallel. The 4-byte words move as they are (no float decode). Rows × Cols × 4 ≠ the
/// binary's size is `{error, {shape_mismatch, <<"transpose_fp32 bytes">>, [Expected], [Got]}}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn transpose_fp32<'a>(env: Env<'a>, b: Term<'a>, r: Term<'a>, c: Term<'a>) -> Term<'a> {
    run(env, || {
        let src = binary(b, bin())?;
        let (nr, nc) = (dim_of(r, rows())?, dim_of(c, cols())?);
        check_bytes("transpose_fp32 bytes", &[nr, nc], 4, src.len())?;
        let mut out = alloc_binary(src.len())?;
        let (words, _) = src.as_slice().as_chunks::<4>();
        let (dst, _) = out.as_mut_slice().as_chunks_mut::<4>();
        convert::transpose_into(words, dst, nr, nc)?;
        ok(env, out.release(env))
    })
}
