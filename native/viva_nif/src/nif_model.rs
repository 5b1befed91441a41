//! Model NIFs: `model_load/2` (dirty IO), `model_generate/3` (dirty CPU), `model_info/1`.
//!
//! Options arrive already validated and defaulted by viva_tensor_llm.erl; they are decoded
//! again here defensively so that a direct call with odd terms gets
//! `{error, {invalid_option, Key, Value}}` rather than a badarg or a crash. A missing key
//! takes the engine's default.
use std::any::Any;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use rustler::types::map::MapIterator;
use rustler::{Atom, Binary, Encoder, Env, LocalPid, ResourceArc, Term};
use viva_core::chat::Message;
use viva_core::config::{ModelConfig, RopeScaling};
use viva_core::llm::{Device, GenerateOptions, GenerateResult, Llm, LoadOptions, LoadProgress};
use viva_core::quant::fp8::Blocking;
use viva_core::weights::{Activations, WeightFormat};

use crate::reason::{self, error_tuple, internal_error, invalid_option_error};
use crate::resources::ModelResource;

rustler::atoms! {
    // option keys and values
    num_layers, tokenizer_path, device, all, auto, cpu, cuda, weights, block_size, fp8, bf16,
    native, per_channel, activations, f32,
    max_new_tokens, temperature, top_k, top_p, seed, stop_on_eos, infinity,
    // argument names used in `{invalid_option, Arg, Value}` for non-option arguments
    path, prompt, model, opts, messages, progress, viva_load_progress, none,
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

/// A term the NIF could not accept: the `{invalid_option, Key, Value}` to report.
pub(crate) struct BadTerm<'a> {
    pub(crate) key: Term<'a>,
    pub(crate) value: Term<'a>,
}

impl<'a> BadTerm<'a> {
    fn new(env: Env<'a>, key: Atom, value: Term<'a>) -> Self {
        BadTerm { key: key.encode(env), value }
    }
}

#[rustler::nif(schedule = "DirtyIo")]
fn model_load<'a>(env: Env<'a>, path_term: Term<'a>, opts_term: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let path_buf = match decode_path(env, path_term, path()) {
            Ok(p) => p,
            Err(bad) => return invalid_option_error(env, bad.key, bad.value),
        };
        // `progress => Pid`: {viva_load_progress, Stage, Done, Total, Detail} messages to Pid
        let (receiver, opts_term) = match opts_term.map_get(progress().encode(env)) {
            Ok(p) => match (p.decode::<LocalPid>(), opts_term.map_remove(progress().encode(env))) {
                (Ok(pid), Ok(rest)) => (Some(pid), rest),
                (Err(_), Ok(rest)) if is_atom(p, none()) => (None, rest),
                _ => return invalid_option_error(env, progress().encode(env), p),
            },
            Err(_) => (None, opts_term),
        };
        let load_opts = match decode_load_options(env, opts_term) {
            Ok(o) => o,
            Err(bad) => return invalid_option_error(env, bad.key, bad.value),
        };
        let mut report = |p: LoadProgress| {
            if let Some(pid) = &receiver {
                // a dead receiver is not an error: loading goes on
                let stage = Atom::from_str(env, p.stage).map(|a| a.encode(env)).unwrap_or_else(|_| p.stage.encode(env));
                let _ = env.send(pid, (viva_load_progress(), stage, p.done, p.total, p.detail.as_str()));
            }
        };
        match Llm::load_with_progress(&path_buf, &load_opts, &mut report) {
            Ok(llm) => {
                let handle = ResourceArc::new(ModelResource(Arc::new(llm)));
                (reason::ok(), handle).encode(env)
            }
            Err(e) => error_tuple(env, &e),
        }
    })
}

#[rustler::nif(schedule = "DirtyCpu")]
fn model_generate<'a>(
    env: Env<'a>,
    model_term: Term<'a>,
    prompt_term: Term<'a>,
    opts_term: Term<'a>,
) -> Term<'a> {
    guarded(env, || {
        let handle: ResourceArc<ModelResource> = match model_term.decode() {
            Ok(h) => h,
            Err(_) => return invalid_option_error(env, model().encode(env), model_term),
        };
        let bytes = match Binary::from_term(prompt_term) {
            Ok(b) => b,
            Err(_) => return invalid_option_error(env, prompt().encode(env), prompt_term),
        };
        // Checked here, not in the engine: the engine takes &str.
        let text = match std::str::from_utf8(bytes.as_slice()) {
            Ok(s) => s,
            Err(_) => return error_tuple(env, &viva_core::Error::InvalidUtf8),
        };
        let gen_opts = match decode_generate_options(env, opts_term) {
            Ok(o) => o,
            Err(bad) => return invalid_option_error(env, bad.key, bad.value),
        };
        // Range rules the engine owns (e.g. top_k in 1..=256) come back as InvalidOption.
        if let Err(e) = gen_opts.validate() {
            return error_tuple(env, &e);
        }
        match generate_text(&handle.0, text, &gen_opts, while_caller_alive(env)) {
            Ok(result) => encode_result(env, &result),
            Err(e) => error_tuple(env, &e),
        }
    })
}

