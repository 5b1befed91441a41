//! The backend interface and backend selection: where a model's forward pass runs.
//!
//! `Backend` is what the facade (llm.rs) calls: make a sequence state, prefill it, step a batch
//! of (sequence, token) pairs, read logits / argmax / top-k, sample. `cpu` implements it over
//! `DecodeState`, `cuda` over `CudaSession`; `Engine` is the one the facade holds and dispatches
//! to them.
//!
//! `Device::Auto` takes CUDA when a usable GPU is found and the CPU otherwise; `Device::Cuda`
//! without one is `Error::CudaUnavailable`. Probing never panics: a missing libcuda, a broken
//! driver or no device all become a reason in `BackendInfo`.
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::error::{Error, Result};
use crate::backend::cpu::model::Model;
use crate::sampling::Sampler;
use crate::backend::cpu::state::DecodeState;

/// What a backend does for one model. Implemented by a borrowed model (`&Model` in cpu/,
/// `&CudaModel` in cuda/seq.rs), so a sequence may borrow the weights it runs on.
///
/// A trait with an associated sequence type, dispatched through the `Engine` enum rather than a
/// `dyn Backend`: a batched step hands each backend its own concrete sequence states (their KV
/// layout), which a trait object could reach only by downcasting; the set of backends is small
/// and closed, and the trait keeps their operations one shape.
pub trait Backend: Copy {
    /// One sequence: its KV cache (room for `max_seq` positions), scratch and filled length.
    type Seq;

    /// "cpu" or "cuda".
    fn name(self) -> &'static str;

    /// A sequence with room for `max_seq` positions (prompt + new tokens).
    fn new_seq(self, max_seq: usize) -> Result<Self::Seq>;

    /// `new_seq` for a sequence about to be fed `prompt`: the positions of it found cached
    /// (prefix sharing) are filled already and their count returned; the caller prefills the
    /// rest (at least the last id). Backends without a cache find nothing.
    fn new_seq_for(self, max_seq: usize, prompt: &[u32]) -> Result<(Self::Seq, usize)> {
        let _ = prompt;
        Ok((self.new_seq(max_seq)?, 0))
    }

    /// Positions filled so far.
    fn filled(self, seq: &Self::Seq) -> usize;

    /// Feeds `ids` at the sequence's next positions (batched GEMMs); afterwards the sequence's
    /// logits are those after the last id.
    fn prefill(self, seq: &mut Self::Seq, ids: &[u32]) -> Result<()>;

    /// One decode step for each (sequence, token): the token at its sequence's next position.
    /// Today's backends run the pairs one after the other.
    fn step(self, batch: &mut [(&mut Self::Seq, u32)]) -> Result<()>;

    /// The logits after the sequence's last token (vocab), on the host.
    fn logits(self, seq: &mut Self::Seq) -> Result<Vec<f32>>;

    /// The greedy next token.
    fn argmax(self, seq: &mut Self::Seq) -> Result<u32>;

    /// The `k` (1..=MAX_TOP_K) largest logits as (id, logit), sorted descending, lower id first
    /// on ties, NaN dropped: what `Sampler::sample_candidates` takes.
    fn top_k(self, seq: &mut Self::Seq, k: usize) -> Result<Vec<(u32, f32)>>;

    /// The next token by `sampler`: argmax when greedy, else a draw among the top-k candidates
    /// (the CPU overrides this with the sampler over the full logits; both draw the same).
    fn sample(self, seq: &mut Self::Seq, sampler: &mut Sampler) -> Result<u32> {
        if sampler.is_greedy() || sampler.top_k() == 1 {
            return self.argmax(seq);
        }
        let cand = self.top_k(seq, sampler.top_k())?;
        match sampler.sample_candidates(&cand) {
            Some(id) => Ok(id),
            None => self.argmax(seq), // every logit NaN, as the CPU sampler
        }
    }
}

/// The backend a model's generations run on.
#[derive(Clone, Copy)]
pub enum Engine<'m> {
    Cpu(&'m Model),
    #[cfg(feature = "cuda")]
    Cuda(&'m cuda::model::CudaModel),
}

/// A sequence made by an `Engine`; used only with the engine that made it.
pub enum Seq<'m> {
    Cpu(DecodeState),
    #[cfg(feature = "cuda")]
    Cuda(cuda::session::CudaSession<'m>),
    /// Holds `'m` when the cuda feature is off; never constructed.
    #[cfg(not(feature = "cuda"))]
    #[doc(hidden)]
    Never(std::convert::Infallible, std::marker::PhantomData<&'m ()>),
}

fn other_backend() -> Error {
    Error::Internal("a sequence stepped on another backend".into())
}

/// `$body` with the engine's backend `$b` and the sequence's state `$s` of the same backend.
macro_rules! with_seq {
    ($engine:expr, $seq:expr, |$b:ident, $s:ident| $body:expr) => {
        match ($engine, $seq) {
            (Engine::Cpu($b), Seq::Cpu($s)) => $body,
            #[cfg(feature = "cuda")]
            (Engine::Cuda($b), Seq::Cuda($s)) => $body,
            #[allow(unreachable_patterns)]
            _ => Err(other_backend()),
        }
    };
}

/// The batch's sequences as backend `B`'s own states (`pick` says which), stepped by `b`. One
/// pair, the generate loop's case, runs without allocating.
fn step_typed<'s, 'm: 's, B: Backend>(
    b: B,
    batch: &'s mut [(&mut Seq<'m>, u32)],
    pick: impl Fn(&'s mut Seq<'m>) -> Option<&'s mut B::Seq>,
) -> Result<()>
where
    B::Seq: 's,
{
    if let [(seq, id)] = batch {
        let id = *id;
        let s = pick(seq).ok_or_else(other_backend)?;
        return b.step(&mut [(s, id)]);
    }
    let mut typed = Vec::with_capacity(batch.len());
    for (seq, id) in batch.iter_mut() {
        typed.push((pick(seq).ok_or_else(other_backend)?, *id));
    }
    b.step(&mut typed)
}

