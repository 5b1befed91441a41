//! The engine's facade: load a checkpoint + tokenizer, generate text. The NIF calls only this.
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::{Backend, Engine};
use crate::chat::{ChatTemplate, Message};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::backend::cpu::model::Model;
use crate::safetensors::Checkpoint;
use crate::sampling::{Sampler, MAX_TOP_K};
use crate::tokenizer::{Detokenizer, Tokenizer};
use crate::weights::{Activations, WeightFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA when a usable GPU is found, else CPU (`backend::info()` says which and why).
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Load only the first N transformer blocks.
    pub num_layers: Option<usize>,
    pub tokenizer_path: Option<PathBuf>,
    pub device: Device,
    /// fp8 block 16 by default; `Native` keeps the checkpoint's dtype (the HF-parity path).
    pub weights: WeightFormat,
    /// What the CPU linears multiply: f32 (exact, the default) or bf16 (faster; see [`Activations`]).
    pub activations: Activations,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0.0 = greedy argmax.
    pub temperature: f32,
    /// None = infinity (at most MAX_TOP_K candidates); else 1..=MAX_TOP_K.
    pub top_k: Option<usize>,
    pub top_p: f32,
    pub seed: u64,
    pub stop_on_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_new_tokens: 50, temperature: 0.0, top_k: None, top_p: 1.0, seed: 42, stop_on_eos: true }
    }
}

impl GenerateOptions {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid_option("temperature", self.temperature));
        }
        if let Some(k) = self.top_k {
            if !(1..=MAX_TOP_K).contains(&k) {
                return Err(Error::invalid_option("top_k", k));
            }
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid_option("top_p", self.top_p));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateResult {
    /// Generated ids only; an EOS that stopped generation is included (as HF's generate does).
    pub tokens: Vec<u32>,
    /// decode(tokens) with special tokens skipped.
    pub text: String,
    /// Decode speed: the mean wall time between consecutive generated tokens, i.e. (instant the
    /// last token was sampled − instant the first was sampled) / (generated − 1). Each interval
    /// is one forward step of the previous token + sampling + detokenizing (+ the `on_text`
    /// callback of `generate_with`). Prefill and the first token are excluded (see
    /// `prefill_ms`); 0.0 when fewer than 2 tokens were generated (no decode step ran).
    pub ms_per_token: f64,
    /// Prompt + generated tokens.
    pub total_tokens: usize,
    pub prompt_tokens: usize,
    /// Wall time of the prompt pass (prefill: every prompt id through the forward) in ms.
    pub prefill_ms: f64,
}

/// One `Llm` is shared by many concurrent generations (the NIF holds it in an Arc): each
/// generate owns its KV cache and scratch, the model is read-only. Checked at compile time.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Llm>();
};

/// One step of a load, for progress reports.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadProgress {
    pub stage: &'static str,
    pub done: usize,
    pub total: usize,
    pub detail: String,
}

pub struct Llm {
    pub config: ModelConfig,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// tokenizer_config.json's or the GGUF's `chat_template`, when the checkpoint has one.
    pub chat_template: Option<ChatTemplate>,
    /// The weights on the GPU when the load resolved to CUDA (generation then runs there; the
    /// host copy in `model` serves the low-level CPU API).
    #[cfg(feature = "cuda")]
    pub cuda: Option<crate::backend::cuda::model::CudaModel>,
}

impl Llm {
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Self> {
        Self::load_with_progress(path, opts, &mut |_| {})
    }

