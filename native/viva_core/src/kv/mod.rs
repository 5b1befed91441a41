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
pub mod prefix;
pub mod rows;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use prefix::PrefixCache;

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
    /// Per block: the sequences using it.
    refs: Vec<u32>,
    /// Prefix sharing, for a model's shared pool (a sequence's own pool has none).
    pub prefix: Option<PrefixCache>,
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
        Ok(KvPool { dims, k: crate::alloc::try_zeroed(n)?, v: crate::alloc::try_zeroed(n)?, free, blocks, refs: crate::alloc::try_zeroed(blocks)?, prefix: None })
    }

    /// This pool with prefix sharing on.
    pub fn with_prefix_cache(mut self) -> Result<Self> {
        self.prefix = Some(PrefixCache::new(self.blocks)?);
        Ok(self)
    }

    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Blocks a new sequence can have: free ones and cached ones nobody uses.
    pub fn free_blocks(&self) -> usize {
        self.free.len() + self.prefix.as_ref().map_or(0, |p| p.idle())
    }

    /// Blocks registered for prefix sharing (in use or cached).
    pub fn cached_blocks(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.len())
    }

    /// `n` blocks (cached idle ones evicted, oldest first, when the free ones are too few), or
    /// `OutOfMemory` with nothing taken.
    fn take(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.free_blocks() {
            return Err(Error::OutOfMemory);
        }
        let mut out = crate::alloc::try_with_capacity(n)?;
        while self.free.len() < n {
            match self.prefix.as_mut().and_then(PrefixCache::evict) {
                Some(b) => self.free.push(b),
                None => return Err(Error::OutOfMemory),
            }
        }
        let at = self.free.len() - n;
        out.extend(self.free.drain(at..).rev());
        for &b in &out {
            self.refs[b as usize] = 1;
        }
        Ok(out)
    }

    /// One user fewer for each block; a block nobody uses is cached (registered) or free.
    fn release(&mut self, ids: &[u32]) {
        for &b in ids.iter().rev() {
            let r = &mut self.refs[b as usize];
            *r = r.saturating_sub(1);
            if *r == 0 {
                match self.prefix.as_mut() {
                    Some(p) if p.is_registered(b) => p.enter_lru(b),
                    _ => self.free.push(b),
                }
            }
        }
    }

    /// The cached block holding `tokens` after the prefix hashed `hash`, now used once more.
    fn acquire(&mut self, hash: u64, tokens: &[u32]) -> Option<u32> {
        let p = self.prefix.as_mut()?;
        let b = p.find(hash, tokens)?;
        if self.refs[b as usize] == 0 {
            p.leave_lru(b);
        }
        self.refs[b as usize] += 1;
        Some(b)
    }

    /// Block `b` made safe to write for its one user: shared → a copy (copy-on-write); only
    /// ours but registered → unregistered (its tokens are about to change).
    fn make_exclusive(&mut self, b: u32) -> Result<u32> {
        if self.refs[b as usize] <= 1 {
            if let Some(p) = self.prefix.as_mut() {
                p.unregister(b);
            }
            return Ok(b);
        }
        let nb = self.take(1)?[0];
        let bf = self.dims.block_floats();
        let (src, dst) = (b as usize * bf, nb as usize * bf);
        self.k.copy_within(src..src + bf, dst);
        self.v.copy_within(src..src + bf, dst);
        self.refs[b as usize] -= 1;
        Ok(nb)
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

    /// Whether `other` is this same pool.
    pub fn same(&self, other: &SharedPool) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// (blocks total, blocks free or cached and idle, blocks registered for prefix sharing,
    /// prompt positions found cached so far).
    pub fn usage(&self) -> KvUsage {
        self.0.lock().map_or(KvUsage::default(), |p| KvUsage {
            blocks: p.blocks(),
            free: p.free_blocks(),
            cached: p.cached_blocks(),
            reused_tokens: p.prefix.as_ref().map_or(0, |c| c.reused),
        })
    }
}

/// A pool's state, for `info/1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    pub blocks: usize,
    pub free: usize,
    pub cached: usize,
    pub reused_tokens: u64,
}

/// A sequence's KV storage: its block table in a pool, room for `max_seq` positions. The
/// blocks go back to the pool when it is dropped.
pub struct SeqKv {
    pool: SharedPool,
    /// Block ids; position t in table[t / BLOCK].
    table: Vec<u32>,
    pub max_seq: usize,
    /// The ids at positions 0..len, as written (prefix sharing hashes them).
    tokens: Vec<u32>,
    /// Chain hashes of the full blocks registered or found so far.
    hashes: Vec<u64>,
    /// Positions 0..prefilled were all written by the prompt pass (or found cached): only such
    /// blocks are shared. A decode step computes its K/V in another summation order than the
    /// prompt pass, so a block it wrote, reused as a later prompt's prefix, could change that
    /// request's tokens from the ones it gets alone.
    prefilled: usize,
}

