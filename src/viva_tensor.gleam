//// Local LLM inference for Gleam: load a Llama-family Hugging Face checkpoint and generate
//// text, with greedy output identical to Hugging Face transformers.
////
//// ```gleam
//// import viva_tensor.{GenerateOpts, TopK}
////
//// let assert Ok(model) = viva_tensor.load_model("test/fixtures/tiny_gqa")
//// let opts = GenerateOpts(..viva_tensor.default_generate_opts(), max_new_tokens: 20)
//// let assert Ok(result) = viva_tensor.generate(model, "Once upon a time", opts)
//// result.text
//// ```
////
//// A `Model` is reusable across prompts and safe to share between processes: every call to
//// `generate` has its own KV cache.

/// A loaded model (a NIF resource); values come only from `load_model`.
pub type Model

/// Which compute device to load on. `Auto` picks CUDA when a usable GPU is found, else the CPU.
pub type Device {
  Auto
  Cpu
  Cuda
}

/// How many transformer blocks to load.
pub type NumLayers {
  AllLayers
  /// Only the first N blocks (N ≥ 1).
  Layers(Int)
}

/// Where the tokenizer comes from.
pub type TokenizerSource {
  /// `<stem>_tokenizer.json` beside a weights file, else `tokenizer.json` in its folder.
  AutoTokenizer
  TokenizerFile(String)
}

/// How the linear weights are held.
pub type Weights {
  /// FP8 E4M3 weight-only with blocked scales (the default): half of bf16's bytes.
  Fp8
  Bf16
  /// The checkpoint's own dtype, memory-mapped: greedy output equals HF transformers.
  Native
}

/// FP8 scale grouping along K.
pub type BlockSize {
  /// 16 (the default), 32, 64 or 128.
  Block(Int)
  PerChannel
}

/// What the CPU linears multiply.
pub type Activations {
  /// f32 activations times the exact weights (the default): `Native` weights give HF's greedy output.
  F32Activations
  /// Inputs and weights rounded to bf16, sums in f32 (as llama.cpp's BF16 path): about 2x the
  /// prompt rate on AVX512_BF16 CPUs; a greedy token can change at a near-tie.
  Bf16Activations
}

/// Options for `load_model_with`; start from `default_load_opts()`.
pub type LoadOpts {
  LoadOpts(
    num_layers: NumLayers,
    tokenizer_path: TokenizerSource,
    device: Device,
    weights: Weights,
    block_size: BlockSize,
    activations: Activations,
  )
}

/// Candidates kept before top-p: `TopKInfinity` keeps up to 256.
pub type TopK {
  TopK(Int)
  TopKInfinity
}

/// Options for `generate`, `chat` and `stream`; start from `default_generate_opts()`.
/// `temperature` 0.0 is greedy argmax; sampling applies temperature → top-k → top-p, seeded.
pub type GenerateOpts {
  GenerateOpts(
    max_new_tokens: Int,
    temperature: Float,
    top_k: TopK,
    top_p: Float,
    seed: Int,
    stop_on_eos: Bool,
  )
}

/// `tokens` are the generated ids only; `total_tokens` counts prompt + generated.
pub type GenerateResult {
  GenerateResult(
    text: String,
    tokens: List(Int),
    ms_per_token: Float,
    total_tokens: Int,
  )
}

/// Mirrors the Reason terms of `viva_tensor_llm` one to one.
pub type Error {
  FileNotFound(path: String)
  BadFormat(file: String, detail: String)
  MissingTensor(name: String)
  ShapeMismatch(name: String, expected: List(Int), got: List(Int))
  UnsupportedDtype(name: String, dtype: String)
  InvalidOption(key: String, value: String)
  ContextOverflow(needed: Int, max: Int)
  InvalidUtf8
  EmptyPrompt
  TokenOutOfRange(id: Int, vocab: Int)
  NoTokenizer(path: String)
  NoChatTemplate(path: String)
  IoError(path: String, detail: String)
  CudaUnavailable
  CudaError(detail: String)
  OutOfMemory
  Cancelled
  Overloaded
  Internal(message: String)
}

