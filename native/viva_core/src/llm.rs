//! The engine's facade: load a checkpoint + tokenizer, generate text. The NIF calls only this.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::backend::{Backend, Engine};
use crate::chat::{ChatTemplate, Message};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::backend::cpu::model::Model;
use crate::safetensors::Checkpoint;
use crate::formats::{Activations, WeightFormat};
use crate::generation::Generation;
use crate::sampling::MAX_TOP_K;
use crate::tokenizer::Tokenizer;

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
    /// Bytes of the CPU model's KV block pool (kv/), shared by all its sequences; `None`: a
    /// quarter of the memory available at load, at most 16 GiB (`kv::default_budget`).
    pub kv_cache_bytes: Option<usize>,
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
    /// The CPU model: built at load on the CPU; on the GPU only if the low-level CPU API asks
    /// for it (`model()`), so a GPU load holds no host copy of the weights.
    host: OnceLock<Model>,
    /// GPU loads: how to build `host` (reopens the checkpoint), and a lock so it is built once.
    host_source: Option<HostSource>,
    host_lock: Mutex<()>,
    pub tokenizer: Tokenizer,
    /// tokenizer_config.json's or the GGUF's `chat_template`, when the checkpoint has one.
    pub chat_template: Option<ChatTemplate>,
    /// The weights on the GPU when the load resolved to CUDA (generation then runs there).
    #[cfg(feature = "cuda")]
    pub cuda: Option<crate::backend::cuda::model::CudaModel>,
}

/// What a GPU-loaded model needs to build its host copy later: the checkpoint's path and the
/// load's resolved config and formats.
struct HostSource {
    path: PathBuf,
    format: WeightFormat,
    activations: Activations,
}

