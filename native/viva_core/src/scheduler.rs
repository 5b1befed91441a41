//! Continuous batching: one engine thread per loaded model runs every caller's generation.
//!
//! Callers `submit` a `Job` (prompt ids, options, a `Sink` for text and the result); the thread
//! keeps a running set of sequences and, each step: admits waiting jobs (up to `max_batch`
//! running), feeds prompts in chunks (at most `prefill_chunk` prompt tokens per step in all, so a
//! long prompt never stalls the others' decoding), steps every sequence that has a sampled token
//! as one batch (`Backend::step`), then samples each sequence's next token with its own sampler
//! (seed, temperature, top-k/p) and stop rules (`Generation`). A cancelled job, or one whose
//! sink refuses text (its caller is gone), leaves the batch at the next step and its KV memory is
//! freed there. Past `max_queue` waiting jobs `submit` says `Overloaded`.
//!
//! A sequence's tokens depend only on its own prompt and options: the backends compute each
//! sequence of a step as they would alone (tests/scheduler.rs checks a crowd against solo runs).
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::backend::{Backend, Engine, Seq};
use crate::error::{Error, Result};
use crate::generation::Generation;
use crate::llm::{GenerateOptions, GenerateResult, Llm};

/// Load options of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Sequences decoded together in one step.
    pub max_batch: usize,
    /// Jobs that may wait for a place in the batch; past it `submit` is `Overloaded`.
    pub max_queue: usize,
    /// Prompt tokens prefilled per step, over all admitted prompts.
    pub prefill_chunk: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { max_batch: 64, max_queue: 1024, prefill_chunk: 512 }
    }
}

impl SchedulerOptions {
    pub fn validate(&self) -> Result<()> {
        for (key, v, max) in [("max_batch", self.max_batch, 4096), ("max_queue", self.max_queue, 1 << 20), ("prefill_chunk", self.prefill_chunk, 1 << 16)] {
            if v == 0 || v > max {
                return Err(Error::invalid_option(key, v));
            }
        }
        Ok(())
    }
}

/// Where a job's text and result go (the NIF sends them as messages).
pub trait Sink: Send {
    /// The text one sampled token completes (valid UTF-8, often empty). An `Err` (the caller is
    /// gone) ends the job at once; `done` is still called, with that error.
    fn text(&mut self, chunk: &str) -> Result<()>;
    /// The result, or why the job failed; called exactly once.
    fn done(&mut self, result: Result<GenerateResult>);
}

pub struct Job {
    /// Validated by `submit` (non-empty, ids in the vocabulary, fits the context).
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    /// Set by anyone (a cancel call, the caller's monitor) to end the job at the next step.
    pub cancel: Arc<AtomicBool>,
    pub sink: Box<dyn Sink>,
}

/// A snapshot of the scheduler's state (`info/1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedulerStats {
    pub running: usize,
    pub waiting: usize,
    /// Batched steps run, jobs finished (any outcome), the largest batch stepped so far.
    pub steps: u64,
    pub completed: u64,
    pub max_batch_seen: usize,
    pub options: SchedulerOptionsView,
}

/// The options, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedulerOptionsView {
    pub max_batch: usize,
    pub max_queue: usize,
    pub prefill_chunk: usize,
}

struct Shared {
    opts: SchedulerOptions,
    queue: Mutex<Queue>,
    wake: Condvar,
    running: AtomicUsize,
    steps: AtomicU64,
    completed: AtomicU64,
    max_batch_seen: AtomicUsize,
}

struct Queue {
    waiting: VecDeque<Job>,
    stopped: bool,
}

/// A model's scheduler; dropping it stops the engine thread after its current step (jobs still
/// there get `Cancelled`). The thread holds the model until then.
pub struct Scheduler {
    shared: Arc<Shared>,
    llm: Arc<Llm>,
}

impl Scheduler {
    pub fn start(llm: Arc<Llm>, opts: SchedulerOptions) -> Result<Self> {
        opts.validate()?;
        let shared = Arc::new(Shared {
            opts,
            queue: Mutex::new(Queue { waiting: VecDeque::new(), stopped: false }),
            wake: Condvar::new(),
            running: AtomicUsize::new(0),
            steps: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            max_batch_seen: AtomicUsize::new(0),
        });
        let (s, l) = (shared.clone(), llm.clone());
        std::thread::Builder::new()
            .name("viva_engine".into())
            .spawn(move || engine_thread(&s, &l))
            .map_err(|e| Error::Internal(format!("could not start the engine thread: {e}")))?;
        Ok(Scheduler { shared, llm })
    }

    pub fn llm(&self) -> &Arc<Llm> {
        &self.llm
    }