    /// `load`, reporting each step: every mapped file ("file"), every transformer block packed
    /// into the load's weight format ("layer", done of total), the tokenizer, then "ready".
    pub fn load_with_progress(path: &Path, opts: &LoadOptions, progress: &mut dyn FnMut(LoadProgress)) -> Result<Self> {
        let use_cuda = match opts.device {
            Device::Cpu => false,
            Device::Cuda => {
                if !crate::backend::info().cuda_available {
                    return Err(Error::CudaUnavailable);
                }
                true
            }
            Device::Auto => crate::backend::info().cuda_available,
        };
        let (ckpt, mut config, gguf_tokenizer, chat_template) = if path.extension().is_some_and(|e| e == "gguf") {
            // GGUF: weights, config, tokenizer and chat template all come from the one file
            let g = Gguf::open(path)?;
            let config = g.llama_config()?;
            let chat = crate::gguf::tokenizer::chat_template(&g);
            (g.to_checkpoint(&config)?, config, Some(crate::gguf::tokenizer::tokenizer_json(&g)?), chat)
        } else {
            let ckpt = Checkpoint::open(path)?;
            let config = ModelConfig::for_checkpoint(&ckpt)?;
            let tc = ckpt.dir.join("tokenizer_config.json");
            let chat = if tc.is_file() { ChatTemplate::from_tokenizer_config(&tc)? } else { None };
            (ckpt, config, None, chat)
        };
        for (i, f) in ckpt.files.iter().enumerate() {
            progress(LoadProgress { stage: "file", done: i + 1, total: ckpt.files.len(), detail: f.display().to_string() });
        }
        if let Some(n) = opts.num_layers {
            if n == 0 || n > config.num_hidden_layers {
                return Err(Error::invalid_option("num_layers", n));
            }
            config.num_hidden_layers = n;
        }
        let tokenizer = match (&gguf_tokenizer, &opts.tokenizer_path) {
            (Some(json), None) => Tokenizer::from_bytes(json.as_bytes(), path)?,
            _ => Tokenizer::from_file(&Tokenizer::locate(path, opts.tokenizer_path.as_deref())?)?,
        };
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::ShapeMismatch {
                name: "tokenizer vocab".into(),
                expected: vec![config.vocab_size],
                got: vec![tokenizer.vocab_size()],
            });
        }
        progress(LoadProgress { stage: "tokenizer", done: 1, total: 1, detail: tokenizer.path().display().to_string() });
        let total = config.num_hidden_layers;
        // fp8 on the GPU: the host keeps the checkpoint's own bytes (mmap) and the device packs them
        let host_format = match opts.weights {
            WeightFormat::Fp8(_) if use_cuda => WeightFormat::Native,
            w => w,
        };
        let mut model = Model::new(&ckpt, config.clone(), host_format, &mut |l| {
            progress(LoadProgress { stage: "layer", done: l + 1, total, detail: format!("model.layers.{l}") })
        })?;
        model.activations = opts.activations;
        #[cfg(feature = "cuda")]
        let cuda = if use_cuda {
            let m = crate::backend::cuda::model::CudaModel::upload(&model, opts.weights)?;
            progress(LoadProgress { stage: "device", done: 1, total: 1, detail: m.gpu.name.clone() });
            Some(m)
        } else {
            None
        };
        #[cfg(not(feature = "cuda"))]
        let _ = use_cuda;
        progress(LoadProgress { stage: "ready", done: 1, total: 1, detail: format!("{:?} weights", opts.weights) });
        Ok(Llm {
            config,
            model,
            tokenizer,
            chat_template,
            #[cfg(feature = "cuda")]
            cuda,
        })
    }

    /// The backend this model's generations run on: the GPU copy when the load resolved to CUDA.
    pub fn engine(&self) -> Engine<'_> {
        #[cfg(feature = "cuda")]
        if let Some(m) = &self.cuda {
            return Engine::Cuda(m);
        }
        Engine::Cpu(&self.model)
    }

    /// "cuda" or "cpu": where this model's generations run.
    pub fn backend(&self) -> &'static str {
        self.engine().name()
    }

    pub fn generate(&self, prompt: &str, opts: &GenerateOptions) -> Result<GenerateResult> {
        let ids = self.tokenizer.encode(prompt, true)?;
        self.generate_ids(&ids, opts)
    }

    pub fn generate_ids(&self, prompt_ids: &[u32], opts: &GenerateOptions) -> Result<GenerateResult> {
        self.generate_with(prompt_ids, opts, |_| Ok(()))
    }

    /// Generation with a callback after every sampled token, given the text that token completes
    /// (valid UTF-8, possibly empty); an `Err` from the callback (e.g. `Cancelled`) stops the
    /// generation and is returned.
    pub fn generate_with(
        &self,
        prompt_ids: &[u32],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> Result<()>,
    ) -> Result<GenerateResult> {
        opts.validate()?;
        let needed = self.check_prompt(prompt_ids, opts.max_new_tokens)?;
        let mut sampler = Sampler::new(opts.temperature, opts.top_k, opts.top_p, opts.seed);
        let engine = self.engine();
        let mut seq = engine.new_seq(needed)?;
        let mut detok = Detokenizer::new();

        let t0 = Instant::now();
        engine.prefill(&mut seq, prompt_ids)?;
        let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut tokens = Vec::with_capacity(opts.max_new_tokens);
        // instants the first and the latest token were sampled (ms_per_token)
        let (mut first_at, mut last_at) = (None, None);
        for i in 0..opts.max_new_tokens {
            let id = engine.sample(&mut seq, &mut sampler)?;
            let now = Instant::now();
            first_at.get_or_insert(now);
            last_at = Some(now);
            tokens.push(id);
            let chunk = detok.push(&self.tokenizer, id)?;
            on_text(&chunk)?;
            if opts.stop_on_eos && self.config.eos_token_ids.contains(&id) {
                break;
            }
            if i + 1 < opts.max_new_tokens {
                engine.step(&mut [(&mut seq, id)])?;
            }
        }
        let tail = detok.finish(&self.tokenizer)?;
        if !tail.is_empty() {
            on_text(&tail)?;
        }
        let text = self.tokenizer.decode(&tokens, true)?;
        let ms_per_token = match (first_at, last_at) {
            (Some(a), Some(b)) if tokens.len() >= 2 => (b - a).as_secs_f64() * 1e3 / (tokens.len() - 1) as f64,
            _ => 0.0,
        };
        Ok(GenerateResult {
            total_tokens: prompt_ids.len() + tokens.len(),
            prompt_tokens: prompt_ids.len(),
            tokens,
            text,
            ms_per_token,
            prefill_ms,
        })
    }

    /// The model's chat template applied to `messages` (assistant turn opened), then generated
    /// from; the rendered text carries its own BOS, so it is encoded without special tokens
    /// (as HF's apply_chat_template does).
    pub fn chat(&self, messages: &[Message], opts: &GenerateOptions) -> Result<GenerateResult> {
        let template = self.chat_template.as_ref().ok_or_else(|| Error::NoChatTemplate(self.tokenizer.path().display().to_string()))?;
        let prompt = template.render(messages, true)?;
        let ids = self.tokenizer.encode(&prompt, false)?;
        self.generate_ids(&ids, opts)
    }

    /// Logits after the last of `ids` (tests and fixtures).
    pub fn last_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let needed = self.check_prompt(ids, 0)?;
        let engine = self.engine();
        let mut seq = engine.new_seq(needed)?;
        engine.prefill(&mut seq, ids)?;
        engine.logits(&mut seq)
    }

    /// Validates a prompt; returns the positions the generation needs.
    fn check_prompt(&self, ids: &[u32], max_new_tokens: usize) -> Result<usize> {
        if ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let vocab = self.config.vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        let needed = ids.len() + max_new_tokens;
        let max = self.config.max_position_embeddings;
        if needed > max {
            return Err(Error::ContextOverflow { needed, max });
        }
        Ok(needed)
    }
}
