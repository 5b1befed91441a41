//! Low-level NIFs over BEAM resources: fp8 prepack and linears, embedding tables, KV caches
//! and the decode step. Tensors cross as little-endian binaries plus a shape list; weights
//! are [out, in] (HF layout). Arguments of the wrong type or size are
//! `{error, {invalid_option, Arg, Value}}` or `{error, {shape_mismatch, Name, Expected, Got}}`.
use std::sync::Mutex;

use half::{bf16, f16};
use rustler::types::tuple::get_tuple;
use rustler::{Atom, Binary, Encoder, Env, OwnedBinary, ResourceArc, Term};
use viva_core::quant::fp8::{Blocking, PackedFp8};
use viva_core::quant::linear;
use viva_core::sampling::{argmax, top_k_into, MAX_TOP_K};
use viva_core::session::DecodeState;
use viva_core::tensor::{DType, Storage, TensorView};
use viva_core::weights::Embedding;
use viva_core::Error;

use crate::nif_model::guarded;
use crate::reason::{self, error_tuple, internal_error, invalid_option_error};
use crate::resources::ModelResource;

rustler::atoms! { f32, f16, bf16, nil, undefined, per_channel, weight, shape, block, input, packed, bias,
    table, id, model, kv_cache, max_seq, token, pos, k, n, bytes, rows, cols, dtype }

pub struct PackedResource(pub PackedFp8);
#[rustler::resource_impl]
impl rustler::Resource for PackedResource {}

pub struct EmbeddingResource {
    table: Embedding,
    rows: usize,
    cols: usize,
}
#[rustler::resource_impl]
impl rustler::Resource for EmbeddingResource {}

/// One sequence's decode state; the lock serialises steps on one cache (a cache is one
/// sequence), while different caches on one model step in parallel.
pub struct KvCacheResource(Mutex<DecodeState>);
#[rustler::resource_impl]
impl rustler::Resource for KvCacheResource {}

/// Early return of an error term from a decode helper.
type Arg<'a, T> = Result<T, Term<'a>>;

fn bad<'a>(env: Env<'a>, key: Atom, value: Term<'a>) -> Term<'a> {
    invalid_option_error(env, key.encode(env), value)
}

fn engine<'a, T>(env: Env<'a>, r: viva_core::Result<T>) -> Arg<'a, T> {
    r.map_err(|e| error_tuple(env, &e))
}

fn resource<'a, T: rustler::Resource>(env: Env<'a>, t: Term<'a>, key: Atom) -> Arg<'a, ResourceArc<T>> {
    t.decode().map_err(|_| bad(env, key, t))
}

fn usize_arg<'a>(env: Env<'a>, t: Term<'a>, key: Atom) -> Arg<'a, usize> {
    t.decode::<u64>().ok().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| bad(env, key, t))
}

fn shape_arg<'a>(env: Env<'a>, t: Term<'a>) -> Arg<'a, Vec<usize>> {
    match t.decode::<Vec<u64>>() {
        Ok(v) if !v.is_empty() && v.iter().all(|&d| d > 0) => Ok(v.into_iter().map(|d| d as usize).collect()),
        _ => Err(bad(env, shape(), t)),
    }
}

fn dtype_arg<'a>(env: Env<'a>, t: Term<'a>) -> Arg<'a, DType> {
    let a: Atom = t.decode().map_err(|_| bad(env, dtype(), t))?;
    if a == f32() {
        Ok(DType::F32)
    } else if a == f16() {
        Ok(DType::F16)
    } else if a == bf16() {
        Ok(DType::BF16)
    } else {
        Err(bad(env, dtype(), t))
    }
}

fn shape_error<'a>(env: Env<'a>, name: &str, expected: Vec<usize>, got: Vec<usize>) -> Term<'a> {
    error_tuple(env, &Error::ShapeMismatch { name: name.into(), expected, got })
}

/// Little-endian f32 binary of exactly `len` floats.
fn f32_binary<'a>(env: Env<'a>, t: Term<'a>, key: Atom, len: usize) -> Arg<'a, Vec<f32>> {
    let b = Binary::from_term(t).map_err(|_| bad(env, key, t))?;
    if b.len() != len * 4 {
        return Err(shape_error(env, &format!("{key:?} bytes"), vec![len * 4], vec![b.len()]));
    }
    Ok(b.as_slice().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn encode_f32<'a>(env: Env<'a>, v: &[f32]) -> Term<'a> {
    let mut bin = OwnedBinary::new(v.len() * 4);
    for (dst, x) in bin.as_mut_slice().chunks_exact_mut(4).zip(v) {
        dst.copy_from_slice(&x.to_le_bytes());
    }
    bin.release(env).encode(env)
}

