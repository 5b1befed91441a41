//! Model NIFs: `model_load/2` (dirty IO: the checkpoint, then the model's scheduler),
//! `model_info/1`, `backend_info/0`. Generation requests are nif_request.rs.
//!
//! Options arrive already validated and defaulted by viva_tensor_llm.erl (the single source
//! of their names, defaults and domains); they are decoded again here defensively so that a
//! direct call with odd terms gets `{error, {invalid_option, Key, Value}}` rather than a
//! badarg, and ranges the engine owns are left to it. A missing key takes the engine's default.
use std::sync::Arc;

use rustler::{Atom, Encoder, Env, LocalPid, ResourceArc, Term};
use viva_core::config::{ModelConfig, RopeScaling};
use viva_core::llm::{Device, GenerateOptions, GenerateResult, Llm, LoadOptions, LoadProgress};
use viva_core::formats::fp8::Blocking;
use viva_core::scheduler::{Scheduler, SchedulerOptions};
use viva_core::weights::{Activations, WeightFormat};
use viva_core::Error;

use crate::args::{self, bad, decode, is_atom, ok, one_of, options, resource, run, usize_of, with_option_terms};
use crate::reason::Fail;
use crate::resources::ModelResource;

rustler::atoms! {
    // option keys and values
    num_layers, tokenizer_path, device, all, auto, cpu, cuda, weights, block_size, bf16,
    per_channel, activations, f32,
    max_new_tokens, temperature, top_k, top_p, seed, stop_on_eos, infinity,
    // argument names used in `{invalid_option, Arg, Value}` for non-option arguments
    path, prompt, model, messages, progress, viva_load_progress, none,
    // result and info keys
    tokens, text, ms_per_token, total_tokens,
    hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
    intermediate_size, rms_norm_eps, rope_theta, rope_scaling, vocab_size,
    max_position_embeddings, tie_word_embeddings, bos_token_id, eos_token_ids,
    tokenizer_vocab_size, rope_type, default, llama3, factor, low_freq_factor,
    high_freq_factor, original_max_position_embeddings, undefined, backend,
    // backend_info keys
    // scheduler: load options and info keys
    max_batch, max_queue, prefill_chunk, scheduler, running, waiting, steps, completed, max_batch_seen,
    kv_cache_bytes, kv_blocks, kv_blocks_free, kv_block_tokens, kv_blocks_cached, kv_prefix_reused_tokens,
    cuda_available, cuda_reason, gpu_name, compute_capability, gpu_memory, sm_count, cpu_threads,
}

#[rustler::nif(schedule = "DirtyIo")]
fn model_load<'a>(env: Env<'a>, path_term: Term<'a>, opts_term: Term<'a>) -> Term<'a> {
    run(env, || {
        let path_buf = args::path(path_term, path())?;
        let (receiver, load_opts, sched_opts) = decode_load_options(opts_term)?;
        let mut report = |p: LoadProgress| {
            if let Some(pid) = &receiver {
                // a dead receiver is not an error: loading goes on
                let stage = Atom::from_str(env, p.stage).map(|a| a.encode(env)).unwrap_or_else(|_| p.stage.encode(env));
                let _ = env.send(pid, (viva_load_progress(), stage, p.done, p.total, p.detail.as_str()));
            }
        };
        let llm = with_option_terms(opts_term, Llm::load_with_progress(&path_buf, &load_opts, &mut report))?;
        let sched = with_option_terms(opts_term, Scheduler::start(Arc::new(llm), sched_opts))?;
        ok(env, ResourceArc::new(ModelResource { sched }))
    })
}

#[rustler::nif]
fn model_info<'a>(env: Env<'a>, model_term: Term<'a>) -> Term<'a> {
    run(env, || {
        let handle = resource::<ModelResource>(model_term, model())?;
        let llm = handle.llm();
        let on = if llm.backend() == "cuda" { cuda() } else { cpu() };
        let map = encode_config(env, &llm.config, llm.tokenizer.vocab_size())?;
        let st = handle.sched.stats();
        let (kv, none) = (llm.kv_blocks(), undefined().encode(env));
        let sched = atom_map(env, &[
            (running(), st.running.encode(env)),
            (waiting(), st.waiting.encode(env)),
            (steps(), st.steps.encode(env)),
            (completed(), st.completed.encode(env)),
            (max_batch_seen(), st.max_batch_seen.encode(env)),
            (max_batch(), st.options.max_batch.encode(env)),
            (max_queue(), st.options.max_queue.encode(env)),
            (prefill_chunk(), st.options.prefill_chunk.encode(env)),
            (kv_block_tokens(), viva_core::kv::BLOCK.encode(env)),
            (kv_blocks(), kv.map_or(none, |u| u.blocks.encode(env))),
            (kv_blocks_free(), kv.map_or(none, |u| u.free.encode(env))),
            (kv_blocks_cached(), kv.map_or(none, |u| u.cached.encode(env))),
            (kv_prefix_reused_tokens(), kv.map_or(none, |u| u.reused_tokens.encode(env))),
        ])?;
        let built = map.map_put(backend(), on).and_then(|m| m.map_put(scheduler(), sched));
        ok(env, built.map_err(|_| Error::Internal("could not build the info map".into()))?)
    })
}

