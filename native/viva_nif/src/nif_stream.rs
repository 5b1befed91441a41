//! Streaming generation: a native thread per stream runs the same `generate_with` loop and
//! sends `{viva_token, Ref, Chunk}` per completed UTF-8 chunk, then `{viva_done, Ref, Result}`
//! or `{viva_error, Ref, Reason}`. `Ref` is the stream's resource handle. The stream stops
//! (and its KV cache is freed) when cancelled or when a send fails because the receiving
//! process is gone — checked after every token.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use rustler::env::OwnedEnv;
use rustler::{Binary, Encoder, Env, LocalPid, ResourceArc, Term};
use viva_core::Error;

use crate::nif_model::{decode_generate_options, generate_text, guarded, result_map};
use crate::reason::{self, error_tuple, invalid_option_error};
use crate::resources::ModelResource;

rustler::atoms! { viva_token, viva_done, viva_error, model, prompt, pid, stream }

/// Native stream threads alive now (tests check that a dead receiver frees its stream).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

pub struct StreamResource {
    cancel: Arc<AtomicBool>,
}
#[rustler::resource_impl]
impl rustler::Resource for StreamResource {}

/// Decrements ACTIVE however the thread ends.
struct Active;
impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Starts a stream to `Pid`; returns `{ok, Ref}` at once (the work runs on its own thread).
#[rustler::nif]
fn model_stream<'a>(env: Env<'a>, m: Term<'a>, p: Term<'a>, opts: Term<'a>, to: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let handle: ResourceArc<ModelResource> = match m.decode() {
            Ok(h) => h,
            Err(_) => return invalid_option_error(env, model().encode(env), m),
        };
        let text = match Binary::from_term(p) {
            Ok(b) => match std::str::from_utf8(b.as_slice()) {
                Ok(s) => s.to_string(),
                Err(_) => return error_tuple(env, &Error::InvalidUtf8),
            },
            Err(_) => return invalid_option_error(env, prompt().encode(env), p),
        };
        let receiver: LocalPid = match to.decode() {
            Ok(pid_) => pid_,
            Err(_) => return invalid_option_error(env, pid().encode(env), to),
        };
        let gen_opts = match decode_generate_options(env, opts) {
            Ok(o) => o,
            Err(bad) => return invalid_option_error(env, bad.key, bad.value),
        };
        if let Err(e) = gen_opts.validate() {
            return error_tuple(env, &e);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let stream_ref = ResourceArc::new(StreamResource { cancel: cancel.clone() });
        let thread_ref = stream_ref.clone();
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name("viva_stream".into()).spawn(move || {
            let _active = Active;
            let mut msg_env = OwnedEnv::new();
            let llm = &handle.0;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                generate_text(llm, &text, &gen_opts, |chunk| {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(Error::Cancelled);
                    }
                    if chunk.is_empty() {
                        return Ok(());
                    }
                    msg_env
                        .send_and_clear(&receiver, |e| (viva_token(), thread_ref.clone(), chunk).encode(e))
                        .map_err(|_| Error::Cancelled) // the receiver is gone: stop
                })
            }));
            let _ = msg_env.send_and_clear(&receiver, |e| match outcome {
                Ok(Ok(result)) => match result_map(e, &result) {
                    Some(map) => (viva_done(), thread_ref.clone(), map).encode(e),
                    None => (viva_error(), thread_ref.clone(), reason::reason(e, &Error::Internal("result map".into()))).encode(e),
                },
                Ok(Err(err)) => (viva_error(), thread_ref.clone(), reason::reason(e, &err)).encode(e),
                Err(_) => (viva_error(), thread_ref.clone(), reason::reason(e, &Error::Internal("stream panicked".into()))).encode(e),
            });
        });
        if spawned.is_err() {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            return error_tuple(env, &Error::OutOfMemory);
        }
        (reason::ok(), stream_ref).encode(env)
    })
}

/// Asks a stream to stop; it then sends `{viva_error, Ref, cancelled}` (unless it had ended).
#[rustler::nif]
fn stream_cancel<'a>(env: Env<'a>, s: Term<'a>) -> Term<'a> {
    guarded(env, || match s.decode::<ResourceArc<StreamResource>>() {
        Ok(r) => {
            r.cancel.store(true, Ordering::Relaxed);
            reason::ok().encode(env)
        }
        Err(_) => invalid_option_error(env, stream().encode(env), s),
    })
}

#[rustler::nif]
fn stream_active_count(env: Env) -> Term {
    ACTIVE.load(Ordering::SeqCst).encode(env)
}