fn ok<'a>(env: Env<'a>, t: impl Encoder) -> Term<'a> {
    (reason::ok(), t).encode(env)
}

/// Runs a body whose early exits are error terms, under the panic guard.
fn run<'a>(env: Env<'a>, body: impl FnOnce() -> Arg<'a, Term<'a>>) -> Term<'a> {
    guarded(env, || body().unwrap_or_else(|e| e))
}

// ---- fp8 prepack ----

fn prepack<'a>(env: Env<'a>, w: Term<'a>, s: Term<'a>, blocking: Blocking) -> Arg<'a, Term<'a>> {
    let dims = shape_arg(env, s)?;
    let [n, kk] = dims[..] else { return Err(shape_error(env, "weight shape [out, in]", vec![0, 0], dims)) };
    let data = f32_binary(env, w, weight(), n * kk)?;
    let p = engine(env, PackedFp8::prepack(&data, n, kk, blocking))?;
    Ok(ok(env, ResourceArc::new(PackedResource(p))))
}

/// Per-output-channel scales. Weight: f32 LE binary of Shape = [out, in] (HF layout).
#[rustler::nif(schedule = "DirtyCpu")]
fn prepack_fp8_weight<'a>(env: Env<'a>, w: Term<'a>, s: Term<'a>) -> Term<'a> {
    run(env, || prepack(env, w, s, Blocking::PerChannel))
}

/// K-blocked scales (16, 32, 64 or 128).
#[rustler::nif(schedule = "DirtyCpu")]
fn prepack_fp8_weight_blocked<'a>(env: Env<'a>, w: Term<'a>, s: Term<'a>, b: Term<'a>) -> Term<'a> {
    run(env, || {
        let blocking = Blocking::new(usize_arg(env, b, block())?).map_err(|_| bad(env, block(), b))?;
        prepack(env, w, s, blocking)
    })
}

#[rustler::nif]
fn packed_info<'a>(env: Env<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || {
        let p = resource::<PackedResource>(env, p, packed())?;
        let w = &p.0;
        let blk = match w.blocking {
            Blocking::PerChannel => per_channel().encode(env),
            Blocking::Block(b) => b.encode(env),
        };
        let map = Term::map_from_pairs(
            env,
            &[(n().encode(env), w.n.encode(env)), (k().encode(env), w.k.encode(env)), (block().encode(env), blk), (bytes().encode(env), w.nbytes().encode(env))],
        )
        .map_err(|_| internal_error(env, "packed_info map"))?;
        Ok(ok(env, map))
    })
}

// ---- linears ----

