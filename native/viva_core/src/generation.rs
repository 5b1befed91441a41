//! One generation's bookkeeping, shared by `Llm::generate_with` (one sequence on the caller's
//! thread) and the scheduler (many sequences, one engine thread): what was sampled, the text it
//! completes, when to stop, and the result. The forward pass is not here: the caller prefills,
//! samples with `sampler` and steps; this decides what a sampled id means.
use std::time::Instant;

use crate::error::Result;
use crate::llm::{GenerateOptions, GenerateResult};
use crate::sampling::Sampler;
use crate::tokenizer::{Detokenizer, Tokenizer};

pub struct Generation {
    max_new_tokens: usize,
    stop_on_eos: bool,
    prompt_tokens: usize,
    pub sampler: Sampler,
    detok: Detokenizer,
    /// Generated ids (max_new_tokens reserved up front, fallibly).
    tokens: Vec<u32>,
    /// Instants the first and the latest token were sampled (ms_per_token).
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// Wall time of the prompt pass (all its chunks) in ms.
    pub prefill_ms: f64,
    done: bool,
}

impl Generation {
    /// `opts` already validated; `prompt_tokens` ids will be prefilled by the caller.
    pub fn new(prompt_tokens: usize, opts: &GenerateOptions) -> Result<Self> {
        Ok(Generation {
            max_new_tokens: opts.max_new_tokens,
            stop_on_eos: opts.stop_on_eos,
            prompt_tokens,
            sampler: Sampler::new(opts.temperature, opts.top_k, opts.top_p, opts.seed),
            detok: Detokenizer::new(),
            tokens: crate::alloc::try_with_capacity(opts.max_new_tokens)?,
            first_at: None,
            last_at: None,
            prefill_ms: 0.0,
            done: opts.max_new_tokens == 0,
        })
    }

    /// Whether the generation has ended (EOS, or max_new_tokens reached): no more sampling.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Records the sampled `id`; returns the text it completes (valid UTF-8, possibly empty).
    /// Afterwards `is_done` says whether the id must still be stepped for another token.
    pub fn accept(&mut self, tok: &Tokenizer, eos: &[u32], id: u32) -> Result<String> {
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        self.tokens.push(id);
        let chunk = self.detok.push(tok, id)?;
        self.done = self.tokens.len() >= self.max_new_tokens || (self.stop_on_eos && eos.contains(&id));
        Ok(chunk)
    }

    /// The result, and the text still held by the detokenizer (to be passed on before it).
    pub fn finish(mut self, tok: &Tokenizer) -> Result<(String, GenerateResult)> {
        let tail = self.detok.finish(tok)?;
        let text = tok.decode(&self.tokens, true)?;
        let n = self.tokens.len();
        let ms_per_token = match (self.first_at, self.last_at) {
            (Some(a), Some(b)) if n >= 2 => (b - a).as_secs_f64() * 1e3 / (n - 1) as f64,
            _ => 0.0,
        };
        let result = GenerateResult {
            total_tokens: self.prompt_tokens + n,
            prompt_tokens: self.prompt_tokens,
            tokens: self.tokens,
            text,
            ms_per_token,
            prefill_ms: self.prefill_ms,
        };
        Ok((tail, result))
    }
}