/// What the machine offers: `{ok, #{cuda_available, cuda_reason, gpu_name, compute_capability,
/// gpu_memory, sm_count, cpu_threads, auto}}`. The first call initialises CUDA (driver probe,
/// kernel compile or cache load), hence dirty IO.
#[rustler::nif(schedule = "DirtyIo")]
fn backend_info<'a>(env: Env<'a>) -> Term<'a> {
    run(env, || {
        let i = viva_core::backend::info();
        let opt = |v: Option<Term<'a>>| v.unwrap_or_else(|| undefined().encode(env));
        let pairs: [(Atom, Term<'a>); 8] = [
            (cuda_available(), i.cuda_available.encode(env)),
            (cuda_reason(), i.cuda_reason.encode(env)),
            (gpu_name(), opt(i.gpu_name.as_ref().map(|n| n.encode(env)))),
            (compute_capability(), opt(i.compute_capability.map(|c| c.encode(env)))),
            (gpu_memory(), opt(i.gpu_memory.map(|m| m.encode(env)))),
            (sm_count(), opt(i.sm_count.map(|m| m.encode(env)))),
            (cpu_threads(), i.cpu_threads.encode(env)),
            (auto(), if i.auto == "cuda" { cuda() } else { cpu() }.encode(env)),
        ];
        ok(env, atom_map(env, &pairs)?)
    })
}

/// A map with atom keys.
pub(crate) fn atom_map<'a>(env: Env<'a>, pairs: &[(Atom, Term<'a>)]) -> Result<Term<'a>, Fail<'a>> {
    let pairs: Vec<(Term<'a>, Term<'a>)> = pairs.iter().map(|(k, v)| (k.encode(env), *v)).collect();
    Term::map_from_pairs(env, &pairs).map_err(|_| Error::Internal("could not build a map".into()).into())
}

/// The load options, and the `progress` pid (`{viva_load_progress, Stage, Done, Total, Detail}`
/// messages go to it).
fn decode_load_options<'a>(term: Term<'a>) -> Result<(Option<LocalPid>, LoadOptions, SchedulerOptions), Fail<'a>> {
    let mut out = LoadOptions::default();
    let mut sched = SchedulerOptions::default();
    let mut receiver = None;
    let mut blocking = Blocking::DEFAULT;
    for (key, v) in options(term)? {
        if key == num_layers() {
            out.num_layers = if is_atom(v, all()) { None } else { Some(usize_of(v, key)?) };
        } else if key == tokenizer_path() {
            out.tokenizer_path = if is_atom(v, auto()) { None } else { Some(args::path(v, key)?) };
        } else if key == device() {
            out.device = one_of(v, key, &[(auto(), Device::Auto), (cpu(), Device::Cpu), (cuda(), Device::Cuda)])?;
        } else if key == weights() {
            // any registered format by its name (formats/mod.rs)
            let name = v.atom_to_string().map_err(|_| bad(key, v))?;
            out.weights = WeightFormat::from_name(&name).ok_or_else(|| bad(key, v))?;
        } else if key == activations() {
            out.activations = one_of(v, key, &[(f32(), Activations::F32), (bf16(), Activations::Bf16)])?;
        } else if key == block_size() {
            blocking = if is_atom(v, per_channel()) {
                Blocking::PerChannel
            } else {
                Blocking::new(usize_of(v, key)?).map_err(|_| bad(key, v))?
            };
        } else if key == kv_cache_bytes() {
            out.kv_cache_bytes = if is_atom(v, auto()) { None } else { Some(usize_of(v, key)?) };
        } else if key == max_batch() {
            sched.max_batch = usize_of(v, key)?;
        } else if key == max_queue() {
            sched.max_queue = usize_of(v, key)?;
        } else if key == prefill_chunk() {
            sched.prefill_chunk = usize_of(v, key)?;
        } else if key == progress() {
            receiver = if is_atom(v, none()) { None } else { Some(decode::<LocalPid>(v, key)?) };
        } else {
            return Err(bad(key, v));
        }
    }
    // block_size may come before or after weights in the map
    if let WeightFormat::Fp8(_) = out.weights {
        out.weights = WeightFormat::Fp8(blocking);
    }
    Ok((receiver, out, sched))
}

