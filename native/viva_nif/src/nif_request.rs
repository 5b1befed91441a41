//! Generation requests: `model_submit/5` hands a prompt (or chat messages) to the model's
//! scheduler (viva_core::scheduler, one engine thread per model that batches every caller) and
//! returns `{ok, Ref}` at once; the engine thread then sends `Pid` `{viva_token, Ref, Chunk}` per
//! completed UTF-8 chunk (streams only) and finally `{viva_done, Ref, Result}` or
//! `{viva_error, Ref, Reason}`. `Ref` is the request's resource. It monitors `Pid`: when that
//! process dies, the request leaves the batch at the next step and its KV memory is freed —
//! generate/3's caller waiting in `receive` and a stream's receiver alike.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use rustler::env::OwnedEnv;
use rustler::{Encoder, Env, LocalPid, Monitor, ResourceArc, Term};
use viva_core::chat::Message;
use viva_core::llm::GenerateResult;
use viva_core::scheduler::{Job, Sink};
use viva_core::Error;

use crate::args::{decode, list_of, ok, resource, run, utf8};
use crate::nif_model::{decode_generate_options, result_map};
use crate::reason::{self, Fail, Reason};
use crate::resources::ModelResource;

rustler::atoms! { viva_token, viva_done, viva_error, model, prompt, messages, pid, request, stream }

/// Requests submitted and not yet finished (tests check that a dead caller frees its request).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

pub struct RequestResource {
    cancel: Arc<AtomicBool>,
}

#[rustler::resource_impl]
impl rustler::Resource for RequestResource {
    /// The monitored caller / receiver is gone: stop at the next step.
    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _mon: Monitor) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The NIF's sink: messages to `to`; holds the model's handle so the model outlives the request.
struct MsgSink {
    env: OwnedEnv,
    to: LocalPid,
    req: ResourceArc<RequestResource>,
    stream: bool,
    _model: ResourceArc<ModelResource>,
}

impl Drop for MsgSink {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Sink for MsgSink {
    fn text(&mut self, chunk: &str) -> viva_core::Result<()> {
        if self.req.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        if !self.stream || chunk.is_empty() {
            return Ok(());
        }
        let r = self.req.clone();
        // a failed send: the receiver is gone
        self.env.send_and_clear(&self.to, |e| (viva_token(), r, chunk).encode(e)).map_err(|_| Error::Cancelled)
    }

    fn done(&mut self, result: viva_core::Result<GenerateResult>) {
        let r = self.req.clone();
        let _ = self.env.send_and_clear(&self.to, |e| {
            let done = result.and_then(|res| result_map(e, &res).map_err(|_| Error::Internal("result map".into())));
            match done {
                Ok(map) => (viva_done(), r, map).encode(e),
                Err(err) => (viva_error(), r, Reason(&err)).encode(e),
            }
        });
    }
}

/// `model_submit(Model, Input, Opts, Pid, Stream)`: `Input` a prompt binary (encoded with the
/// tokenizer's special tokens) or a list of `{Role, Content}` binaries (the chat template, then
/// encoded as rendered). Tokenizing and rendering can take milliseconds: dirty CPU.
#[rustler::nif(schedule = "DirtyCpu")]
fn model_submit<'a>(env: Env<'a>, m: Term<'a>, input: Term<'a>, opts: Term<'a>, to: Term<'a>, streaming: Term<'a>) -> Term<'a> {
    run(env, || {
        let handle = resource::<ModelResource>(m, model())?;
        let llm = handle.sched.llm();
        let ids = if !input.is_list() {
            llm.tokenizer.encode(utf8(input, prompt())?, true)?
        } else {
            let pairs: Vec<(Term<'a>, Term<'a>)> = list_of(input, messages())?;
            let msgs = pairs
                .into_iter()
                .map(|(r, c)| Ok(Message { role: utf8(r, messages())?.to_string(), content: utf8(c, messages())?.to_string() }))
                .collect::<Result<Vec<_>, Fail>>()?;
            llm.chat_ids(&msgs)?
        };
        let gen_opts = decode_generate_options(opts)?;
        let receiver: LocalPid = decode(to, pid())?;
        let stream_flag: bool = decode(streaming, stream())?;
        let cancel = Arc::new(AtomicBool::new(false));
        let req = ResourceArc::new(RequestResource { cancel: cancel.clone() });
        if env.monitor(&req, &receiver).is_none() {
            return Err(Error::Cancelled.into()); // the receiver is already dead
        }
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        let sink = MsgSink { env: OwnedEnv::new(), to: receiver, req: req.clone(), stream: stream_flag, _model: handle.clone() };
        handle.sched.submit(Job { prompt: ids, opts: gen_opts, cancel, sink: Box::new(sink) })?;
        ok(env, req)
    })
}

/// Asks a request to stop; it then sends `{viva_error, Ref, cancelled}` (unless it had ended).
#[rustler::nif]
fn request_cancel<'a>(env: Env<'a>, r: Term<'a>) -> Term<'a> {
    run(env, || {
        resource::<RequestResource>(r, request())?.cancel.store(true, Ordering::Relaxed);
        Ok(reason::ok().encode(env))
    })
}

/// Requests submitted and not yet finished, over all models.
#[rustler::nif]
fn request_active_count(env: Env) -> Term {
    ACTIVE.load(Ordering::SeqCst).encode(env)
}