/// What the machine offers: whether CUDA is usable (and why not), the backend `Auto` picks
/// (`auto_device`: `Cpu` or `Cuda`) and the GPU's name.
pub type BackendInfo {
  BackendInfo(
    cuda_available: Bool,
    cuda_reason: String,
    auto_device: Device,
    gpu_name: Result(String, Nil),
  )
}

/// Probes the machine (never crashes: no driver or no GPU is a `cuda_reason`).
@external(erlang, "viva_tensor_ffi", "backend_info")
pub fn backend_info() -> BackendInfo

/// Greedy decoding of up to 50 tokens, stopping at an EOS token.
pub fn default_generate_opts() -> GenerateOpts {
  GenerateOpts(
    max_new_tokens: 50,
    temperature: 0.0,
    top_k: TopKInfinity,
    top_p: 1.0,
    seed: 42,
    stop_on_eos: True,
  )
}

/// All layers, the tokenizer found beside the weights, device `Auto`, FP8 weights in blocks of
/// 16, f32 activations.
pub fn default_load_opts() -> LoadOpts {
  LoadOpts(
    num_layers: AllLayers,
    tokenizer_path: AutoTokenizer,
    device: Auto,
    weights: Fp8,
    block_size: Block(16),
    activations: F32Activations,
  )
}

/// Loads a checkpoint folder, `.safetensors` file or `model.safetensors.index.json`.
pub fn load_model(path path: String) -> Result(Model, Error) {
  ffi_load_model(path)
}

/// `load_model` with explicit options; a bad value is `InvalidOption`.
pub fn load_model_with(
  path path: String,
  opts opts: LoadOpts,
) -> Result(Model, Error) {
  ffi_load_model_with(path, opts)
}

/// Generates a continuation of `prompt`; `tokens` holds the generated ids only.
pub fn generate(
  model model: Model,
  prompt prompt: String,
  opts opts: GenerateOpts,
) -> Result(GenerateResult, Error) {
  ffi_generate(model, prompt, opts)
}

/// One chat turn: `role` is "system", "user" or "assistant".
pub type Message {
  Message(role: String, content: String)
}

/// Chat with the model's own template (tokenizer_config.json or the GGUF's), the assistant
/// turn opened; generation stops at the model's EOS ids.
pub fn chat(
  model model: Model,
  messages messages: List(Message),
  opts opts: GenerateOpts,
) -> Result(GenerateResult, Error) {
  ffi_chat(model, messages, opts)
}

/// A streaming generation started by `stream`; its chunks arrive in the calling process.
pub type Stream

pub type StreamEvent {
  /// The next piece of text (valid UTF-8).
  Chunk(String)
  Done(GenerateResult)
  Failed(Error)
  TimedOut
}

/// Starts a generation whose text chunks are sent to the calling process; read them with
/// `next`. The native work stops on `cancel` or when this process dies.
pub fn stream(
  model model: Model,
  prompt prompt: String,
  opts opts: GenerateOpts,
) -> Result(Stream, Error) {
  ffi_stream(model, prompt, opts)
}

/// Waits up to `timeout_ms` for the stream's next event.
@external(erlang, "viva_tensor_ffi", "stream_next")
pub fn next(stream: Stream, timeout_ms: Int) -> StreamEvent

/// Stops the stream (its last event is then `Failed(Cancelled)`).
@external(erlang, "viva_tensor_ffi", "stream_cancel")
pub fn cancel(stream: Stream) -> Nil

@external(erlang, "viva_tensor_ffi", "stream")
fn ffi_stream(
  model: Model,
  prompt: String,
  opts: GenerateOpts,
) -> Result(Stream, Error)

@external(erlang, "viva_tensor_ffi", "chat")
fn ffi_chat(
  model: Model,
  messages: List(Message),
  opts: GenerateOpts,
) -> Result(GenerateResult, Error)

@external(erlang, "viva_tensor_ffi", "load_model")
fn ffi_load_model(path: String) -> Result(Model, Error)

@external(erlang, "viva_tensor_ffi", "load_model_with")
fn ffi_load_model_with(path: String, opts: LoadOpts) -> Result(Model, Error)

@external(erlang, "viva_tensor_ffi", "generate")
fn ffi_generate(
  model: Model,
  prompt: String,
  opts: GenerateOpts,
) -> Result(GenerateResult, Error)