/// Activations of a linear, in the dtype they came in.
enum Act {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Act {
    fn to_f32(&self) -> Vec<f32> {
        match self {
            Act::F32(v) => v.clone(),
            Act::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Act::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// `{Bin, [M, K]}` (f32) or `{Bin, [M, K], Dtype}`; K must equal the weight's.
fn input_arg<'a>(env: Env<'a>, t: Term<'a>, kk: usize) -> Arg<'a, (usize, Act)> {
    let parts = get_tuple(t).map_err(|_| bad(env, input(), t))?;
    let (bin, dims, dt) = match parts[..] {
        [b, s] => (b, shape_arg(env, s)?, DType::F32),
        [b, s, d] => (b, shape_arg(env, s)?, dtype_arg(env, d)?),
        _ => return Err(bad(env, input(), t)),
    };
    let [m, kin] = dims[..] else { return Err(shape_error(env, "input shape [m, k]", vec![1, kk], dims)) };
    if kin != kk {
        return Err(shape_error(env, "input shape [m, k]", vec![m, kk], vec![m, kin]));
    }
    let b = Binary::from_term(bin).map_err(|_| bad(env, input(), t))?;
    if b.len() != m * kk * dt.size() {
        return Err(shape_error(env, "input bytes", vec![m * kk * dt.size()], vec![b.len()]));
    }
    let s = b.as_slice();
    let act = match dt {
        DType::F32 => Act::F32(s.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::F16 => Act::F16(s.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
        DType::BF16 => Act::Bf16(s.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
    };
    Ok((m, act))
}

fn bias_arg<'a>(env: Env<'a>, t: Term<'a>, n_out: usize) -> Arg<'a, Option<Vec<f32>>> {
    match t.decode::<Atom>() {
        Ok(a) if a == nil() || a == undefined() => Ok(None),
        _ => f32_binary(env, t, bias(), n_out).map(Some),
    }
}

#[derive(Clone, Copy)]
enum LinearKind {
    W8A16,
    W8A8,
    Gelu,
    SwiGlu,
}

fn linear_nif<'a>(env: Env<'a>, x: Term<'a>, p: Term<'a>, b: Term<'a>, kind: LinearKind) -> Arg<'a, Term<'a>> {
    let p = resource::<PackedResource>(env, p, packed())?;
    let w = &p.0;
    let (m, act) = input_arg(env, x, w.k)?;
    let bias = bias_arg(env, b, w.n)?;
    let bias = bias.as_deref();
    let cols = if let LinearKind::SwiGlu = kind { w.n / 2 } else { w.n };
    let mut out = vec![0.0f32; m * cols];
    macro_rules! generic {
        ($f:path) => {
            match &act {
                Act::F32(v) => $f(v, w, bias, &mut out),
                Act::F16(v) => $f(v, w, bias, &mut out),
                Act::Bf16(v) => $f(v, w, bias, &mut out),
            }
        };
    }
    let r = match kind {
        LinearKind::W8A16 => generic!(linear::linear_fp8_w8a16),
        LinearKind::Gelu => generic!(linear::linear_gelu_fp8),
        LinearKind::SwiGlu => generic!(linear::linear_swiglu_fp8),
        LinearKind::W8A8 => linear::linear_fp8(&act.to_f32(), w, bias, &mut out),
    };
    engine(env, r)?;
    let bin = encode_f32(env, &out);
    Ok(ok(env, (bin, vec![m, cols])))
}

/// `Input · Wᵀ + Bias`, activations f32/f16/bf16, weights dequantized in the inner loop.
#[rustler::nif(schedule = "DirtyCpu")]
fn linear_fp8_w8a16<'a>(env: Env<'a>, x: Term<'a>, p: Term<'a>, b: Term<'a>) -> Term<'a> {
    run(env, || linear_nif(env, x, p, b, LinearKind::W8A16))
}

/// W8A8: each input row quantized to E4M3 with its own absmax scale.
#[rustler::nif(schedule = "DirtyCpu")]
fn linear_fp8<'a>(env: Env<'a>, x: Term<'a>, p: Term<'a>, b: Term<'a>) -> Term<'a> {
    run(env, || linear_nif(env, x, p, b, LinearKind::W8A8))
}

/// `gelu(Input · Wᵀ + Bias)` (erf GELU, HF "gelu").
#[rustler::nif(schedule = "DirtyCpu")]
fn linear_gelu_fp8<'a>(env: Env<'a>, x: Term<'a>, p: Term<'a>, b: Term<'a>) -> Term<'a> {
    run(env, || linear_nif(env, x, p, b, LinearKind::Gelu))
}

/// `silu(x·gateᵀ) · (x·upᵀ)` with gate rows then up rows packed in one weight.
#[rustler::nif(schedule = "DirtyCpu")]
fn linear_swiglu_fp8<'a>(env: Env<'a>, x: Term<'a>, p: Term<'a>, b: Term<'a>) -> Term<'a> {
    run(env, || linear_nif(env, x, p, b, LinearKind::SwiGlu))
}

// ---- embedding tables ----

/// A (Rows, Cols) table of `Dtype` (f32 | f16 | bf16) little-endian values, copied once.
#[rustler::nif(schedule = "DirtyCpu")]
fn embedding_table_new<'a>(env: Env<'a>, bin: Term<'a>, r: Term<'a>, c: Term<'a>, d: Term<'a>) -> Term<'a> {
    run(env, || {
        let (nr, nc, dt) = (usize_arg(env, r, rows())?, usize_arg(env, c, cols())?, dtype_arg(env, d)?);
        let b = Binary::from_term(bin).map_err(|_| bad(env, table(), bin))?;
        let want = nr.checked_mul(nc).and_then(|x| x.checked_mul(dt.size())).filter(|&w| w > 0);
        if want != Some(b.len()) {
            return Err(shape_error(env, "embedding table bytes", vec![want.unwrap_or(0)], vec![b.len()]));
        }
        let len = b.len();
        let view = TensorView::new("embedding".into(), dt, vec![nr, nc], std::sync::Arc::new(Storage::Heap(b.as_slice().to_vec())), 0, len);
        let table_res = EmbeddingResource { table: Embedding::Native(view), rows: nr, cols: nc };
        Ok(ok(env, ResourceArc::new(table_res)))
    })
}

/// Row `Id` as an f32 binary (Cols floats).
#[rustler::nif]
fn embedding_row<'a>(env: Env<'a>, t: Term<'a>, i: Term<'a>) -> Term<'a> {
    run(env, || {
        let t = resource::<EmbeddingResource>(env, t, table())?;
        let row = usize_arg(env, i, id())?;
        if row >= t.rows {
            return Err(error_tuple(env, &Error::TokenOutOfRange { id: row.min(u32::MAX as usize) as u32, vocab: t.rows }));
        }
        let mut out = vec![0.0; t.cols];
        t.table.row(row, &mut out);
        Ok(ok(env, encode_f32(env, &out)))
    })
}

// ---- KV caches and the decode step ----

/// A KV cache for one sequence on `Model`, room for MaxSeq positions (`nil`: the whole context).
#[rustler::nif(schedule = "DirtyCpu")]
fn kv_cache_new<'a>(env: Env<'a>, m: Term<'a>, s: Term<'a>) -> Term<'a> {
    run(env, || {
        let model_res = resource::<ModelResource>(env, m, model())?;
        let max = model_res.0.config.max_position_embeddings;
        let seq = match s.decode::<Atom>() {
            Ok(a) if a == nil() => max,
            _ => usize_arg(env, s, max_seq())?,
        };
        if seq == 0 || seq > max {
            return Err(bad(env, max_seq(), s));
        }
        let state = DecodeState::new(engine(env, model_res.0.model())?, seq);
        Ok(ok(env, ResourceArc::new(KvCacheResource(Mutex::new(state)))))
    })
}

