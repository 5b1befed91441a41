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
        let bytes = crate::alloc::read_file(path, crate::alloc::MAX_TOKENIZER_JSON)?;
        Self::from_bytes(&bytes, path)
    }

    /// A tokenizer.json document; `path` names its origin in errors (e.g. a GGUF file).
    ///
    /// `tokenizers` (0.23) panics instead of failing on three kinds of broken document (found
    /// by fuzzing, fuzz/regressions/tokenizer/): a JSON syntax error inside `"decoder"`
    /// (`expect("Helper")`) and a `Precompiled` normalizer whose charsmap does not parse
    /// (`expect("Precompiled")`) while loading, and a `TemplateProcessing` post-processor
    /// whose template names a special token that its `special_tokens` lacks (its builder
    /// checks that, its deserializer does not) at every encode with special tokens. All three
    /// are checked here, so that they are `BadFormat`; any other panic while loading is caught
    /// and reported the same way.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |d: String| Error::bad_format(path, d);
        let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if let Some(normalizer) = doc.get("normalizer") {
            check_precompiled(normalizer).map_err(bad)?;
        }
        if let Some(model) = doc.get("model") {
            check_bpe_merges(model).map_err(bad)?;
        }
        drop(doc);
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
            .map_err(|p| bad(format!("tokenizers panicked: {}", panic_message(&*p))))?
            .map_err(|e| bad(e.to_string()))?;
        // the post-processor as `tokenizers` read it, written back: one form of template
        let post = serde_json::to_value(inner.get_post_processor()).map_err(|e| bad(format!("post_processor: {e}")))?;
        check_templates(&post).map_err(bad)?;
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

    /// How `decode(.., skip_special_tokens = true)` treats `id` (see `Detokenizer`).
    fn piece(&self, id: u32) -> Piece {
        match self.inner.id_to_token(id) {
            None => Piece::Skipped,
            Some(t) if self.inner.get_added_vocabulary().is_special_token(&t) => Piece::Skipped,
            // Spelled as HF's ByteFallback decoder recognises a byte.
            Some(t) if t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && u8::from_str_radix(&t[3..5], 16).is_ok() => {
                Piece::Byte
            }
            Some(_) => Piece::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece {
    /// A `<0xNN>` byte-fallback token.
    Byte,
    /// Dropped by a decode that skips special tokens (a special token, an id past the vocab).
    Skipped,
    Text,
}

/// Incremental detokenizer: emits text only once it is final, so that the chunks it returns
/// concatenate to `decode(all ids, skip_special_tokens = true)` and never split a character
/// (a run of invalid bytes over more than `MAX_FFFD_HOLDS` ids may come out with another
/// number of U+FFFD than the whole decode gives it).
///
/// Decoding token by token is wrong for both families (SentencePiece strips the leading space of
/// a lone piece; a byte-fallback or byte-level token can hold part of a character), so each push
/// decodes a short window `ids[prefix..]` and emits what it adds beyond `ids[prefix..read]`
/// (TGI's prefix/read offsets). Text is held back while
/// - it ends in U+FFFD: an incomplete character that the next token may finish (for at most
///   `MAX_FFFD_HOLDS` pushes: U+FFFD can be text, too);
/// - the last id is a `<0xNN>` token: HF's ByteFallback decoder judges a whole run of byte tokens
///   at once and turns every byte of an invalid run into U+FFFD, so a run that decodes cleanly
///   now may be rewritten by the next byte (`<0xEC><0x80><0x98>` is "쀘", plus `<0x98>` is six
///   U+FFFD), and skipped special tokens do not end a run — up to `MAX_BYTE_RUN` held ids, so
///   a long run of byte-fallback characters still streams.
#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    ids: Vec<u32>,
    /// Start of the decode window: the first id of the last emitted chunk.
    prefix: usize,
    /// Ids before `read` have been emitted.
    read: usize,
    /// Pushes in a row held back for a trailing U+FFFD.
    fffd_holds: usize,
}

/// Byte tokens held back past `read` before a clean run is emitted anyway (one emoji is 4).
const MAX_BYTE_RUN: usize = 64;
/// Pushes in a row held for a trailing U+FFFD before it counts as text: twice the longest
/// character's bytes.
const MAX_FFFD_HOLDS: usize = 8;

impl Detokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id; returns the newly completed text (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        // a skipped id (special token, id past the vocabulary) is invisible to the decode of
        // any window, so it is not kept: a long run of them would grow the window (each push
        // decoding it again: quadratic)
        if tok.piece(id) == Piece::Skipped {
            return Ok(String::new());
        }
        self.ids.push(id);
        if self.ids.len() - self.read < MAX_BYTE_RUN && self.in_byte_run(tok) {
            return Ok(String::new());
        }
        self.flush(tok, false)
    }

    /// Emits whatever is held back (lossy, as HF's decode is, for a trailing partial character).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        self.flush(tok, true)
    }

    /// Whether the last id that decodes to something is a `<0xNN>` byte token.
    fn in_byte_run(&self, tok: &Tokenizer) -> bool {
        let unread = &self.ids[self.read..];
        unread.iter().rev().map(|&id| tok.piece(id)).find(|&p| p != Piece::Skipped) == Some(Piece::Byte)
    }

    fn flush(&mut self, tok: &Tokenizer, last: bool) -> Result<String> {
        let before = tok.decode(&self.ids[self.prefix..self.read], true)?;
        let after = tok.decode(&self.ids[self.prefix..], true)?;
        // a trailing U+FFFD may be a character the next ids complete — but not after
        // MAX_FFFD_HOLDS pushes (a character is at most 4 bytes): then it is text (U+FFFD in
        // the text itself, or invalid bytes), and holding it longer would hold the rest forever
        // while every push decoded a growing window
        if !last && after.ends_with('\u{FFFD}') && self.fffd_holds < MAX_FFFD_HOLDS {
            self.fffd_holds += 1;
            return Ok(String::new());
        }
        self.fffd_holds = 0;
        let new = match after.strip_prefix(before.as_str()) {
            Some(new) => new.to_string(),
            // The window's decode rewrote text already emitted (only a decoder unlike both
            // Llama families' can do that); what was sent cannot be taken back, so send what differs.
            None => after[common_prefix_len(&before, &after)..].to_string(),
        };
        // An id that adds no text (a skipped special token) never starts a window: a SentencePiece
        // window would then strip the leading space of the piece after it.
        if !new.is_empty() || last {
            self.prefix = self.read;
            self.read = self.ids.len();
        }
        Ok(new)
    }
}

