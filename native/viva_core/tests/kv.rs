//! The paged KV pool: blocks taken and given back, tables checked against the pool, rows
//! written and read through tables; the scheduler waits for blocks and refuses what can never fit.
mod common;

use std::sync::Arc;

use viva_core::kv::rows::{put_row, LayerKv};
use viva_core::kv::{blocks_for, KvDims, KvPool, SeqKv, SharedPool, BLOCK};
use viva_core::llm::{GenerateOptions, Llm, LoadOptions};
use viva_core::scheduler::{Job, Scheduler, SchedulerOptions, Sink};
use viva_core::{Error, Result};

const DIMS: KvDims = KvDims { layers: 2, kv_heads: 3, head_dim: 4 };

#[test]
fn blocks_are_reserved_whole_and_come_back() {
    let pool = SharedPool::new(KvPool::new(DIMS, 10).unwrap());
    assert_eq!(blocks_for(0), 0);
    assert_eq!(blocks_for(16), 1);
    assert_eq!(blocks_for(17), 2);
    let a = SeqKv::new(&pool, 100).unwrap(); // 7 blocks
    assert_eq!(a.table().len(), 7);
    assert_eq!((pool.usage().blocks, pool.usage().free), (10, 3));
    assert_eq!(SeqKv::new(&pool, 49).err(), Some(Error::OutOfMemory)); // 4 > 3: nothing taken
    assert_eq!((pool.usage().blocks, pool.usage().free), (10, 3));
    let b = SeqKv::new(&pool, 48).unwrap();
    let mut ids: Vec<u32> = a.table().iter().chain(b.table()).copied().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "no block given twice");
    drop(a);
    assert_eq!((pool.usage().blocks, pool.usage().free), (10, 7));
    drop(b);
    assert_eq!((pool.usage().blocks, pool.usage().free), (10, 10));
    assert_eq!(KvPool::new(KvDims { layers: 1 << 40, kv_heads: 1 << 20, head_dim: 128 }, 1 << 20).err(), Some(Error::OutOfMemory));
}

#[test]
fn rows_go_through_the_table() {
    let pool = SharedPool::new(KvPool::new(DIMS, 6).unwrap());
    let _other = SeqKv::new(&pool, 20).unwrap(); // takes blocks 0, 1: this one gets others
    let s = SeqKv::new(&pool, 40).unwrap();
    let mut p = pool.lock().unwrap();
    let row = |l: usize, t: usize| -> Vec<f32> { (0..DIMS.kv_heads * DIMS.head_dim).map(|i| (l * 1000 + t * 10 + i) as f32).collect() };
    for l in 0..DIMS.layers {
        for t in 0..40 {
            assert!(put_row(&mut p.k, s.table(), DIMS, l, t, &row(l, t)));
        }
    }
    assert!(!put_row(&mut p.k, s.table(), DIMS, 0, 48, &row(0, 0)), "past the table");
    assert!(!put_row(&mut p.k, s.table(), DIMS, 2, 0, &row(0, 0)), "no such layer");
    assert!(!put_row(&mut p.k, s.table(), DIMS, 0, 0, &row(0, 0)[1..]), "short row");
    for l in 0..DIMS.layers {
        let kl = LayerKv::new(&p.k, s.table(), DIMS, l).unwrap();
        assert_eq!(kl.len(), 48);
        for h in 0..DIMS.kv_heads {
            for t in 0..40 {
                assert_eq!(kl.head(h).row(t), &row(l, t)[h * 4..(h + 1) * 4], "layer {l} head {h} pos {t}");
            }
            // one block's rows are head_dim floats apart
            let r = kl.head(h);
            for t in [0, 16, 32] {
                for j in 0..8 {
                    // SAFETY: t + j < 40 is inside the table; rows of one block are contiguous
                    assert_eq!(unsafe { *r.ptr(t).add(j * 4) }, r.row(t + j)[0]);
                }
            }
        }
    }
    assert!(LayerKv::new(&p.k, &[6], DIMS, 0).is_none(), "a block past the pool");
    assert!(LayerKv::new(&p.k, s.table(), DIMS, 2).is_none());
    assert_eq!(BLOCK, 16);
}

