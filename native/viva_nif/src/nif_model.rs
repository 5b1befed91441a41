//! Model NIFs: `model_load/2` (dirty IO), `model_generate/3` and `model_chat/3` (dirty CPU),
//! `model_info/1`, `backend_info/0`.
//!
//! Options arrive already validated and defaulted by viva_tensor_llm.erl (the single source
//! of their names, defaults and domains); they are decoded again here defensively so that a
//! direct call with odd terms gets `{error, {invalid_option, Key, Value}}` rather than a
//! badarg, and ranges the engine owns are left to it. A missing key takes the engine's default.
use std::sync::Arc;

use rustler::{Atom, Encoder, Env, LocalPid, ResourceArc, Term};
use viva_core::chat::Message;
use viva_core::config::{ModelConfig, RopeScaling};
use viva_core::llm::{Device, GenerateOptions, GenerateResult, Llm, LoadOptions, LoadProgress};
use viva_core::formats::fp8::Blocking;
use viva_core::weights::{Activations, WeightFormat};
use viva_core::Error;

use crate::args::{self, bad, decode, is_atom, list_of, ok, one_of, options, resource, run, usize_of, utf8, with_option_terms, Out};
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
    cuda_available, cuda_reason, gpu_name, compute_capability, gpu_memory, sm_count, cpu_threads,
}

#[rustler::nif(schedule = "DirtyIo")]
fn model_load<'a>(env: Env<'a>, path_term: Term<'a>, opts_term: Term<'a>) -> Term<'a> {
    run(env, || {
        let path_buf = args::path(path_term, path())?;
        let (receiver, load_opts) = decode_load_options(opts_term)?;
        let mut report = |p: LoadProgress| {
            if let Some(pid) = &receiver {
                // a dead receiver is not an error: loading goes on
                let stage = Atom::from_str(env, p.stage).map(|a| a.encode(env)).unwrap_or_else(|_| p.stage.encode(env));
                let _ = env.send(pid, (viva_load_progress(), stage, p.done, p.total, p.detail.as_str()));
            }
        };
        let llm = with_option_terms(opts_term, Llm::load_with_progress(&path_buf, &load_opts, &mut report))?;
        ok(env, ResourceArc::new(ModelResource(Arc::new(llm))))
    })
}

#[rustler::nif(schedule = "DirtyCpu")]
fn model_generate<'a>(env: Env<'a>, model_term: Term<'a>, prompt_term: Term<'a>, opts_term: Term<'a>) -> Term<'a> {
    run(env, || {
        let handle = resource::<ModelResource>(model_term, model())?;
        let text = utf8(prompt_term, prompt())?;
        let gen_opts = decode_generate_options(opts_term)?;
        let result = generate_text(&handle.0, text, &gen_opts, while_caller_alive(env))?;
        encode_result(env, &result)
    })
}

/// Chat: `Messages` is a list of `{Role, Content}` binaries (viva_tensor_llm:chat/3 builds it);
/// the model's chat template renders them with the assistant turn opened.
#[rustler::nif(schedule = "DirtyCpu")]
fn model_chat<'a>(env: Env<'a>, model_term: Term<'a>, messages_term: Term<'a>, opts_term: Term<'a>) -> Term<'a> {
    run(env, || {
        let handle = resource::<ModelResource>(model_term, model())?;
        let pairs: Vec<(Term<'a>, Term<'a>)> = list_of(messages_term, messages())?;
        let msgs = pairs
            .into_iter()
            .map(|(r, c)| Ok(Message { role: utf8(r, messages())?.to_string(), content: utf8(c, messages())?.to_string() }))
            .collect::<Result<Vec<_>, Fail>>()?;
        let gen_opts = decode_generate_options(opts_term)?;
        let result = handle.0.chat_with(&msgs, &gen_opts, while_caller_alive(env))?;
        encode_result(env, &result)
    })
}

/// `generate` of a prompt with a per-token callback (generate/3 and stream/4 share it).
pub(crate) fn generate_text(
    llm: &Llm,
    text: &str,
    opts: &GenerateOptions,
    on_text: impl FnMut(&str) -> viva_core::Result<()>,
) -> viva_core::Result<GenerateResult> {
    let ids = llm.tokenizer.encode(text, true)?;
    llm.generate_with(&ids, opts, on_text)
}

/// The per-token callback of a dirty NIF's generation: stops it (and frees its KV cache) once
/// the calling process is gone — killed by a supervisor, or a `gen_server:call` timeout.
/// A dirty NIF keeps the caller's process env, and `enif_is_current_process_alive` is the
/// erl_nif call made for this (valid on the NIF-calling thread with that env; a killed process
/// is marked exiting at once, while its dirty NIF runs on). One flag read per token.
fn while_caller_alive(env: Env<'_>) -> impl FnMut(&str) -> viva_core::Result<()> + '_ {
    move |_| {
        // SAFETY: `env` is this NIF call's own process env, used on the calling thread.
        if unsafe { rustler::sys::enif_is_current_process_alive(env.as_c_arg()) } != 0 {
            Ok(())
        } else {
            Err(viva_core::Error::Cancelled)
        }
    }
}

#[rustler::nif]
fn model_info<'a>(env: Env<'a>, model_term: Term<'a>) -> Term<'a> {
    run(env, || {
        let handle = resource::<ModelResource>(model_term, model())?;
        let llm = &handle.0;
        let on = if llm.backend() == "cuda" { cuda() } else { cpu() };
        let map = encode_config(env, &llm.config, llm.tokenizer.vocab_size())?;
        ok(env, map.map_put(backend(), on).map_err(|_| Error::Internal("could not build the info map".into()))?)
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
fn decode_load_options<'a>(term: Term<'a>) -> Result<(Option<LocalPid>, LoadOptions), Fail<'a>> {
    let mut out = LoadOptions::default();
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
    Ok((receiver, out))
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

fn encode_result<'a>(env: Env<'a>, r: &GenerateResult) -> Out<'a> {
    ok(env, result_map(env, r)?)
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