/// Runs one token at `pos` through the model, appending its K/V; returns the logits' owner.
fn step<'a, R>(
    env: Env<'a>,
    m: Term<'a>,
    tok: Term<'a>,
    c: Term<'a>,
    p: Term<'a>,
    read: impl FnOnce(&[f32]) -> R,
) -> Arg<'a, R> {
    let model_res = resource::<ModelResource>(env, m, model())?;
    let cache = resource::<KvCacheResource>(env, c, kv_cache())?;
    let token_id = tok.decode::<u32>().map_err(|_| bad(env, token(), tok))?;
    let position = usize_arg(env, p, pos())?;
    let mut state = cache.0.lock().map_err(|_| internal_error(env, "kv cache lock poisoned"))?;
    let model = engine(env, model_res.0.model())?;
    let logits = engine(env, state.step_at(model, token_id, position))?;
    Ok(read(logits))
}

/// Greedy: the argmax id of the logits after `Token` at `Pos`.
#[rustler::nif(schedule = "DirtyCpu")]
fn decode_step<'a>(env: Env<'a>, m: Term<'a>, tok: Term<'a>, c: Term<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || Ok(ok(env, step(env, m, tok, c, p, argmax)?)))
}

/// The K (1..256) best `{Id, Logit}` after `Token` at `Pos`, logit descending.
#[rustler::nif(schedule = "DirtyCpu")]
fn decode_step_topk<'a>(env: Env<'a>, m: Term<'a>, tok: Term<'a>, c: Term<'a>, p: Term<'a>, kt: Term<'a>) -> Term<'a> {
    run(env, || {
        let kk = usize_arg(env, kt, k())?;
        if !(1..=MAX_TOP_K).contains(&kk) {
            return Err(bad(env, k(), kt));
        }
        let cand = step(env, m, tok, c, p, |logits| {
            let mut cand = Vec::with_capacity(kk);
            top_k_into(logits, kk, &mut cand);
            cand
        })?;
        let pairs: Vec<(u32, f64)> = cand.into_iter().map(|(i, l)| (i, l as f64)).collect();
        Ok(ok(env, pairs))
    })
}
