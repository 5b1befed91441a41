//! Paged KV storage: a model's pool of fixed-size blocks, and a sequence's block table.
//!
//! A block holds `BLOCK` consecutive positions of one sequence for every layer and KV head:
//! (layers, n_kv_heads, BLOCK, head_dim) floats for K and as many for V, so one (layer, head)'s
//! 16 positions are one contiguous 16 × head_dim run — what attention streams (the head-major
//! order that kept decode attention at the read bandwidth, kv_cache.rs's note). A sequence owns a
//! table of block ids; position t lives in block table[t / BLOCK] at row t % BLOCK. Blocks are
//! reserved when a sequence is made (its whole length: prompt + new tokens), so a running
//! sequence never runs out; when the pool cannot give them the caller gets `OutOfMemory` and the
//! scheduler keeps the request waiting until blocks come back.
pub mod rows;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Positions per block.
pub const BLOCK: usize = 16;

/// The dimensions a pool is laid out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvDims {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl KvDims {
    pub fn of(cfg: &ModelConfig) -> Self {
        KvDims { layers: cfg.num_hidden_layers, kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim }
    }

    /// Floats of K (or of V) in one block: (layers, kv_heads, BLOCK, head_dim); saturates
    /// (then no pool of that size can be reserved).
    pub fn block_floats(&self) -> usize {
        self.layers.saturating_mul(self.kv_heads).saturating_mul(BLOCK).saturating_mul(self.head_dim)
    }

    /// Bytes of K and V in one block.
    pub fn block_bytes(&self) -> usize {
        self.block_floats().saturating_mul(8)
    }
}

/// Blocks needed for `positions`.
pub fn blocks_for(positions: usize) -> usize {
    positions.div_ceil(BLOCK)
}

/// The block storage and its free list.
pub struct KvPool {
    pub dims: KvDims,
    /// (blocks, layers, kv_heads, BLOCK, head_dim)
    pub k: Vec<f32>,
    /// (blocks, layers, kv_heads, BLOCK, head_dim)
    pub v: Vec<f32>,
    free: Vec<u32>,
    blocks: usize,
}

impl KvPool {
    /// A pool of `blocks` blocks, zeroed lazily by the OS; `OutOfMemory` when it cannot be
    /// reserved (sized by an option or a request: never an abort).
    pub fn new(dims: KvDims, blocks: usize) -> Result<Self> {
        if blocks > u32::MAX as usize {
            return Err(Error::OutOfMemory);
        }
        let n = crate::alloc::checked_len(&[blocks, dims.block_floats()])?;
        let mut free = crate::alloc::try_with_capacity(blocks)?;
        // popped from the end: low ids first
        free.extend((0..blocks as u32).rev());
        Ok(KvPool { dims, k: crate::alloc::try_zeroed(n)?, v: crate::alloc::try_zeroed(n)?, free, blocks })
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// `n` blocks, or `OutOfMemory` (nothing taken) when fewer are free.
    fn take(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.free.len() {
            return Err(Error::OutOfMemory);
        }
        let mut out = crate::alloc::try_with_capacity(n)?;
        let at = self.free.len() - n;
        out.extend(self.free.drain(at..).rev());
        Ok(out)
    }

    fn give_back(&mut self, ids: &[u32]) {
        self.free.extend(ids.iter().rev());
    }
}

/// A pool shared by the sequences of one model (the scheduler's), or owned by one sequence.
#[derive(Clone)]
pub struct SharedPool(Arc<Mutex<KvPool>>);

impl SharedPool {
    pub fn new(pool: KvPool) -> Self {
        SharedPool(Arc::new(Mutex::new(pool)))
    }

    pub fn lock(&self) -> Result<MutexGuard<'_, KvPool>> {
        self.0.lock().map_err(|_| Error::Internal("kv pool lock poisoned".into()))
    }

    /// (blocks total, blocks free).
    pub fn usage(&self) -> (usize, usize) {
        self.0.lock().map(|p| (p.blocks(), p.free_blocks())).unwrap_or((0, 0))
    }
}

/// A sequence's KV storage: its block table in a pool, room for `max_seq` positions. The
/// blocks go back to the pool when it is dropped.
pub struct SeqKv {
    pool: SharedPool,
    /// Block ids; position t in table[t / BLOCK].
    table: Vec<u32>,
    pub max_seq: usize,
}

impl SeqKv {
    /// Room for `max_seq` positions from `pool`; `OutOfMemory` when it has too few free blocks.
    pub fn new(pool: &SharedPool, max_seq: usize) -> Result<Self> {
        let table = pool.lock()?.take(blocks_for(max_seq))?;
        Ok(SeqKv { pool: pool.clone(), table, max_seq })
    }

    /// Room for `max_seq` positions in a pool of its own, exactly that size.
    pub fn private(dims: KvDims, max_seq: usize) -> Result<Self> {
        Self::new(&SharedPool::new(KvPool::new(dims, blocks_for(max_seq))?), max_seq)
    }

    pub fn table(&self) -> &[u32] {
        &self.table
    }

    pub fn pool(&self) -> &SharedPool {
        &self.pool
    }

    /// The pool, locked for a forward pass, and this sequence's table; `Internal` when the pool
    /// is laid out for another model than `cfg`.
    pub fn lock(&self, cfg: &ModelConfig) -> Result<(MutexGuard<'_, KvPool>, &[u32])> {
        let pool = self.pool.lock()?;
        if pool.dims != KvDims::of(cfg) {
            return Err(Error::Internal("kv pool laid out for another model".into()));
        }
        Ok((pool, &self.table))
    }
}

impl Drop for SeqKv {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.0.lock() {
            p.give_back(&self.table);
        }
    }
}

/// Bytes to reserve for a model's pool when no budget is given: a quarter of the memory
/// available now (Linux `MemAvailable`; 1 GiB where it cannot be read), at most 16 GiB. The
/// pages are committed as blocks are first written, not at load.
pub fn default_budget() -> usize {
    let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok()).map(|kb| kb * 1024)
    });
    avail.map_or(1 << 30, |a| a / 4).min(16 << 30)
}

/// Blocks a byte budget buys (at least one).
pub fn blocks_in_budget(dims: KvDims, bytes: usize) -> usize {
    (bytes / dims.block_bytes().max(1)).max(1)
}