/// Byte length of the longest common prefix of `a` and `b` that ends on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices().zip(b.chars()).find(|((_, x), y)| x != y).map_or(a.len().min(b.len()), |((i, _), _)| i)
}

/// A BPE model's merges must each make a token of its vocabulary: `tokenizers` 0.23 copies a
/// merge into a buffer sized by the longest vocabulary token before it looks the result up, so a
/// longer merge panicked (found by the tokenizer fuzzer), and with a `continuing_subword_prefix`
/// it cuts the prefix off the second part unchecked (then reads the bytes as UTF-8 unchecked).
fn check_bpe_merges(model: &serde_json::Value) -> std::result::Result<(), String> {
    use serde_json::Value;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Ok(());
    }
    let (Some(vocab), Some(merges)) = (model.get("vocab").and_then(Value::as_object), model.get("merges").and_then(Value::as_array)) else {
        return Ok(()); // tokenizers reports its own error
    };
    let prefix = model.get("continuing_subword_prefix").and_then(Value::as_str).unwrap_or("");
    let mut merged = String::new();
    for m in merges {
        let (a, b) = match m {
            Value::String(s) => match s.split_once(' ') {
                Some(pair) => pair,
                None => continue,
            },
            Value::Array(p) => match (p.first().and_then(Value::as_str), p.get(1).and_then(Value::as_str)) {
                (Some(a), Some(b)) => (a, b),
                _ => continue,
            },
            _ => continue,
        };
        let Some(rest) = b.strip_prefix(prefix) else {
            return Err(format!("BPE merge {a:?} {b:?}: the second part lacks the continuing_subword_prefix {prefix:?}"));
        };
        merged.clear();
        merged.push_str(a);
        merged.push_str(rest);
        if !vocab.contains_key(&merged) {
            return Err(format!("BPE merge {a:?} {b:?} makes {merged:?}, which is not in the vocabulary"));
        }
    }
    Ok(())
}

/// Every `{"type": "Precompiled", ..}` in a normalizer (a Sequence nests them) must
/// deserialize as `tokenizers` will, or it panics instead of failing.
fn check_precompiled(v: &serde_json::Value) -> std::result::Result<(), String> {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("type").and_then(|t| t.as_str()) == Some("Precompiled") {
                serde_json::from_value::<tokenizers::normalizers::Precompiled>(v.clone())
                    .map_err(|e| format!("normalizer Precompiled: {e}"))?;
            }
            o.values().try_for_each(check_precompiled)
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_precompiled),
        _ => Ok(()),
    }
}

/// Every `TemplateProcessing` (a Sequence nests them): each special token its templates
/// name is in its `special_tokens` (what `tokenizers`' builder checks and its deserializer
/// does not; encode indexes `special_tokens` by them).
fn check_templates(v: &serde_json::Value) -> std::result::Result<(), String> {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("type").and_then(|t| t.as_str()) == Some("TemplateProcessing") {
                let specials = o.get("special_tokens").and_then(|s| s.as_object());
                for key in ["single", "pair"] {
                    for piece in o.get(key).and_then(|t| t.as_array()).into_iter().flatten() {
                        let id = piece.get("SpecialToken").and_then(|s| s.get("id")).and_then(|id| id.as_str());
                        if let Some(id) = id {
                            if !specials.is_some_and(|s| s.contains_key(id)) {
                                return Err(format!("post_processor TemplateProcessing: its {key} template names the special token {id:?}, which its special_tokens lacks"));
                            }
                        }
                    }
                }
            }
            o.values().try_for_each(check_templates)
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_templates),
        _ => Ok(()),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default()
}
