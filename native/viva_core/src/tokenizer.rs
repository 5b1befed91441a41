//! HF tokenizer.json through the `tokenizers` crate, and an incremental detokenizer.
//!
//! Both Llama families work through the same file format: SentencePiece-style BPE with byte
//! fallback (TinyLlama / Llama-2: Metaspace "▁", `<0xNN>` tokens) and byte-level BPE (Llama-3).
//! BOS is added by the tokenizer.json post-processor, exactly as HF's `encode` does.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A loaded tokenizer; `Send + Sync`, shared by every generation of a model.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// A tokenizer.json document; `path` names its origin in errors (e.g. a GGUF file).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::bad_format(path, e.to_string()))?;
        Ok(Tokenizer { inner, path: path.to_path_buf() })
    }

    /// Where the tokenizer of a checkpoint lives: the override when given; for a weights file
    /// `<stem>_tokenizer.json` beside it, then `tokenizer.json` in its folder; for a folder,
    /// its `tokenizer.json`.
    pub fn locate(weights_path: &Path, override_path: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = override_path {
            return if p.is_file() { Ok(p.to_path_buf()) } else { Err(Error::FileNotFound(p.display().to_string())) };
        }
        let mut candidates = Vec::new();
        if weights_path.is_dir() {
            candidates.push(weights_path.join("tokenizer.json"));
        } else {
            let dir = weights_path.parent().unwrap_or_else(|| Path::new("."));
            if let Some(stem) = weights_path.file_stem().and_then(|s| s.to_str()) {
                // "model.safetensors.index.json" → stem "model.safetensors.index": no per-file tokenizer.
                if !stem.ends_with(".index") {
                    candidates.push(dir.join(format!("{stem}_tokenizer.json")));
                }
            }
            candidates.push(dir.join("tokenizer.json"));
        }
        candidates
            .into_iter()
            .find(|c| c.is_file())
            .ok_or_else(|| Error::NoTokenizer(weights_path.display().to_string()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Internal(format!("tokenizer encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids without a token (a model vocab padded past the tokenizer's) decode to nothing, as in HF.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Internal(format!("tokenizer decode: {e}")))
    }

    /// Vocabulary size including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, tok: &str) -> Option<u32> {
        self.inner.token_to_id(tok)
    }
}

/// Incremental detokenizer: emits text only once it is complete UTF-8.
///
/// Decoding token by token is wrong for both families (SentencePiece strips the leading space of
/// a lone piece; a byte-fallback or byte-level token can hold half a character), so each push
/// decodes a short window `ids[prefix..]` and emits what it adds beyond `ids[prefix..read]`,
/// holding back while the new text ends in U+FFFD (an incomplete character).
#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id; returns the newly completed text (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        self.flush(tok, false)
    }

    /// Emits whatever is held back (lossy, as HF's decode is, for a trailing partial character).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        self.flush(tok, true)
    }

    fn flush(&mut self, tok: &Tokenizer, last: bool) -> Result<String> {
        let before = tok.decode(&self.ids[self.prefix..self.read], true)?;
        let after = tok.decode(&self.ids[self.prefix..], true)?;
        let complete = last || !after.ends_with('\u{FFFD}');
        if after.len() > before.len() && complete && after.starts_with(&before) {
            let new = after[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(new);
        }
        Ok(String::new())
    }
}
