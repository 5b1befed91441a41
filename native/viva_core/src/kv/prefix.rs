//! Prefix sharing: full blocks are known by a hash of every token up to their end (a chain:
//! each block's hash covers its parent's), so a new sequence whose prompt starts with the same
//! tokens (a system prompt, a chat history) takes those blocks instead of computing them again.
//! Blocks are reference-counted; one nobody uses any more stays cached, in least-recently-used
//! order, until a new sequence needs the room. A shared block is never written: a write to it
//! copies it first (`KvPool::make_exclusive`).
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use super::BLOCK;

/// The hash of a block of `tokens` after a prefix whose hash is `parent` (0 for the first).
/// SipHash with fixed keys: the same on every run.
pub fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// What a registered block holds (its tokens are compared on a hit, so a hash collision
/// can only miss, never share the wrong block).
struct Key {
    hash: u64,
    tokens: [u32; BLOCK],
}

#[derive(Default)]
pub struct PrefixCache {
    by_hash: HashMap<u64, u32>,
    /// Per block: its key while registered.
    keys: Vec<Option<Box<Key>>>,
    /// Unreferenced registered blocks by the tick they were released: oldest first.
    lru: BTreeMap<u64, u32>,
    /// Per block: its tick in `lru` (0: not there).
    lru_tick: Vec<u64>,
    tick: u64,
    /// Positions a new sequence found cached, over the pool's life.
    pub reused: u64,
}

impl PrefixCache {
    pub fn new(blocks: usize) -> crate::error::Result<Self> {
        let mut keys = crate::alloc::try_with_capacity(blocks)?;
        keys.resize_with(blocks, || None);
        Ok(PrefixCache { keys, lru_tick: crate::alloc::try_zeroed(blocks)?, ..Default::default() })
    }

    /// Registered blocks (in use or cached).
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Unreferenced cached blocks (evictable).
    pub fn idle(&self) -> usize {
        self.lru.len()
    }

    /// The block registered under `hash` holding `tokens`.
    pub fn find(&self, hash: u64, tokens: &[u32]) -> Option<u32> {
        let b = *self.by_hash.get(&hash)?;
        let key = self.keys.get(b as usize)?.as_ref()?;
        (key.tokens[..] == *tokens).then_some(b)
    }

    /// Registers block `b` (full, holding `tokens`) under `hash`, unless another block already is.
    pub fn register(&mut self, b: u32, hash: u64, tokens: &[u32]) {
        if self.by_hash.contains_key(&hash) || tokens.len() != BLOCK || self.keys.get(b as usize).is_none_or(|k| k.is_some()) {
            return;
        }
        let mut t = [0u32; BLOCK];
        t.copy_from_slice(tokens);
        self.by_hash.insert(hash, b);
        self.keys[b as usize] = Some(Box::new(Key { hash, tokens: t }));
    }

    /// Forgets block `b`'s registration (its contents are about to change or it is evicted).
    pub fn unregister(&mut self, b: u32) {
        if let Some(key) = self.keys.get_mut(b as usize).and_then(Option::take) {
            if self.by_hash.get(&key.hash) == Some(&b) {
                self.by_hash.remove(&key.hash);
            }
        }
        self.leave_lru(b);
    }

    pub fn is_registered(&self, b: u32) -> bool {
        self.keys.get(b as usize).is_some_and(Option::is_some)
    }

    /// A released registered block waits in the LRU.
    pub fn enter_lru(&mut self, b: u32) {
        self.tick += 1;
        self.lru.insert(self.tick, b);
        if let Some(t) = self.lru_tick.get_mut(b as usize) {
            *t = self.tick;
        }
    }

    /// A cached block taken again (or evicted) leaves the LRU.
    pub fn leave_lru(&mut self, b: u32) {
        if let Some(t) = self.lru_tick.get_mut(b as usize) {
            if *t != 0 {
                self.lru.remove(t);
                *t = 0;
            }
        }
    }

    /// The least recently released cached block, unregistered (its room is needed).
    pub fn evict(&mut self) -> Option<u32> {
        let (_, b) = self.lru.pop_first()?;
        if let Some(t) = self.lru_tick.get_mut(b as usize) {
            *t = 0;
        }
        self.unregister(b);
        Some(b)
    }
}