struct Collect(std::sync::mpsc::Sender<Result<Vec<u32>>>);
impl Sink for Collect {
    fn text(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    fn done(&mut self, r: Result<viva_core::llm::GenerateResult>) {
        let _ = self.0.send(r.map(|r| r.tokens));
    }
}

/// A pool with room for two sequences at a time: eight jobs still all finish, each with its
/// solo tokens; a job larger than the whole pool is refused with ContextOverflow.
#[test]
fn the_scheduler_waits_for_blocks() {
    let dims = {
        let cfg = viva_core::config::ModelConfig::for_checkpoint(&viva_core::safetensors::Checkpoint::open(&common::fixture("tiny_gqa")).unwrap()).unwrap();
        KvDims::of(&cfg)
    };
    let opts = LoadOptions { kv_cache_bytes: Some(8 * dims.block_bytes()), ..LoadOptions::default() };
    let llm = Arc::new(Llm::load(&common::fixture("tiny_gqa"), &opts).unwrap());
    assert_eq!(llm.kv_blocks().map(|u| (u.blocks, u.free)), Some((8, 8)));
    let g = GenerateOptions { max_new_tokens: 40, stop_on_eos: false, ..GenerateOptions::default() };
    let prompts: Vec<Vec<u32>> = (0..8u32).map(|i| vec![1 + i, 2 + i, 3 + i]).collect();
    // alone (a direct generate has a pool of its own)
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| llm.generate_ids(p, &g).unwrap().tokens).collect();
    let sched = Scheduler::start(llm.clone(), SchedulerOptions::default()).unwrap();
    let rxs: Vec<_> = prompts
        .iter()
        .map(|p| {
            let (tx, rx) = std::sync::mpsc::channel();
            sched.submit(Job { prompt: p.clone(), opts: g.clone(), cancel: Default::default(), sink: Box::new(Collect(tx)) }).unwrap();
            rx
        })
        .collect();
    for (want, rx) in alone.iter().zip(&rxs) {
        assert_eq!(&rx.recv_timeout(std::time::Duration::from_secs(120)).unwrap().unwrap(), want);
    }
    let st = sched.stats();
    assert!(st.max_batch_seen <= 2, "43 positions = 3 blocks each: at most 2 of 8 blocks' worth at once ({st:?})");
    assert_eq!(llm.kv_blocks().map(|u| (u.blocks, u.free)), Some((8, 8)));
    // a pool of 2 blocks (32 positions): 43 can never fit
    let small = Arc::new(Llm::load(&common::fixture("tiny_gqa"), &LoadOptions { kv_cache_bytes: Some(2 * dims.block_bytes()), ..LoadOptions::default() }).unwrap());
    let sched = Scheduler::start(small, SchedulerOptions::default()).unwrap();
    let (tx, _rx) = std::sync::mpsc::channel();
    let r = sched.submit(Job { prompt: vec![1, 2, 3], opts: g, cancel: Default::default(), sink: Box::new(Collect(tx)) });
    assert_eq!(r, Err(Error::ContextOverflow { needed: 43, max: 32 }));
}

fn wait_tokens(rx: &std::sync::mpsc::Receiver<Result<Vec<u32>>>) -> Vec<u32> {
    rx.recv_timeout(std::time::Duration::from_secs(120)).unwrap().unwrap()
}

fn submit(sched: &Scheduler, prompt: &[u32], g: &GenerateOptions) -> std::sync::mpsc::Receiver<Result<Vec<u32>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    sched.submit(Job { prompt: prompt.to_vec(), opts: g.clone(), cancel: Default::default(), sink: Box::new(Collect(tx)) }).unwrap();
    rx
}

