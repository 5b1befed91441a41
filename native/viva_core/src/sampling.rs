//! Token sampling: greedy argmax, or HF's order temperature → top-k → top-p → softmax →
//! multinomial, drawn from a seeded ChaCha20 stream so that a seed gives the same tokens on
//! every machine.
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// `top_k` infinity means this many candidates at most (the GPU top-k is bounded the same way).
pub const MAX_TOP_K: usize = 256;

pub struct Sampler {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    rng: ChaCha20Rng,
    /// (top_k) candidates: (id, logit then probability)
    cand: Vec<(u32, f32)>,
}

/// Index of the largest value; the lowest index wins a tie (as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// `top_k`: None = infinity (MAX_TOP_K candidates). Options are validated by the caller.
    pub fn new(temperature: f32, top_k: Option<usize>, top_p: f32, seed: u64) -> Self {
        let top_k = top_k.unwrap_or(MAX_TOP_K).clamp(1, MAX_TOP_K);
        Sampler { temperature, top_k, top_p, rng: ChaCha20Rng::seed_from_u64(seed), cand: Vec::with_capacity(MAX_TOP_K + 1) }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() || self.top_k == 1 {
            return argmax(logits);
        }
        self.top_k_candidates(logits);
        if self.cand.is_empty() {
            return argmax(logits); // every logit NaN: nothing to sample from
        }
        self.draw()
    }

    /// The top_k this sampler keeps (1..=MAX_TOP_K).
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// `sample` from candidates another backend selected (the GPU's top-k): the largest
    /// logits as (id, logit), sorted descending, lower id first on ties, no NaN — exactly what
    /// `top_k_into` gives, so the draw is the same. None when `cand` is empty.
    pub fn sample_candidates(&mut self, cand: &[(u32, f32)]) -> Option<u32> {
        let first = cand.first()?;
        if self.is_greedy() || self.top_k == 1 {
            return Some(first.0);
        }
        self.cand.clear();
        self.cand.extend_from_slice(&cand[..cand.len().min(self.top_k)]);
        Some(self.draw())
    }

    /// temperature → softmax → top-p → multinomial over `self.cand` (non-empty, sorted).
    fn draw(&mut self) -> u32 {
        // temperature, then softmax over the k survivors (sorted descending). In f64 and
        // max-subtracted before scaling, so a tiny temperature cannot overflow to inf − inf.
        let inv_t = 1.0 / self.temperature as f64;
        let max = self.cand[0].1;
        let mut sum = 0.0f64;
        for c in self.cand.iter_mut() {
            let p = ((c.1 - max) as f64 * inv_t).exp();
            c.1 = p as f32;
            sum += p;
        }
        // top-p: the smallest prefix whose probability mass reaches top_p (at least one token)
        let mut keep = self.cand.len();
        if self.top_p < 1.0 {
            let mut cum = 0.0f64;
            for (i, c) in self.cand.iter().enumerate() {
                cum += c.1 as f64 / sum;
                if cum >= self.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &self.cand[..keep];
        let total: f64 = kept.iter().map(|c| c.1 as f64).sum();
        let u = uniform(&mut self.rng) * total;
        let mut acc = 0.0f64;
        for c in kept {
            acc += c.1 as f64;
            if u < acc {
                return c.0;
            }
        }
        kept[kept.len() - 1].0
    }

    fn top_k_candidates(&mut self, logits: &[f32]) {
        top_k_into(logits, self.top_k, &mut self.cand);
    }
}

/// The `k` largest (id, logit) pairs into `cand`, sorted by logit descending, lower id first on
/// ties (NaN logits never enter). One insertion pass: k ≤ 256 keeps it cheap.
pub fn top_k_into(logits: &[f32], k: usize, cand: &mut Vec<(u32, f32)>) {
    let k = k.min(logits.len());
    cand.clear();
    let better = |a: &(u32, f32), b: &(u32, f32)| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0);
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let c = (i as u32, v);
        if cand.len() == k {
            if !better(&c, &cand[k - 1]) {
                continue;
            }
            cand.pop();
        }
        let at = cand.partition_point(|x| better(x, &c));
        cand.insert(at, c);
    }
}

/// Uniform in [0, 1) from the top 53 bits of one u64: portable and exact.
fn uniform(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