/// Chat: `Messages` is a list of `{Role, Content}` binaries (viva_tensor_llm:chat/3 builds it);
/// the model's chat template renders them with the assistant turn opened.
#[rustler::nif(schedule = "DirtyCpu")]
fn model_chat<'a>(env: Env<'a>, model_term: Term<'a>, messages_term: Term<'a>, opts_term: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let handle: ResourceArc<ModelResource> = match model_term.decode() {
            Ok(h) => h,
            Err(_) => return invalid_option_error(env, model().encode(env), model_term),
        };
        let pairs: Vec<(Binary, Binary)> = match messages_term.decode() {
            Ok(p) => p,
            Err(_) => return invalid_option_error(env, messages().encode(env), messages_term),
        };
        let mut msgs = Vec::with_capacity(pairs.len());
        for (role, content) in pairs {
            match (std::str::from_utf8(role.as_slice()), std::str::from_utf8(content.as_slice())) {
                (Ok(r), Ok(c)) => msgs.push(Message { role: r.to_string(), content: c.to_string() }),
                _ => return error_tuple(env, &viva_core::Error::InvalidUtf8),
            }
        }
        let gen_opts = match decode_generate_options(env, opts_term) {
            Ok(o) => o,
            Err(bad) => return invalid_option_error(env, bad.key, bad.value),
        };
        match handle.0.chat_with(&msgs, &gen_opts, while_caller_alive(env)) {
            Ok(result) => encode_result(env, &result),
            Err(e) => error_tuple(env, &e),
        }
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
    guarded(env, || {
        let handle: ResourceArc<ModelResource> = match model_term.decode() {
            Ok(h) => h,
            Err(_) => return invalid_option_error(env, model().encode(env), model_term),
        };
        let llm = &handle.0;
        let on = if llm.backend() == "cuda" { cuda() } else { cpu() };
        match encode_config(env, &llm.config, llm.tokenizer.vocab_size()).and_then(|m| m.map_put(backend(), on).ok()) {
            Some(map) => (reason::ok(), map).encode(env),
            None => internal_error(env, "could not build the info map"),
        }
    })
}

/// What the machine offers: `{ok, #{cuda_available, cuda_reason, gpu_name, compute_capability,
/// gpu_memory, sm_count, cpu_threads, auto}}`. The first call initialises CUDA (driver probe,
/// kernel compile or cache load), hence dirty IO.
#[rustler::nif(schedule = "DirtyIo")]
fn backend_info<'a>(env: Env<'a>) -> Term<'a> {
    guarded(env, || {
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
        let keys: Vec<Term<'a>> = pairs.iter().map(|(k, _)| k.encode(env)).collect();
        let values: Vec<Term<'a>> = pairs.iter().map(|(_, v)| *v).collect();
        match Term::map_from_term_arrays(env, &keys, &values) {
            Ok(map) => (reason::ok(), map).encode(env),
            Err(_) => internal_error(env, "could not build the backend map"),
        }
    })
}

/// Runs a NIF body, turning a panic (a bug) into `{error, {internal, Msg}}` so it never
/// takes the VM down.
pub(crate) fn guarded<'a>(env: Env<'a>, body: impl FnOnce() -> Term<'a>) -> Term<'a> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(term) => term,
        Err(payload) => internal_error(env, &format!("panic: {}", panic_message(payload.as_ref()))),
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

/// File names are bytes on Unix: no UTF-8 requirement.
fn decode_path<'a>(env: Env<'a>, term: Term<'a>, key: Atom) -> Result<PathBuf, BadTerm<'a>> {
    match Binary::from_term(term) {
        Ok(b) if !b.as_slice().is_empty() => Ok(PathBuf::from(OsStr::from_bytes(b.as_slice()))),
        _ => Err(BadTerm::new(env, key, term)),
    }
}

/// The `(key, value)` pairs of an options map; anything but a map is `{invalid_option, opts, T}`.
fn map_entries<'a>(env: Env<'a>, term: Term<'a>) -> Result<Vec<(Term<'a>, Term<'a>)>, BadTerm<'a>> {
    match MapIterator::new(term) {
        Some(iter) => Ok(iter.collect()),
        None => Err(BadTerm::new(env, opts(), term)),
    }
}

