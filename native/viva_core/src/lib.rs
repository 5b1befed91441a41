//! viva_core: the viva_tensor engine. A plain Rust library with no BEAM types:
//! checkpoint loading, tokenization, the Llama forward pass, sampling and generation.

pub mod alloc;
pub mod backend;
pub mod chat;
pub mod config;
pub mod convert;
pub mod error;
pub mod formats;
pub mod generation;
pub mod gguf;
pub mod kv;
pub mod llama_tensors;
pub mod llm;
pub mod safetensors;
pub mod scheduler;
pub mod sampling;
pub mod tensor;
pub mod tokenizer;
pub mod tuning;
pub mod weights;

pub use error::{Error, Result};
