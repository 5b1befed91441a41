//! The scheduler: a crowd of jobs gives each the tokens it gets alone (greedy and seeded
//! sampling), chunked prompts give the tokens of a whole prefill, cancel and refusing sinks end a
//! job, a full queue says Overloaded, bad jobs fail at submit.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use common::fixture;
use viva_core::llm::{GenerateOptions, GenerateResult, Llm, LoadOptions};
use viva_core::scheduler::{Job, Scheduler, SchedulerOptions, Sink};
use viva_core::weights::WeightFormat;
use viva_core::{Error, Result};

/// Sends every event to a channel; refuses text after `refuse_after` chunks (a gone caller).
struct ChanSink {
    tx: Sender<Event>,
    refuse_after: Option<usize>,
    seen: usize,
}

#[derive(Debug)]
enum Event {
    Text(String),
    Done(Result<GenerateResult>),
}

impl Sink for ChanSink {
    fn text(&mut self, chunk: &str) -> Result<()> {
        self.seen += 1;
        if self.refuse_after.is_some_and(|n| self.seen > n) {
            return Err(Error::Cancelled);
        }
        let _ = self.tx.send(Event::Text(chunk.to_string()));
        Ok(())
    }
    fn done(&mut self, result: Result<GenerateResult>) {
        let _ = self.tx.send(Event::Done(result));
    }
}

fn job(prompt: Vec<u32>, opts: GenerateOptions, refuse_after: Option<usize>) -> (Job, Receiver<Event>, Arc<AtomicBool>) {
    let (tx, rx) = channel();
    let cancel = Arc::new(AtomicBool::new(false));
    (Job { prompt, opts, cancel: cancel.clone(), sink: Box::new(ChanSink { tx, refuse_after, seen: 0 }) }, rx, cancel)
}

/// The result, and the text chunks concatenated.
fn wait(rx: &Receiver<Event>) -> (Result<GenerateResult>, String) {
    let mut text = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)).expect("the job ends") {
            Event::Text(t) => text.push_str(&t),
            Event::Done(r) => return (r, text),
        }
    }
}

fn load(name: &str, weights: WeightFormat) -> Arc<Llm> {
    Arc::new(Llm::load(&fixture(name), &LoadOptions { weights, ..LoadOptions::default() }).expect("fixture loads"))
}

fn prompts(n: usize, vocab: u32) -> Vec<Vec<u32>> {
    // different lengths and contents; seeded so every run is the same
    (0..n).map(|i| (0..(3 + (i * 7) % 40)).map(|j| ((i * 131 + j * 17 + 1) as u32) % vocab).collect()).collect()
}

fn opts(i: usize, n: usize) -> GenerateOptions {
    if i % 3 == 2 {
        GenerateOptions { max_new_tokens: n, temperature: 0.8, top_k: Some(20), top_p: 0.9, seed: i as u64, stop_on_eos: false }
    } else {
        GenerateOptions { max_new_tokens: n + i % 5, stop_on_eos: i % 2 == 0, ..GenerateOptions::default() }
    }
}

/// 24 jobs at once (greedy, EOS-stopped and seeded sampling; small prefill chunks so prompts
/// interleave with decoding) give each job the tokens and text it gets from `generate` alone.
#[test]
fn a_crowd_gets_what_each_gets_alone() {
    for (name, w) in [("tiny_gqa", WeightFormat::Native), ("tiny_tied_llama3", WeightFormat::default())] {
        let llm = load(name, w);
        let vocab = llm.config.vocab_size as u32;
        let ps = prompts(24, vocab);
        let alone: Vec<GenerateResult> = ps.iter().enumerate().map(|(i, p)| llm.generate_ids(p, &opts(i, 12)).unwrap()).collect();
        let sched = Scheduler::start(llm.clone(), SchedulerOptions { max_batch: 16, max_queue: 64, prefill_chunk: 7 }).unwrap();
        let rxs: Vec<_> = ps
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (j, rx, _) = job(p.clone(), opts(i, 12), None);
                sched.submit(j).unwrap();
                rx
            })
            .collect();
        for (i, rx) in rxs.iter().enumerate() {
            let (r, text) = wait(rx);
            let r = r.unwrap();
            assert_eq!(r.tokens, alone[i].tokens, "{name} job {i}");
            assert_eq!(r.text, alone[i].text, "{name} job {i}");
            assert_eq!(text, r.text, "{name} job {i}: streamed chunks = text");
            assert_eq!((r.prompt_tokens, r.total_tokens), (alone[i].prompt_tokens, alone[i].total_tokens));
        }
        let st = sched.stats();
        assert_eq!((st.running, st.waiting, st.completed), (0, 0, 24));
        assert!(st.max_batch_seen > 1 && st.max_batch_seen <= 16, "{st:?}");
    }
}