/// The generate options, checked by the engine's own rules (temperature, top_k, top_p ranges).
pub(crate) fn decode_generate_options<'a>(term: Term<'a>) -> Result<GenerateOptions, Fail<'a>> {
    let mut out = GenerateOptions::default();
    for (key, v) in options(term)? {
        if key == max_new_tokens() {
            out.max_new_tokens = usize_of(v, key)?;
        } else if key == temperature() {
            // rustler's f32 decode rejects values that overflow f32 and accepts integers.
            out.temperature = decode(v, key)?;
        } else if key == top_k() {
            out.top_k = if is_atom(v, infinity()) { None } else { Some(usize_of(v, key)?) };
        } else if key == top_p() {
            out.top_p = decode(v, key)?;
        } else if key == seed() {
            out.seed = decode(v, key)?;
        } else if key == stop_on_eos() {
            out.stop_on_eos = decode(v, key)?;
        } else {
            return Err(bad(key, v));
        }
    }
    with_option_terms(term, out.validate())?;
    Ok(out)
}

/// `#{tokens, text, ms_per_token, total_tokens}`.
pub(crate) fn result_map<'a>(env: Env<'a>, r: &GenerateResult) -> Result<Term<'a>, Fail<'a>> {
    let pairs = [
        (tokens(), r.tokens.as_slice().encode(env)),
        (text(), r.text.as_str().encode(env)),
        (ms_per_token(), r.ms_per_token.encode(env)),
        (total_tokens(), r.total_tokens.encode(env)),
    ];
    atom_map(env, &pairs)
}

fn encode_config<'a>(env: Env<'a>, c: &ModelConfig, tok_vocab: usize) -> Result<Term<'a>, Fail<'a>> {
    let rope = match &c.rope_scaling {
        RopeScaling::Default => default().encode(env),
        RopeScaling::Llama3 {
            factor: f,
            low_freq_factor: lo,
            high_freq_factor: hi,
            original_max_position_embeddings: orig,
        } => {
            let pairs = [
                (rope_type(), llama3().encode(env)),
                (factor(), shortest_f64(*f).encode(env)),
                (low_freq_factor(), shortest_f64(*lo).encode(env)),
                (high_freq_factor(), shortest_f64(*hi).encode(env)),
                (original_max_position_embeddings(), orig.encode(env)),
            ];
            atom_map(env, &pairs)?
        }
    };
    let bos = match c.bos_token_id {
        Some(id) => id.encode(env),
        None => undefined().encode(env),
    };
    let pairs: [(Atom, Term<'a>); 15] = [
        (hidden_size(), c.hidden_size.encode(env)),
        (num_hidden_layers(), c.num_hidden_layers.encode(env)),
        (num_attention_heads(), c.num_attention_heads.encode(env)),
        (num_key_value_heads(), c.num_key_value_heads.encode(env)),
        (head_dim(), c.head_dim.encode(env)),
        (intermediate_size(), c.intermediate_size.encode(env)),
        (rms_norm_eps(), shortest_f64(c.rms_norm_eps).encode(env)),
        (rope_theta(), shortest_f64(c.rope_theta).encode(env)),
        (rope_scaling(), rope),
        (vocab_size(), c.vocab_size.encode(env)),
        (max_position_embeddings(), c.max_position_embeddings.encode(env)),
        (tie_word_embeddings(), c.tie_word_embeddings.encode(env)),
        (bos_token_id(), bos),
        (eos_token_ids(), c.eos_token_ids.as_slice().encode(env)),
        (tokenizer_vocab_size(), tok_vocab.encode(env)),
    ];
    atom_map(env, &pairs)
}

/// The f64 with the f32's shortest decimal form, so 1e-5 reads back as 1.0e-5 rather than
/// 9.999999747378752e-6.
fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}