    /// Queues `job`. Errors here (bad options, a prompt that can never fit, a full queue) are
    /// returned at once and the sink is not called.
    pub fn submit(&self, job: Job) -> Result<()> {
        job.opts.validate()?;
        let needed = self.llm.check_prompt(&job.prompt, job.opts.max_new_tokens)?;
        if let Some(u) = self.llm.kv_blocks() {
            // could never be admitted, even alone
            let max = u.blocks * crate::kv::BLOCK;
            if needed > max {
                return Err(Error::ContextOverflow { needed, max });
            }
        }
        let mut q = self.shared.queue.lock().map_err(|_| poisoned())?;
        if q.stopped {
            return Err(Error::Cancelled);
        }
        if q.waiting.len() >= self.shared.opts.max_queue {
            return Err(Error::Overloaded);
        }
        q.waiting.try_reserve(1).map_err(|_| Error::OutOfMemory)?;
        q.waiting.push_back(job);
        drop(q);
        self.shared.wake.notify_one();
        Ok(())
    }

    pub fn stats(&self) -> SchedulerStats {
        let s = &self.shared;
        let o = s.opts;
        SchedulerStats {
            running: s.running.load(Ordering::Relaxed),
            waiting: s.queue.lock().map(|q| q.waiting.len()).unwrap_or(0),
            steps: s.steps.load(Ordering::Relaxed),
            completed: s.completed.load(Ordering::Relaxed),
            max_batch_seen: s.max_batch_seen.load(Ordering::Relaxed),
            options: SchedulerOptionsView { max_batch: o.max_batch, max_queue: o.max_queue, prefill_chunk: o.prefill_chunk },
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // no join: the last reference may be dropped on the engine thread itself (a sink
        // holding the model's handle)
        if let Ok(mut q) = self.shared.queue.lock() {
            q.stopped = true;
        }
        self.shared.wake.notify_all();
    }
}

fn poisoned() -> Error {
    Error::Internal("scheduler lock poisoned".into())
}

/// One job in the batch.
struct Running<'m> {
    job: Job,
    seq: Seq<'m>,
    gen: Generation,
    /// Prompt ids fed so far.
    fed: usize,
    /// The sampled id still to be stepped (decode phase).
    pending: Option<u32>,
    /// Logits are fresh: sample this step.
    ready: bool,
    /// Why it leaves the batch (`Ok(())` = finished normally).
    end: Option<Result<()>>,
}

fn engine_thread(shared: &Shared, llm: &Arc<Llm>) {
    let engine = llm.engine();
    let mut running: Vec<Running<'_>> = Vec::new();
    loop {
        let Some(admitted) = next_jobs(shared, running.len()) else {
            for r in running.drain(..) {
                finish(shared, llm, r, Err(Error::Cancelled));
            }
            return;
        };
        let engine = match &engine {
            Ok(e) => *e,
            Err(e) => {
                for job in admitted {
                    reject(shared, job, e.clone());
                }
                continue;
            }
        };
        admit(shared, engine, admitted, &mut running);
        // a panic in a step is a bug: the batch's jobs get an error, the thread goes on
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(shared, llm, engine, &mut running)));
        if stepped.is_err() {
            for r in running.iter_mut() {
                r.end.get_or_insert(Err(Error::Internal("engine step panicked".into())));
            }
        }
        let mut i = 0;
        while i < running.len() {
            if running[i].end.is_some() {
                let mut r = running.swap_remove(i);
                let end = r.end.take().unwrap_or(Ok(()));
                finish(shared, llm, r, end);
            } else {
                i += 1;
            }
        }
    }
}

/// Waits while nothing runs; takes the jobs that fit the batch. `None` once stopped.
fn next_jobs(shared: &Shared, running: usize) -> Option<Vec<Job>> {
    let mut q = shared.queue.lock().ok()?;
    while running == 0 && q.waiting.is_empty() && !q.stopped {
        q = shared.wake.wait(q).ok()?;
    }
    if q.stopped {
        for job in q.waiting.drain(..) {
            reject(shared, job, Error::Cancelled);
        }
        return None;
    }
    let n = shared.opts.max_batch.saturating_sub(running).min(q.waiting.len());
    Some(q.waiting.drain(..n).collect())
}