/// Where the prompt's chunk boundaries fall does not change the tokens.
#[test]
fn prompt_chunks_do_not_change_tokens() {
    let llm = load("tiny_gqa", WeightFormat::Native);
    let p: Vec<u32> = (0..60).map(|i| (i * 37 + 5) % llm.config.vocab_size as u32).collect();
    let alone = llm.generate_ids(&p, &opts(0, 10)).unwrap();
    for chunk in [1, 5, 16, 59, 60, 512] {
        let sched = Scheduler::start(llm.clone(), SchedulerOptions { prefill_chunk: chunk, ..SchedulerOptions::default() }).unwrap();
        let (j, rx, _) = job(p.clone(), opts(0, 10), None);
        sched.submit(j).unwrap();
        assert_eq!(wait(&rx).0.unwrap().tokens, alone.tokens, "prefill_chunk {chunk}");
    }
}

/// A cancelled job and one whose sink refuses text end with Cancelled; the others finish.
#[test]
fn cancel_and_a_gone_caller_end_only_their_job() {
    let llm = load("tiny_gqa", WeightFormat::default());
    let sched = Scheduler::start(llm.clone(), SchedulerOptions::default()).unwrap();
    let long = GenerateOptions { max_new_tokens: 100, stop_on_eos: false, ..GenerateOptions::default() };
    let (a, rx_a, cancel_a) = job(vec![1, 2, 3], long.clone(), None);
    let (b, rx_b, _) = job(vec![4, 5, 6], long.clone(), Some(3));
    let (c, rx_c, _) = job(vec![7, 8, 9], long.clone(), None);
    for j in [a, b, c] {
        sched.submit(j).unwrap();
    }
    cancel_a.store(true, Ordering::Relaxed);
    assert_eq!(wait(&rx_a).0.unwrap_err(), Error::Cancelled);
    assert_eq!(wait(&rx_b).0.unwrap_err(), Error::Cancelled);
    assert_eq!(wait(&rx_c).0.unwrap().tokens.len(), 100);
    assert_eq!(sched.stats().running, 0);
}

/// Bad jobs fail at submit; past `max_queue` waiting jobs: Overloaded.
#[test]
fn submit_validates_and_bounds_the_queue() {
    let llm = load("tiny_gqa", WeightFormat::default()); // max_position_embeddings 128
    let sched = Scheduler::start(llm.clone(), SchedulerOptions { max_batch: 1, max_queue: 2, prefill_chunk: 512 }).unwrap();
    let g = |n| GenerateOptions { max_new_tokens: n, stop_on_eos: false, ..GenerateOptions::default() };
    assert_eq!(sched.submit(job(vec![], g(1), None).0), Err(Error::EmptyPrompt));
    assert_eq!(sched.submit(job(vec![5; 100], g(29), None).0), Err(Error::ContextOverflow { needed: 129, max: 128 }));
    assert!(matches!(sched.submit(job(vec![1_000_000], g(1), None).0), Err(Error::TokenOutOfRange { .. })));
    assert!(matches!(sched.submit(job(vec![1], GenerateOptions { top_p: 0.0, ..g(1) }, None).0), Err(Error::InvalidOption { .. })));
    // one runs (max_batch 1), two wait, the next is refused
    let mut rxs = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        let (j, rx, _) = job(vec![1, 2], g(100), None);
        match sched.submit(j) {
            Ok(()) => rxs.push(rx),
            Err(Error::Overloaded) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    // 2 waiting, plus the one the engine took from the queue if it did so in time
    assert!((2..=3).contains(&rxs.len()) && refused == 6 - rxs.len(), "{refused} refused, {} queued", rxs.len());
    for rx in &rxs {
        assert_eq!(wait(rx).0.unwrap().tokens.len(), 100);
    }
    assert!(matches!(Scheduler::start(llm, SchedulerOptions { max_batch: 0, ..SchedulerOptions::default() }), Err(Error::InvalidOption { .. })));
}

/// Dropping the scheduler ends waiting jobs with Cancelled; nothing hangs.
#[test]
fn dropping_the_scheduler_cancels_what_is_left() {
    let llm = load("tiny_gqa", WeightFormat::default());
    let sched = Scheduler::start(llm, SchedulerOptions { max_batch: 1, ..SchedulerOptions::default() }).unwrap();
    let g = GenerateOptions { max_new_tokens: 120, stop_on_eos: false, ..GenerateOptions::default() };
    let rxs: Vec<_> = (0..4)
        .map(|_| {
            let (j, rx, _) = job(vec![1, 2], g.clone(), None);
            sched.submit(j).unwrap();
            rx
        })
        .collect();
    drop(sched);
    for rx in &rxs {
        let r = wait(rx).0;
        assert!(matches!(r, Err(Error::Cancelled) | Ok(_)), "{r:?}");
    }
}