impl<'m> Backend for Engine<'m> {
    type Seq = Seq<'m>;

    fn name(self) -> &'static str {
        match self {
            Engine::Cpu(b) => b.name(),
            #[cfg(feature = "cuda")]
            Engine::Cuda(b) => b.name(),
        }
    }

    fn new_seq(self, max_seq: usize) -> Result<Seq<'m>> {
        match self {
            Engine::Cpu(b) => b.new_seq(max_seq).map(Seq::Cpu),
            #[cfg(feature = "cuda")]
            Engine::Cuda(b) => b.new_seq(max_seq).map(Seq::Cuda),
        }
    }

    fn new_seq_for(self, max_seq: usize, prompt: &[u32]) -> Result<(Seq<'m>, usize)> {
        match self {
            Engine::Cpu(b) => b.new_seq_for(max_seq, prompt).map(|(s, n)| (Seq::Cpu(s), n)),
            #[cfg(feature = "cuda")]
            Engine::Cuda(b) => b.new_seq_for(max_seq, prompt).map(|(s, n)| (Seq::Cuda(s), n)),
        }
    }

    fn filled(self, seq: &Seq<'m>) -> usize {
        match seq {
            Seq::Cpu(s) => s.filled(),
            #[cfg(feature = "cuda")]
            Seq::Cuda(s) => s.pos(),
            #[cfg(not(feature = "cuda"))]
            Seq::Never(n, _) => match *n {},
        }
    }

    fn prefill(self, seq: &mut Seq<'m>, ids: &[u32]) -> Result<()> {
        with_seq!(self, seq, |b, s| b.prefill(s, ids))
    }

    fn step(self, batch: &mut [(&mut Seq<'m>, u32)]) -> Result<()> {
        match self {
            Engine::Cpu(b) => step_typed(b, batch, |s| match s {
                Seq::Cpu(s) => Some(s),
                #[allow(unreachable_patterns)]
                _ => None,
            }),
            #[cfg(feature = "cuda")]
            Engine::Cuda(b) => step_typed(b, batch, |s| match s {
                Seq::Cuda(s) => Some(s),
                _ => None,
            }),
        }
    }

    fn logits(self, seq: &mut Seq<'m>) -> Result<Vec<f32>> {
        with_seq!(self, seq, |b, s| b.logits(s))
    }

    fn argmax(self, seq: &mut Seq<'m>) -> Result<u32> {
        with_seq!(self, seq, |b, s| b.argmax(s))
    }

    fn top_k(self, seq: &mut Seq<'m>, k: usize) -> Result<Vec<(u32, f32)>> {
        with_seq!(self, seq, |b, s| b.top_k(s, k))
    }

    fn sample(self, seq: &mut Seq<'m>, sampler: &mut Sampler) -> Result<u32> {
        with_seq!(self, seq, |b, s| b.sample(s, sampler))
    }
}

/// What the machine offers, and why CUDA is or is not usable.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    pub cuda_available: bool,
    /// "ok", or why CUDA is unusable (no libcuda, driver error, no device, not built with CUDA).
    pub cuda_reason: String,
    /// GPU name, compute capability (major, minor), memory in bytes, SM count; when available.
    pub gpu_name: Option<String>,
    pub compute_capability: Option<(i32, i32)>,
    pub gpu_memory: Option<usize>,
    pub sm_count: Option<usize>,
    pub cpu_threads: usize,
    /// The CPU kernel level in use: "avx512+bf16", "avx512", "avx2" or "portable" (tuning.rs).
    pub cpu_level: &'static str,
    /// Which CPU kernels run and why: (kernel, choice and reason), e.g. ("gemm_bf16", "f32 tiles
    /// on bf16-rounded values (no AVX512_BF16)").
    pub cpu_kernels: Vec<(&'static str, String)>,
    /// The backend `Device::Auto` picks: "cuda" or "cpu".
    pub auto: &'static str,
}

pub fn info() -> BackendInfo {
    let t = crate::tuning::get();
    let cpu = BackendInfo {
        cuda_available: false,
        cuda_reason: String::new(),
        gpu_name: None,
        compute_capability: None,
        gpu_memory: None,
        sm_count: None,
        cpu_threads: rayon::current_num_threads(),
        cpu_level: t.cpu_level(),
        cpu_kernels: t.cpu_kernels(),
        auto: "cpu",
    };
    #[cfg(feature = "cuda")]
    {
        match cuda::gpu() {
            Ok(g) => BackendInfo {
                cuda_available: true,
                cuda_reason: "ok".into(),
                gpu_name: Some(g.name.clone()),
                compute_capability: Some(g.cc),
                gpu_memory: Some(g.total_mem),
                sm_count: Some(g.sm_count),
                auto: "cuda",
                ..cpu
            },
            Err(e) => BackendInfo { cuda_reason: e.to_string(), ..cpu },
        }
    }
    #[cfg(not(feature = "cuda"))]
    BackendInfo { cuda_reason: "built without the cuda feature".into(), ..cpu }
}