/// Gives each admitted job its sequence (KV cache). One that does not fit while others run
/// waits at the queue's head for memory to come back; alone, it fails.
fn admit<'m>(shared: &Shared, engine: Engine<'m>, jobs: Vec<Job>, running: &mut Vec<Running<'m>>) {
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        if job.cancel.load(Ordering::Relaxed) {
            reject(shared, job, Error::Cancelled);
            continue;
        }
        let made = Generation::new(job.prompt.len(), &job.opts)
            .and_then(|gen| Ok((gen, engine.new_seq_for(job.prompt.len() + job.opts.max_new_tokens, &job.prompt)?)));
        match made {
            Ok((gen, (seq, fed))) => {
                if running.try_reserve(1).is_err() {
                    reject(shared, job, Error::OutOfMemory);
                    continue;
                }
                // `fed`: prompt positions found cached (prefix sharing) are not computed again
                running.push(Running { job, seq, gen, fed, pending: None, ready: false, end: None });
                shared.running.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::OutOfMemory) if !running.is_empty() => {
                // back to the queue's head, in order, for a later step
                if let Ok(mut q) = shared.queue.lock() {
                    for j in std::iter::once(job).chain(jobs.by_ref()).collect::<Vec<_>>().into_iter().rev() {
                        q.waiting.push_front(j);
                    }
                }
                return;
            }
            Err(e) => reject(shared, job, e),
        }
    }
}

/// One step of the whole batch: prompt chunks, one batched decode, one sample per sequence.
fn step<'m>(shared: &Shared, llm: &Llm, engine: Engine<'m>, running: &mut [Running<'m>]) {
    for r in running.iter_mut() {
        if r.job.cancel.load(Ordering::Relaxed) {
            r.end = Some(Err(Error::Cancelled));
        }
    }
    // prompts, oldest first, within the step's budget
    let mut budget = shared.opts.prefill_chunk;
    for r in running.iter_mut().filter(|r| r.end.is_none() && r.fed < r.job.prompt.len()) {
        if budget == 0 {
            break;
        }
        let n = (r.job.prompt.len() - r.fed).min(budget);
        let t0 = Instant::now();
        match engine.prefill(&mut r.seq, &r.job.prompt[r.fed..r.fed + n]) {
            Ok(()) => {
                r.gen.prefill_ms += t0.elapsed().as_secs_f64() * 1e3;
                r.fed += n;
                budget -= n;
                r.ready = r.fed == r.job.prompt.len();
            }
            Err(e) => r.end = Some(Err(e)),
        }
    }
    // one batched step for every sequence with a sampled token
    let mut batch: Vec<(&mut Seq<'m>, u32)> = Vec::new();
    let mut who: Vec<usize> = Vec::new();
    for (i, r) in running.iter_mut().enumerate() {
        if r.end.is_none() {
            if let Some(id) = r.pending.take() {
                batch.push((&mut r.seq, id));
                who.push(i);
            }
        }
    }
    if !batch.is_empty() {
        shared.steps.fetch_add(1, Ordering::Relaxed);
        shared.max_batch_seen.fetch_max(batch.len(), Ordering::Relaxed);
        let res = engine.step(&mut batch);
        drop(batch);
        for &i in &who {
            match &res {
                Ok(()) => running[i].ready = true,
                Err(e) => running[i].end = Some(Err(e.clone())),
            }
        }
    }
    // sample, hand the text on, decide
    for r in running.iter_mut().filter(|r| r.end.is_none() && r.ready) {
        r.ready = false;
        if r.gen.is_done() {
            r.end = Some(Ok(()));
            continue;
        }
        let sampled = engine.sample(&mut r.seq, &mut r.gen.sampler).and_then(|id| {
            let chunk = r.gen.accept(&llm.tokenizer, &llm.config.eos_token_ids, id)?;
            r.job.sink.text(&chunk)?;
            Ok(id)
        });
        match sampled {
            Ok(_) if r.gen.is_done() => r.end = Some(Ok(())),
            Ok(id) => r.pending = Some(id),
            Err(e) => r.end = Some(Err(e)),
        }
    }
}

/// Ends a job that never ran.
fn reject(shared: &Shared, mut job: Job, e: Error) {
    shared.completed.fetch_add(1, Ordering::Relaxed);
    job.sink.done(Err(e));
}

/// Ends a job: the detokenizer's tail and the result to its sink; its sequence is dropped here.
fn finish(shared: &Shared, llm: &Llm, r: Running<'_>, end: Result<()>) {
    let Running { mut job, gen, seq, .. } = r;
    drop(seq);
    let result = end.and_then(|()| {
        let (tail, result) = gen.finish(&llm.tokenizer)?;
        if !tail.is_empty() {
            job.sink.text(&tail)?;
        }
        Ok(result)
    });
    // counted before the sink hears of it: a caller that then reads the stats sees its job gone
    shared.running.fetch_sub(1, Ordering::Relaxed);
    shared.completed.fetch_add(1, Ordering::Relaxed);
    job.sink.done(result);
}
