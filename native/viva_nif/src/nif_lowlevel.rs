//! Low-level NIFs over BEAM resources: fp8 prepack and linears, embedding tables, KV caches
//! and the decode step. Tensors cross as little-endian binaries plus a shape list; weights
//! are [out, in] (HF layout). Arguments of the wrong type or size are
//! `{error, {invalid_option, Arg, Value}}` or `{error, {shape_mismatch, Name, Expected, Got}}`.
use std::sync::Mutex;

use half::{bf16, f16};
use rustler::types::tuple::get_tuple;
use rustler::{Encoder, Env, ResourceArc, Term};
use viva_core::formats::fp8::{Blocking, PackedFp8};
use viva_core::formats::fp8::linear;
use viva_core::sampling::{argmax, top_k_into, MAX_TOP_K};
use viva_core::backend::cpu::state::DecodeState;
use viva_core::tensor::{DType, Storage, TensorView};
use viva_core::weights::Embedding;
use viva_core::Error;

use crate::args::{bad, binary, check_bytes, decode, dtype_of, f32_binary, f32s, is_nil, list_of, ok, resource, run, shape_of, size_error, usize_of, Out};
use crate::nif_model::atom_map;
use crate::reason::Fail;
use crate::resources::ModelResource;

rustler::atoms! { per_channel, weight, block, input, packed, bias, table, id, model, kv_cache, max_seq, token,
    pos, k, n, bytes, rows, cols }

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

// ---- fp8 prepack ----

fn prepack<'a>(env: Env<'a>, w: Term<'a>, s: Term<'a>, blocking: Blocking) -> Out<'a> {
    let dims = shape_of(s)?;
    let [n, kk] = dims[..] else { return Err(size_error("weight shape [out, in]", vec![0, 0], dims)) };
    let data = f32s(w, weight(), &[n, kk])?;
    let p = PackedFp8::prepack(&data, n, kk, blocking)?;
    ok(env, ResourceArc::new(PackedResource(p)))
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
        let blocking = Blocking::new(usize_of(b, block())?).map_err(|_| bad(block(), b))?;
        prepack(env, w, s, blocking)
    })
}

#[rustler::nif]
fn packed_info<'a>(env: Env<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || {
        let p = resource::<PackedResource>(p, packed())?;
        let w = &p.0;
        let blk = match w.blocking {
            Blocking::PerChannel => per_channel().encode(env),
            Blocking::Block(b) => b.encode(env),
        };
        let pairs = [(n(), w.n.encode(env)), (k(), w.k.encode(env)), (block(), blk), (bytes(), w.nbytes().encode(env))];
        ok(env, atom_map(env, &pairs)?)
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
fn input_arg<'a>(t: Term<'a>, kk: usize) -> Result<(usize, Act), Fail<'a>> {
    let parts = get_tuple(t).map_err(|_| bad(input(), t))?;
    let (bin, dims, dt) = match parts[..] {
        [b, s] => (b, shape_of(s)?, DType::F32),
        [b, s, d] => (b, shape_of(s)?, dtype_of(d)?),
        _ => return Err(bad(input(), t)),
    };
    let [m, kin] = dims[..] else { return Err(size_error("input shape [m, k]", vec![1, kk], dims)) };
    if kin != kk {
        return Err(size_error("input shape [m, k]", vec![m, kk], vec![m, kin]));
    }
    let b = binary(bin, input())?;
    check_bytes("input bytes", &[m, kk], dt.size(), b.len())?;
    let s = b.as_slice();
    let act = match dt {
        DType::F32 => Act::F32(s.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::F16 => Act::F16(s.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
        DType::BF16 => Act::Bf16(s.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
    };
    Ok((m, act))
}

fn bias_arg<'a>(t: Term<'a>, n_out: usize) -> Result<Option<Vec<f32>>, Fail<'a>> {
    if is_nil(t) {
        Ok(None)
    } else {
        f32s(t, bias(), &[n_out]).map(Some)
    }
}

#[derive(Clone, Copy)]
enum LinearKind {
    W8A16,
    W8A8,
    Gelu,
    SwiGlu,
}

