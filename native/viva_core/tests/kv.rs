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
    assert_eq!(pool.usage(), (10, 3));
    assert_eq!(SeqKv::new(&pool, 49).err(), Some(Error::OutOfMemory)); // 4 > 3: nothing taken
    assert_eq!(pool.usage(), (10, 3));
    let b = SeqKv::new(&pool, 48).unwrap();
    let mut ids: Vec<u32> = a.table().iter().chain(b.table()).copied().collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "no block given twice");
    drop(a);
    assert_eq!(pool.usage(), (10, 7));
    drop(b);
    assert_eq!(pool.usage(), (10, 10));
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
    assert_eq!(llm.kv_blocks(), Some((8, 8)));
    let g = GenerateOptions { max_new_tokens: 40, stop_on_eos: false, ..GenerateOptions::default() };
    let prompts: Vec<Vec<u32>> = (0..8u32).map(|i| vec![1 + i, 2 + i, 3 + i]).collect();
    // alone first: a direct generate takes its blocks from the same pool
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
    assert_eq!(llm.kv_blocks(), Some((8, 8)));
    // a pool of 2 blocks (32 positions): 43 can never fit
    let small = Arc::new(Llm::load(&common::fixture("tiny_gqa"), &LoadOptions { kv_cache_bytes: Some(2 * dims.block_bytes()), ..LoadOptions::default() }).unwrap());
    let sched = Scheduler::start(small, SchedulerOptions::default()).unwrap();
    let (tx, _rx) = std::sync::mpsc::channel();
    let r = sched.submit(Job { prompt: vec![1, 2, 3], opts: g, cancel: Default::default(), sink: Box::new(Collect(tx)) });
    assert_eq!(r, Err(Error::ContextOverflow { needed: 43, max: 32 }));
}
