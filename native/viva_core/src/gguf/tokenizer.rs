//! GGUF tokenizer metadata → an HF tokenizer.json, so the one `tokenizers`-based Tokenizer
//! serves GGUF checkpoints too.
//!
//! `tokenizer.ggml.model == "gpt2"` (byte-level BPE): `tokens` is the vocab in id order,
//! `merges` the BPE merges ("a b"), `token_type` 3 (control) / 4 (user-defined) become added
//! special tokens. `tokenizer.ggml.pre` picks the pre-tokenizer as llama.cpp does: "smollm"
//! splits digits one by one before the GPT-2 byte-level regex; "llama-bpe" (Llama-3) uses the
//! Llama-3 split regex. `add_bos_token` adds BOS through a template post-processor.
use serde_json::{json, Map, Value};

use super::Gguf;
use crate::error::{Error, Result};

/// token_type values (llama.cpp's llama_token_type)
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// Bound on Σ len² over SentencePiece pieces (the cost of deriving their merges): real
/// vocabularies are ~10⁶–10⁷ (32000 pieces of a few bytes); one hostile 1 MB piece is 10¹².
const MAX_MERGE_WORK: u64 = 1 << 30;

/// Llama-3's pre-tokenizer split pattern (as its tokenizer.json has it).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub fn tokenizer_json(g: &Gguf) -> Result<String> {
    let bad = |d: &str| Error::bad_format(&g.path, d.to_string());
    let model = g.get_str("tokenizer.ggml.model").ok_or_else(|| bad("no tokenizer.ggml.model"))?;
    match model {
        "gpt2" => {}
        "llama" => return sentencepiece_json(g),
        other => return Err(bad(&format!("tokenizer.ggml.model {other:?} is not supported (\"gpt2\", \"llama\")"))),
    }
    let tokens = g.get_array("tokenizer.ggml.tokens").ok_or_else(|| bad("no tokenizer.ggml.tokens"))?;
    let merges = g.get_array("tokenizer.ggml.merges").ok_or_else(|| bad("no tokenizer.ggml.merges"))?;
    let types = g.get_array("tokenizer.ggml.token_type");
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        let s = t.as_str().ok_or_else(|| bad("tokenizer.ggml.tokens holds a non-string"))?;
        vocab.insert(s.to_string(), json!(id));
        let ty = types.and_then(|ts| ts.get(id)).and_then(|v| v.as_u64());
        if ty == Some(CONTROL) || ty == Some(USER_DEFINED) {
            added.push(json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": ty == Some(CONTROL)}));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| m.as_str().map(|s| json!(s)).ok_or_else(|| bad("tokenizer.ggml.merges holds a non-string")))
        .collect::<Result<_>>()?;
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre = match g.get_str("tokenizer.ggml.pre").unwrap_or("default") {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false)]}),
        _ => byte_level(true),
    };
    let add_bos = g.get("tokenizer.ggml.add_bos_token").map(|v| v == &super::GgufValue::Bool(true)).unwrap_or(false);
    let post = match (add_bos, g.get_u64("tokenizer.ggml.bos_token_id")) {
        (true, Some(bos)) => {
            let bos_tok = tokens.get(bos as usize).and_then(|t| t.as_str()).ok_or_else(|| bad("bos_token_id out of range"))?;
            json!({"type": "TemplateProcessing",
                   "single": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                            {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {bos_tok: {"id": bos_tok, "ids": [bos], "tokens": [bos_tok]}}})
        }
        _ => Value::Null,
    };
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": pre, "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    serde_json::to_string(&doc).map_err(|e| Error::Internal(format!("tokenizer json: {e}")))
}

