//! The engine's one error type. Every variant carries enough context (file, tensor, shapes)
//! to be acted on; `viva_nif::reason` maps each variant to a BEAM Reason term 1:1.
use std::path::Path;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A file or directory the caller named (or the loader needs) does not exist.
    #[error("file not found: {0}")]
    FileNotFound(String),
    /// The bytes of a file do not follow its format (safetensors, JSON, tokenizer, GGUF).
    #[error("bad format in {file}: {detail}")]
    BadFormat { file: String, detail: String },
    /// A tensor the architecture needs is absent from the checkpoint.
    #[error("missing tensor: {0}")]
    MissingTensor(String),
    /// A tensor (or input) has a shape other than the one the config implies.
    #[error("shape mismatch for {name}: expected {expected:?}, got {got:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, got: Vec<usize> },
    /// A tensor is stored in a dtype the engine cannot read.
    #[error("unsupported dtype {dtype} for tensor {name}")]
    UnsupportedDtype { name: String, dtype: String },
    /// An option has a value outside its domain.
    #[error("invalid option {key}: {value}")]
    InvalidOption { key: String, value: String },
    /// Prompt + max_new_tokens does not fit the model's context.
    #[error("context overflow: need {needed} positions, the model has {max}")]
    ContextOverflow { needed: usize, max: usize },
    /// A text input (prompt) is not valid UTF-8.
    #[error("invalid UTF-8 in input")]
    InvalidUtf8,
    /// The prompt is empty after tokenization (nothing to condition on).
    #[error("empty prompt")]
    EmptyPrompt,
    /// A token id is outside the vocabulary.
    #[error("token id {id} out of range (vocab {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    /// No tokenizer.json was found beside the weights and none was given.
    #[error("no tokenizer found for {0}")]
    NoTokenizer(String),
    /// chat() on a model whose checkpoint has no chat template.
    #[error("no chat template for {0}")]
    NoChatTemplate(String),
    /// Reading a file failed after it was found (permissions, I/O).
    #[error("I/O error on {path}: {detail}")]
    Io { path: String, detail: String },
    /// `device => cuda` on a machine without a usable GPU (backend::info() says why).
    #[error("CUDA unavailable")]
    CudaUnavailable,
    /// A CUDA driver, NVRTC or cuBLAS call failed at run time (after the GPU was found).
    #[error("CUDA error: {0}")]
    Cuda(String),
    #[error("out of memory")]
    OutOfMemory,
    #[error("cancelled")]
    Cancelled,
    /// The model's request queue is full (the `max_queue` load option): try again later.
    #[error("overloaded")]
    Overloaded,
    /// A bug: an invariant of the engine did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn bad_format(file: impl AsRef<Path>, detail: impl Into<String>) -> Self {
        Error::BadFormat { file: file.as_ref().display().to_string(), detail: detail.into() }
    }

    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        let path = path.as_ref().display().to_string();
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::FileNotFound(path)
        } else {
            Error::Io { path, detail: err.to_string() }
        }
    }

    pub fn invalid_option(key: &str, value: impl std::fmt::Debug) -> Self {
        Error::InvalidOption { key: key.to_string(), value: format!("{value:?}") }
    }
}