fn linear_nif<'a>(env: Env<'a>, x: Term<'a>, p: Term<'a>, b: Term<'a>, kind: LinearKind) -> Out<'a> {
    let p = resource::<PackedResource>(p, packed())?;
    let w = &p.0;
    let (m, act) = input_arg(x, w.k)?;
    let bias = bias_arg(b, w.n)?;
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
    r?;
    ok(env, (f32_binary(env, &out)?, vec![m, cols]))
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
        let (nr, nc, dt) = (usize_of(r, rows())?, usize_of(c, cols())?, dtype_of(d)?);
        let b = binary(bin, table())?;
        if nr == 0 || nc == 0 {
            return Err(size_error("embedding table [rows, cols]", vec![1, 1], vec![nr, nc]));
        }
        check_bytes("embedding table bytes", &[nr, nc], dt.size(), b.len())?;
        let len = b.len();
        let view = TensorView::new("embedding".into(), dt, vec![nr, nc], std::sync::Arc::new(Storage::Heap(b.as_slice().to_vec())), 0, len);
        let table_res = EmbeddingResource { table: Embedding::Native(view), rows: nr, cols: nc };
        ok(env, ResourceArc::new(table_res))
    })
}

/// Row `Id` as an f32 binary (Cols floats).
#[rustler::nif]
fn embedding_row<'a>(env: Env<'a>, t: Term<'a>, i: Term<'a>) -> Term<'a> {
    run(env, || {
        let t = resource::<EmbeddingResource>(t, table())?;
        let row = usize_of(i, id())?;
        if row >= t.rows {
            return Err(Error::TokenOutOfRange { id: row.min(u32::MAX as usize) as u32, vocab: t.rows }.into());
        }
        let mut out = vec![0.0; t.cols];
        t.table.row(row, &mut out);
        ok(env, f32_binary(env, &out)?)
    })
}

// ---- KV caches and the decode step ----

/// A KV cache for one sequence on `Model`, room for MaxSeq positions (`nil`: the whole context).
#[rustler::nif(schedule = "DirtyCpu")]
fn kv_cache_new<'a>(env: Env<'a>, m: Term<'a>, s: Term<'a>) -> Term<'a> {
    run(env, || {
        let model_res = resource::<ModelResource>(m, model())?;
        let max = model_res.llm().config.max_position_embeddings;
        let seq = if is_nil(s) { max } else { usize_of(s, max_seq())? };
        if seq == 0 || seq > max {
            return Err(bad(max_seq(), s));
        }
        let state = DecodeState::new(model_res.llm().model()?, seq)?;
        ok(env, ResourceArc::new(KvCacheResource(Mutex::new(state))))
    })
}

/// Runs `Token` (an id, or a non-empty list of ids fed as one batched pass — the path generate
/// takes for a prompt, so a loop that feeds its prompt this way reproduces generate exactly) at
/// `pos` through the model, appending K/V; `read` takes the logits after the last id.
fn step<'a, R>(m: Term<'a>, tok: Term<'a>, c: Term<'a>, p: Term<'a>, read: impl FnOnce(&[f32]) -> R) -> Result<R, Fail<'a>> {
    let model_res = resource::<ModelResource>(m, model())?;
    let cache = resource::<KvCacheResource>(c, kv_cache())?;
    let position = usize_of(p, pos())?;
    let model = model_res.llm().model()?;
    if tok.is_list() {
        let ids: Vec<u32> = list_of(tok, token())?;
        if ids.is_empty() {
            return Err(bad(token(), tok));
        }
        let mut state = cache.0.lock().map_err(|_| Error::Internal("kv cache lock poisoned".into()))?;
        return Ok(read(state.prefill_at(model, &ids, position)?));
    }
    let token_id: u32 = decode(tok, token())?;
    let mut state = cache.0.lock().map_err(|_| Error::Internal("kv cache lock poisoned".into()))?;
    Ok(read(state.step_at(model, token_id, position)?))
}

/// Greedy: the argmax id of the logits after `Token` at `Pos`.
#[rustler::nif(schedule = "DirtyCpu")]
fn decode_step<'a>(env: Env<'a>, m: Term<'a>, tok: Term<'a>, c: Term<'a>, p: Term<'a>) -> Term<'a> {
    run(env, || ok(env, step(m, tok, c, p, argmax)?))
}

/// The K (1..256) best `{Id, Logit}` after `Token` at `Pos`, logit descending.
#[rustler::nif(schedule = "DirtyCpu")]
fn decode_step_topk<'a>(env: Env<'a>, m: Term<'a>, tok: Term<'a>, c: Term<'a>, p: Term<'a>, kt: Term<'a>) -> Term<'a> {
    run(env, || {
        let kk = usize_of(kt, k())?;
        if !(1..=MAX_TOP_K).contains(&kk) {
            return Err(bad(k(), kt));
        }
        let cand = step(m, tok, c, p, |logits| {
            let mut cand = Vec::with_capacity(kk);
            top_k_into(logits, kk, &mut cand);
            cand
        })?;
        let pairs: Vec<(u32, f64)> = cand.into_iter().map(|(i, l)| (i, l as f64)).collect();
        ok(env, pairs)
    })
}