/// `tokenizer.chat_template`, with BOS/EOS token texts from the token list.
pub fn chat_template(g: &Gguf) -> Option<crate::chat::ChatTemplate> {
    let source = g.get_str("tokenizer.chat_template")?.to_string();
    let tokens = g.get_array("tokenizer.ggml.tokens");
    let text = |key: &str| {
        g.get_u64(key)
            .and_then(|id| tokens.and_then(|t| t.get(id as usize)))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    Some(crate::chat::ChatTemplate::new(source, text("tokenizer.ggml.bos_token_id"), text("tokenizer.ggml.eos_token_id"), &g.path))
}

/// `tokenizer.ggml.model == "llama"` (SentencePiece BPE with byte fallback): the tokenizer.json
/// transformers builds from the same metadata — Metaspace ("▁", prepended to the first word),
/// byte-fallback BPE whose merges come from the scores (every split of a piece into two pieces
/// of the vocab is a merge ranked by the whole piece's score), control/unknown tokens as
/// special added tokens, BOS by template when `add_bos_token` (default true).
fn sentencepiece_json(g: &Gguf) -> Result<String> {
    let bad = |d: &str| Error::bad_format(&g.path, d.to_string());
    let tokens = g.get_array("tokenizer.ggml.tokens").ok_or_else(|| bad("no tokenizer.ggml.tokens"))?;
    let scores = g.get_array("tokenizer.ggml.scores").ok_or_else(|| bad("no tokenizer.ggml.scores"))?;
    let types = g.get_array("tokenizer.ggml.token_type");
    if scores.len() != tokens.len() {
        return Err(bad("tokenizer.ggml.scores and tokens differ in length"));
    }
    let pieces: Vec<&str> = tokens.iter().map(|t| t.as_str().ok_or_else(|| bad("a token is not a string"))).collect::<Result<_>>()?;
    // each piece's splits cost its length squared (hashing both parts of every split)
    let work = pieces.iter().fold(0u64, |w, p| w.saturating_add((p.len() as u64).saturating_pow(2)));
    if work > MAX_MERGE_WORK {
        return Err(bad(&format!("tokenizer.ggml.tokens: pieces too long to derive merges from ({work} > {MAX_MERGE_WORK})")));
    }
    let ids: std::collections::HashMap<&str, usize> = pieces.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    // merges: for each piece, every split into two vocab pieces (ordered by the parts' ids);
    // then all of them by the piece's score, highest first, longer left then right part first
    // on ties (a stable sort, as transformers' generate_merges)
    let mut merges: Vec<(usize, usize, f64)> = Vec::new();
    for (piece, score) in pieces.iter().zip(scores) {
        let score = score.as_f64().ok_or_else(|| bad("a score is not a number"))?;
        let mut local: Vec<(usize, usize, f64)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(i, _)| Some((*ids.get(&piece[..i])?, *ids.get(&piece[i..])?, score)))
            .collect();
        local.sort_by_key(|&(l, r, _)| (l, r));
        merges.extend(local);
    }
    let chars = |i: usize| pieces[i].chars().count();
    merges.sort_by(|a, b| b.2.total_cmp(&a.2).then(chars(b.0).cmp(&chars(a.0))).then(chars(b.1).cmp(&chars(a.1))));
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, piece) in pieces.iter().enumerate() {
        vocab.insert(piece.to_string(), json!(id));
        let ty = types.and_then(|ts| ts.get(id)).and_then(|v| v.as_u64());
        if matches!(ty, Some(2) | Some(CONTROL) | Some(USER_DEFINED)) {
            added.push(json!({"id": id, "content": piece, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": false, "special": ty != Some(USER_DEFINED)}));
        }
    }
    let merges: Vec<Value> = merges.iter().map(|&(l, r, _)| json!([pieces[l], pieces[r]])).collect();
    let add_bos = g.get("tokenizer.ggml.add_bos_token").map_or(true, |v| v == &super::GgufValue::Bool(true));
    let unk = g.get_u64("tokenizer.ggml.unknown_token_id").and_then(|i| pieces.get(i as usize)).map(|s| s.to_string());
    let post = match (add_bos, g.get_u64("tokenizer.ggml.bos_token_id")) {
        (true, Some(bos)) => template_with_bos(&pieces, bos).ok_or_else(|| bad("bos_token_id out of range"))?,
        _ => Value::Null,
    };
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    serde_json::to_string(&doc).map_err(|e| Error::Internal(format!("tokenizer json: {e}")))
}

/// A TemplateProcessing post-processor that prepends the BOS piece.
fn template_with_bos(pieces: &[&str], bos: u64) -> Option<Value> {
    let b = *pieces.get(bos as usize)?;
    Some(json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {b: {"id": b, "ids": [bos], "tokens": [b]}}}))
}