fn decode_load_options<'a>(env: Env<'a>, term: Term<'a>) -> Result<LoadOptions, BadTerm<'a>> {
    let mut out = LoadOptions::default();
    let mut blocking = Blocking::DEFAULT;
    let mut fp8_weights = true;
    for (k, v) in map_entries(env, term)? {
        let bad = || BadTerm { key: k, value: v };
        let key: Atom = k.decode().map_err(|_| bad())?;
        if key == num_layers() {
            out.num_layers = if is_atom(v, all()) {
                None
            } else {
                match v.decode::<u64>().ok().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n > 0 => Some(n),
                    _ => return Err(bad()),
                }
            };
        } else if key == tokenizer_path() {
            out.tokenizer_path =
                if is_atom(v, auto()) { None } else { Some(decode_path(env, v, tokenizer_path())?) };
        } else if key == device() {
            out.device = if is_atom(v, auto()) {
                Device::Auto
            } else if is_atom(v, cpu()) {
                Device::Cpu
            } else if is_atom(v, cuda()) {
                Device::Cuda
            } else {
                return Err(bad());
            };
        } else if key == weights() {
            fp8_weights = is_atom(v, fp8());
            out.weights = if fp8_weights {
                WeightFormat::Fp8(blocking)
            } else if is_atom(v, bf16()) {
                WeightFormat::Bf16
            } else if is_atom(v, native()) {
                WeightFormat::Native
            } else {
                return Err(bad());
            };
        } else if key == activations() {
            out.activations = if is_atom(v, f32()) {
                Activations::F32
            } else if is_atom(v, bf16()) {
                Activations::Bf16
            } else {
                return Err(bad());
            };
        } else if key == block_size() {
            blocking = if is_atom(v, per_channel()) {
                Blocking::PerChannel
            } else {
                v.decode::<usize>().ok().and_then(|b| Blocking::new(b).ok()).ok_or_else(bad)?
            };
        } else {
            return Err(bad());
        }
    }
    // block_size may come before or after weights in the map
    if fp8_weights {
        out.weights = WeightFormat::Fp8(blocking);
    }
    Ok(out)
}

pub(crate) fn decode_generate_options<'a>(env: Env<'a>, term: Term<'a>) -> Result<GenerateOptions, BadTerm<'a>> {
    let mut out = GenerateOptions::default();
    for (k, v) in map_entries(env, term)? {
        let bad = || BadTerm { key: k, value: v };
        let key: Atom = k.decode().map_err(|_| bad())?;
        if key == max_new_tokens() {
            let n: u64 = v.decode().map_err(|_| bad())?;
            out.max_new_tokens = usize::try_from(n).map_err(|_| bad())?;
        } else if key == temperature() {
            // rustler's f32 decode rejects values that overflow f32 and accepts integers.
            let t: f32 = v.decode().map_err(|_| bad())?;
            if t < 0.0 {
                return Err(bad());
            }
            out.temperature = t;
        } else if key == top_k() {
            out.top_k = if is_atom(v, infinity()) {
                None
            } else {
                let n: u64 = v.decode().map_err(|_| bad())?;
                Some(usize::try_from(n).map_err(|_| bad())?)
            };
        } else if key == top_p() {
            let p: f32 = v.decode().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 1.0) {
                return Err(bad());
            }
            out.top_p = p;
        } else if key == seed() {
            out.seed = v.decode().map_err(|_| bad())?;
        } else if key == stop_on_eos() {
            out.stop_on_eos = v.decode().map_err(|_| bad())?;
        } else {
            return Err(bad());
        }
    }
    Ok(out)
}

fn is_atom(term: Term, atom: Atom) -> bool {
    term.decode::<Atom>().map(|a| a == atom).unwrap_or(false)
}

/// `#{tokens, text, ms_per_token, total_tokens}` (None if the map cannot be built).
pub(crate) fn result_map<'a>(env: Env<'a>, r: &GenerateResult) -> Option<Term<'a>> {
    let keys = [tokens(), text(), ms_per_token(), total_tokens()].map(|a| a.encode(env));
    let values = [
        r.tokens.as_slice().encode(env),
        r.text.as_str().encode(env),
        r.ms_per_token.encode(env),
        r.total_tokens.encode(env),
    ];
    Term::map_from_term_arrays(env, &keys, &values).ok()
}

fn encode_result<'a>(env: Env<'a>, r: &GenerateResult) -> Term<'a> {
    match result_map(env, r) {
        Some(map) => (reason::ok(), map).encode(env),
        None => internal_error(env, "could not build the result map"),
    }
}

fn encode_config<'a>(env: Env<'a>, c: &ModelConfig, tok_vocab: usize) -> Option<Term<'a>> {
    let rope = match &c.rope_scaling {
        RopeScaling::Default => default().encode(env),
        RopeScaling::Llama3 {
            factor: f,
            low_freq_factor: lo,
            high_freq_factor: hi,
            original_max_position_embeddings: orig,
        } => {
            let keys = [rope_type(), factor(), low_freq_factor(), high_freq_factor(), original_max_position_embeddings()]
                .map(|a| a.encode(env));
            let values = [
                llama3().encode(env),
                shortest_f64(*f).encode(env),
                shortest_f64(*lo).encode(env),
                shortest_f64(*hi).encode(env),
                orig.encode(env),
            ];
            Term::map_from_term_arrays(env, &keys, &values).ok()?
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
    let keys: Vec<Term<'a>> = pairs.iter().map(|(k, _)| k.encode(env)).collect();
    let values: Vec<Term<'a>> = pairs.iter().map(|(_, v)| *v).collect();
    Term::map_from_term_arrays(env, &keys, &values).ok()
}

/// The f64 with the f32's shortest decimal form, so 1e-5 reads back as 1.0e-5 rather than
/// 9.999999747378752e-6.
fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}