/// The checkpoint at `path` (safetensors file / index / folder, or a GGUF), its config, and the
/// GGUF's tokenizer and the chat template when present.
fn open_checkpoint(path: &Path) -> Result<(Checkpoint, ModelConfig, Option<String>, Option<ChatTemplate>)> {
    if path.extension().is_some_and(|e| e == "gguf") {
        // GGUF: weights, config, tokenizer and chat template all come from the one file
        let g = Gguf::open(path)?;
        let config = g.llama_config()?;
        let chat = crate::gguf::tokenizer::chat_template(&g);
        Ok((g.model_checkpoint(&config)?, config, Some(crate::gguf::tokenizer::tokenizer_json(&g)?), chat))
    } else {
        let ckpt = Checkpoint::open(path)?;
        let config = ModelConfig::for_checkpoint(&ckpt)?;
        let tc = ckpt.dir.join("tokenizer_config.json");
        let chat = if tc.is_file() { ChatTemplate::from_tokenizer_config(&tc)? } else { None };
        Ok((ckpt, config, None, chat))
    }
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
        let (ckpt, mut config, gguf_tokenizer, chat_template) = open_checkpoint(path)?;
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
        let mut on_layer = |l: usize| progress(LoadProgress { stage: "layer", done: l + 1, total, detail: format!("model.layers.{l}") });
        let host = OnceLock::new();
        let mut host_source = None;
        #[cfg(feature = "cuda")]
        let mut cuda = None;
        if use_cuda {
            #[cfg(feature = "cuda")]
            {
                let m = crate::backend::cuda::model::CudaModel::from_checkpoint(&ckpt, &config, opts.weights, &mut on_layer)?;
                progress(LoadProgress { stage: "device", done: 1, total: 1, detail: m.gpu.name.clone() });
                cuda = Some(m);
            }
            // the low-level CPU API's model, if ever asked for: the load's own format, so its
            // decode steps use the weights the GPU uses (fp8 packing is bit-identical on both)
            host_source = Some(HostSource { path: path.to_path_buf(), format: opts.weights, activations: opts.activations });
        } else {
            let mut model = Model::new(&ckpt, config.clone(), opts.weights, &mut on_layer)?;
            model.activations = opts.activations;
            let dims = crate::kv::KvDims::of(&config);
            let budget = opts.kv_cache_bytes.unwrap_or_else(crate::kv::default_budget);
            let pool = crate::kv::KvPool::new(dims, crate::kv::blocks_in_budget(dims, budget))?.with_prefix_cache()?;
            let _ = model.kv_pool.set(crate::kv::SharedPool::new(pool));
            let _ = host.set(model);
        }
        drop(ckpt);
        progress(LoadProgress { stage: "ready", done: 1, total: 1, detail: format!("{:?} weights", opts.weights) });
        Ok(Llm {
            config,
            host,
            host_source,
            host_lock: Mutex::new(()),
            tokenizer,
            chat_template,
            #[cfg(feature = "cuda")]
            cuda,
        })
    }

    /// The CPU model (the low-level API's decode steps, CPU generation). On a GPU-loaded model
    /// the first call builds it from the checkpoint in the load's format and keeps it.
    pub fn model(&self) -> Result<&Model> {
        if let Some(m) = self.host.get() {
            return Ok(m);
        }
        let _guard = self.host_lock.lock().map_err(|_| Error::Internal("host model lock poisoned".into()))?;
        if let Some(m) = self.host.get() {
            return Ok(m);
        }
        let src = self.host_source.as_ref().ok_or_else(|| Error::Internal("no host model and no source".into()))?;
        let (ckpt, _, _, _) = open_checkpoint(&src.path)?;
        let mut model = Model::new(&ckpt, self.config.clone(), src.format, &mut |_| {})?;
        model.activations = src.activations;
        Ok(self.host.get_or_init(|| model))
    }

    /// The backend this model's generations run on: the GPU copy when the load resolved to CUDA.
    pub fn engine(&self) -> Result<Engine<'_>> {
        #[cfg(feature = "cuda")]
        if let Some(m) = &self.cuda {
            return Ok(Engine::Cuda(m));
        }
        Ok(Engine::Cpu(self.model()?))
    }

    /// The CPU model's KV pool (blocks of `kv::BLOCK` positions). `None` on the GPU (its
    /// sequences keep device caches of their own).
    pub fn kv_blocks(&self) -> Option<crate::kv::KvUsage> {
        if self.backend() != "cpu" {
            return None;
        }
        self.host.get()?.kv_pool.get().map(|p| p.usage())
    }

    /// "cuda" or "cpu": where this model's generations run.
    pub fn backend(&self) -> &'static str {
        #[cfg(feature = "cuda")]
        if self.cuda.is_some() {
            return "cuda";
        }
        "cpu"
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
        let mut gen = Generation::new(prompt_ids.len(), opts)?;
        let engine = self.engine()?;
        let mut seq = engine.new_seq(needed)?;
        let t0 = Instant::now();
        engine.prefill(&mut seq, prompt_ids)?;
        gen.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        while !gen.is_done() {
            let id = engine.sample(&mut seq, &mut gen.sampler)?;
            let chunk = gen.accept(&self.tokenizer, &self.config.eos_token_ids, id)?;
            on_text(&chunk)?;
            if !gen.is_done() {
                engine.step(&mut [(&mut seq, id)])?;
            }
        }
        let (tail, result) = gen.finish(&self.tokenizer)?;
        if !tail.is_empty() {
            on_text(&tail)?;
        }
        Ok(result)
    }

    /// The model's chat template applied to `messages` (assistant turn opened), then generated
    /// from; the rendered text carries its own BOS, so it is encoded without special tokens
    /// (as HF's apply_chat_template does).
    pub fn chat(&self, messages: &[Message], opts: &GenerateOptions) -> Result<GenerateResult> {
        self.chat_with(messages, opts, |_| Ok(()))
    }

    /// `chat` with `generate_with`'s per-token callback.
    pub fn chat_with(
        &self,
        messages: &[Message],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str) -> Result<()>,
    ) -> Result<GenerateResult> {
        let ids = self.chat_ids(messages)?;
        self.generate_with(&ids, opts, on_text)
    }

    /// The prompt ids of a chat: the template rendered with the assistant turn opened, encoded
    /// without special tokens (the rendered text carries its own BOS).
    pub fn chat_ids(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let template = self.chat_template.as_ref().ok_or_else(|| Error::NoChatTemplate(self.tokenizer.path().display().to_string()))?;
        let prompt = template.render(messages, true)?;
        self.tokenizer.encode(&prompt, false)
    }

    /// Logits after the last of `ids` (tests and fixtures).
    pub fn last_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let needed = self.check_prompt(ids, 0)?;
        let engine = self.engine()?;
        let mut seq = engine.new_seq(needed)?;
        engine.prefill(&mut seq, ids)?;
        engine.logits(&mut seq)
    }

    /// Validates a prompt; returns the positions the generation needs.
    pub(crate) fn check_prompt(&self, ids: &[u32], max_new_tokens: usize) -> Result<usize> {
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
