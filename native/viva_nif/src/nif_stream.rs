//! Streaming generation: a native thread per stream runs the same `generate_with` loop and
//! sends `{viva_token, Ref, Chunk}` per completed UTF-8 chunk, then `{viva_done, Ref, Result}`
//! or `{viva_error, Ref, Reason}`. `Ref` is the stream's resource handle. The stream stops
//! (and its KV cache is freed) when cancelled or when a send fails because the receiving
//! process is gone — checked after every token.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use rustler::env::OwnedEnv;
use rustler::{Encoder, Env, LocalPid, ResourceArc, Term};
use viva_core::Error;

use crate::args::{decode, ok, resource, run, utf8};
use crate::nif_model::{decode_generate_options, generate_text, result_map};
use crate::reason::{self, Reason};
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
    run(env, || {
        let handle = resource::<ModelResource>(m, model())?;
        let text = utf8(p, prompt())?.to_string();
        let receiver: LocalPid = decode(to, pid())?;
        let gen_opts = decode_generate_options(opts)?;
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
            let _ = msg_env.send_and_clear(&receiver, |e| {
                let done = match outcome {
                    Ok(Ok(result)) => result_map(e, &result).map_err(|_| Error::Internal("result map".into())),
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(Error::Internal("stream panicked".into())),
                };
                match done {
                    Ok(map) => (viva_done(), thread_ref.clone(), map).encode(e),
                    Err(err) => (viva_error(), thread_ref.clone(), Reason(&err)).encode(e),
                }
            });
        });
        if spawned.is_err() {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::OutOfMemory.into());
        }
        ok(env, stream_ref)
    })
}

/// Asks a stream to stop; it then sends `{viva_error, Ref, cancelled}` (unless it had ended).
#[rustler::nif]
fn stream_cancel<'a>(env: Env<'a>, s: Term<'a>) -> Term<'a> {
    run(env, || {
        resource::<StreamResource>(s, stream())?.cancel.store(true, Ordering::Relaxed);
        Ok(reason::ok().encode(env))
    })
}

#[rustler::nif]
fn stream_active_count(env: Env) -> Term {
    ACTIVE.load(Ordering::SeqCst).encode(env)
}