impl SeqKv {
    /// Room for `max_seq` positions from `pool`; `OutOfMemory` when it has too few free blocks.
    pub fn new(pool: &SharedPool, max_seq: usize) -> Result<Self> {
        Ok(Self::with_prefix(pool, max_seq, &[])?.0)
    }

    /// `new`, taking the cached blocks that hold a prefix of `prompt` (whole blocks before its
    /// last id, whose logits the caller computes); returns the positions found filled.
    pub fn with_prefix(pool: &SharedPool, max_seq: usize, prompt: &[u32]) -> Result<(Self, usize)> {
        let mut tokens = crate::alloc::try_with_capacity(max_seq)?;
        let mut hashes = Vec::new();
        let need = blocks_for(max_seq);
        let mut p = pool.lock()?;
        let mut table = Vec::new();
        let limit = (prompt.len().saturating_sub(1) / BLOCK).min(need).min(max_seq / BLOCK);
        let mut parent = 0;
        for i in 0..limit {
            let toks = &prompt[i * BLOCK..(i + 1) * BLOCK];
            let h = prefix::chain_hash(parent, toks);
            match p.acquire(h, toks) {
                Some(b) => {
                    table.push(b);
                    hashes.push(h);
                    parent = h;
                }
                None => break,
            }
        }
        match p.take(need - table.len()) {
            Ok(rest) => table.extend(rest),
            Err(e) => {
                p.release(&table);
                return Err(e);
            }
        }
        let found = hashes.len() * BLOCK;
        if let Some(c) = p.prefix.as_mut() {
            c.reused += found as u64;
        }
        tokens.extend_from_slice(&prompt[..found]);
        drop(p);
        Ok((SeqKv { pool: pool.clone(), table, max_seq, tokens, hashes, prefilled: found }, found))
    }

    /// Before positions pos0..pos0+m are written: the blocks they fall in become this
    /// sequence's own (copied if shared), and what was known past pos0 is forgotten.
    pub fn prepare_write(&mut self, pool: &mut KvPool, pos0: usize, m: usize) -> Result<()> {
        if m == 0 {
            return Ok(());
        }
        let last = (pos0 + m - 1) / BLOCK;
        if last >= self.table.len() {
            return Err(Error::ContextOverflow { needed: pos0 + m, max: self.max_seq });
        }
        for bi in pos0 / BLOCK..=last {
            self.table[bi] = pool.make_exclusive(self.table[bi])?;
        }
        self.tokens.truncate(pos0);
        self.hashes.truncate(pos0 / BLOCK);
        self.prefilled = self.prefilled.min(pos0);
        Ok(())
    }

    /// After `ids` were written at pos0.. (by the prompt pass when `prompt_pass`): blocks now
    /// full of prompt-pass positions are registered for sharing.
    pub fn wrote(&mut self, pool: &mut KvPool, pos0: usize, ids: &[u32], prompt_pass: bool) {
        if self.tokens.len() != pos0 || self.tokens.len() + ids.len() > self.tokens.capacity() {
            return; // positions before pos0 unknown: nothing of this sequence is registered
        }
        self.tokens.extend_from_slice(ids);
        if prompt_pass && self.prefilled == pos0 {
            self.prefilled += ids.len();
        }
        let Some(c) = pool.prefix.as_mut() else { return };
        while self.hashes.len() < self.tokens.len().min(self.prefilled) / BLOCK {
            let i = self.hashes.len();
            let parent = if i == 0 { 0 } else { self.hashes[i - 1] };
            let toks = &self.tokens[i * BLOCK..(i + 1) * BLOCK];
            let h = prefix::chain_hash(parent, toks);
            c.register(self.table[i], h, toks);
            self.hashes.push(h);
        }
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

    /// `Internal` when `pool` is laid out for another model than `cfg`.
    pub fn check_dims(pool: &KvPool, cfg: &ModelConfig) -> Result<()> {
        if pool.dims != KvDims::of(cfg) {
            return Err(Error::Internal("kv pool laid out for another model".into()));
        }
        Ok(())
    }
}

impl Drop for SeqKv {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.0.lock() {
            p.release(&self.table);
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