/// A request whose prompt starts like an earlier one's takes the cached blocks of that prefix
/// (whole blocks of prompt-pass positions, before its last id) and gets the tokens a model
/// without any cache computes; cached blocks come back to the pool when room is needed.
#[test]
fn a_cached_prefix_is_reused_with_the_same_tokens() {
    let load = || Arc::new(Llm::load(&common::fixture("tiny_gqa"), &LoadOptions::default()).unwrap());
    let (llm, fresh) = (load(), load());
    let vocab = llm.config.vocab_size as u32;
    let g = GenerateOptions { max_new_tokens: 12, stop_on_eos: false, ..GenerateOptions::default() };
    let system: Vec<u32> = (0..50).map(|i| (i * 7 + 3) % vocab).collect();
    let a: Vec<u32> = system.iter().copied().chain([5, 6, 7]).collect();
    let b: Vec<u32> = system.iter().copied().chain([9, 10]).collect();
    let other: Vec<u32> = (0..40).map(|i| (i * 11 + 1) % vocab).collect();
    let sched = Scheduler::start(llm.clone(), SchedulerOptions::default()).unwrap();
    assert_eq!(wait_tokens(&submit(&sched, &a, &g)), fresh.generate_ids(&a, &g).unwrap().tokens);
    assert_eq!(llm.kv_blocks().unwrap().reused_tokens, 0);
    assert!(llm.kv_blocks().unwrap().cached >= 3, "a's three whole prompt blocks");
    assert_eq!(wait_tokens(&submit(&sched, &b, &g)), fresh.generate_ids(&b, &g).unwrap().tokens);
    assert_eq!(llm.kv_blocks().unwrap().reused_tokens, 48, "b found 3 blocks of a's prefix");
    assert_eq!(wait_tokens(&submit(&sched, &other, &g)), fresh.generate_ids(&other, &g).unwrap().tokens);
    assert_eq!(llm.kv_blocks().unwrap().reused_tokens, 48);
    // the same prompt again: all but its last block
    assert_eq!(wait_tokens(&submit(&sched, &b, &g)), fresh.generate_ids(&b, &g).unwrap().tokens);
    assert_eq!(llm.kv_blocks().unwrap().reused_tokens, 96);
    let u = llm.kv_blocks().unwrap();
    assert_eq!(u.free, u.blocks, "cached blocks are idle, ready to be taken");
}

/// Two sequences share a prefix's blocks; one rewrites a shared position (the low-level API may
/// step back): it gets a copy, and the other's next logits stay those of a fresh sequence.
#[test]
fn a_shared_block_is_copied_before_it_is_written() {
    let llm = Llm::load(&common::fixture("tiny_gqa"), &LoadOptions::default()).unwrap();
    let model = llm.model().unwrap();
    let pool = model.kv_pool.get().unwrap();
    let p: Vec<u32> = (0..40).map(|i| (i * 13 + 2) % 100).collect();
    let (mut s1, f1) = viva_core::backend::cpu::state::DecodeState::with_prefix(model, 64, pool, &p).unwrap();
    assert_eq!(f1, 0);
    s1.prefill(model, &p).unwrap();
    let q: Vec<u32> = p.iter().copied().chain([77]).collect();
    let (mut s2, f2) = viva_core::backend::cpu::state::DecodeState::with_prefix(model, 64, pool, &q).unwrap();
    assert_eq!(f2, 32);
    s2.prefill(model, &q[32..]).unwrap();
    s2.prefill_at(model, &[1, 2, 3], 10).unwrap(); // rewrites positions 10..13 (a shared block)
    let mut s3 = viva_core::backend::cpu::state::DecodeState::new(model, 64).unwrap();
    s3.prefill(model, &p).unwrap();
    let (a, b) = (s1.step_at(model, 42, 40).unwrap().to_vec(), s3.step_at(model, 42, 40).unwrap().to_vec());
    assert_eq!(a, b);
    // and the cache still holds p's original blocks
    drop((s1, s2));
    let (_s4, f4) = viva_core::backend::cpu::state::DecodeState::with_prefix(model, 64, pool, &q).unwrap();
    assert_eq!(f4, 32);
}
