//! The real TinyLlama (SentencePiece-style BPE, byte fallback) and Llama-3 (byte-level BPE)
//! tokenizers against ids and decodes made by HF `tokenizers` (test/fixtures/tokenizer/make_expected.py).
use std::path::{Path, PathBuf};

use viva_core::tokenizer::{Detokenizer, Tokenizer};
use viva_core::Error;

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("VIVA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"));
    assert!(dir.is_dir(), "VIVA_MODELS ({}) is not a directory: the real tokenizers are needed", dir.display());
    dir
}

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn tokenizer(key: &str) -> Tokenizer {
    let rel = match key {
        "tinyllama" => "tinyllama-1.1b-chat/tokenizer.json",
        _ => "llama3-tokenizer/tokenizer.json",
    };
    Tokenizer::from_file(&models_dir().join(rel)).expect("real tokenizer loads")
}

fn cases(key: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo_file("test/fixtures/tokenizer/expected.json")).expect("expected.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["cases"][key].as_array().expect("cases").clone()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

#[test]
fn encode_and_decode_match_hf_for_both_families() {
    for key in ["tinyllama", "llama3"] {
        let tok = tokenizer(key);
        let cases = cases(key);
        assert!(cases.len() >= 20);
        for c in &cases {
            let text = c["text"].as_str().expect("text");
            let with = tok.encode(text, true).unwrap();
            assert_eq!(with, ids(&c["ids"]), "{key} encode {text:?}");
            assert_eq!(tok.encode(text, false).unwrap(), ids(&c["ids_no_special"]), "{key} encode (no special) {text:?}");
            assert_eq!(tok.decode(&with, true).unwrap(), c["decoded"].as_str().unwrap(), "{key} decode {text:?}");
            assert_eq!(tok.decode(&with, false).unwrap(), c["decoded_keep_special"].as_str().unwrap(), "{key} {text:?}");
            if c["round_trips"].as_bool().unwrap() {
                let plain = tok.encode(text, false).unwrap();
                assert_eq!(tok.decode(&plain, false).unwrap(), text, "{key} round trip {text:?}");
            }
        }
    }
}

#[test]
fn bos_is_added_as_hf_does() {
    // TinyLlama's post-processor prepends <s> (1); this Llama-3 tokenizer.json has no template,
    // and HF's AutoTokenizer adds no BOS for it either.
    let tl = tokenizer("tinyllama");
    assert_eq!(tl.encode("", true).unwrap(), vec![1]);
    assert_eq!(tl.encode("Hello", true).unwrap()[0], 1);
    let l3 = tokenizer("llama3");
    assert_eq!(l3.encode("", true).unwrap(), Vec::<u32>::new());
    assert_eq!(l3.token_to_id("<|begin_of_text|>"), Some(128000));
    assert_eq!(l3.vocab_size(), 128256);
    assert_eq!(tl.vocab_size(), 32000);
}

#[test]
fn special_tokens_in_text_are_single_ids() {
    let l3 = tokenizer("llama3");
    let ids = l3.encode("<|begin_of_text|>hi<|eot_id|>", false).unwrap();
    assert_eq!(ids.first(), Some(&128000));
    assert_eq!(ids.last(), l3.token_to_id("<|eot_id|>").as_ref());
}

#[test]
fn byte_fallback_reassembles_characters() {
    let tl = tokenizer("tinyllama");
    let ids = tl.encode("𠜎", false).unwrap();
    assert!(ids.iter().any(|&id| (3..3 + 256).contains(&id)), "expected <0xNN> byte tokens, got {ids:?}");
    assert_eq!(tl.decode(&ids, true).unwrap(), "𠜎");
}

#[test]
fn ids_past_the_tokenizer_vocab_decode_to_nothing_as_in_hf() {
    let tl = tokenizer("tinyllama");
    assert_eq!(tl.decode(&[450, 32000, 7483], true).unwrap(), "The capital");
}

/// Pushing ids one at a time never yields broken UTF-8 (a String cannot hold it) and the chunks
/// concatenate to the one-shot decode.
#[test]
fn incremental_detokenizer_equals_full_decode() {
    for key in ["tinyllama", "llama3"] {
        let tok = tokenizer(key);
        for c in cases(key) {
            let text = c["text"].as_str().unwrap();
            let ids = tok.encode(text, false).unwrap();
            let mut d = Detokenizer::new();
            let mut out = String::new();
            for &id in &ids {
                let chunk = d.push(&tok, id).unwrap();
                assert!(!chunk.contains('\u{FFFD}') || text.contains('\u{FFFD}'), "{key}: broken chunk for {text:?}");
                out.push_str(&chunk);
            }
            out.push_str(&d.finish(&tok).unwrap());
            assert_eq!(out, tok.decode(&ids, true).unwrap(), "{key} {text:?}");
        }
    }
}

#[test]
fn locate_prefers_override_then_stem_then_folder() {
    let dir = std::env::temp_dir().join(format!("viva_tok_locate_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("model.safetensors");
    std::fs::write(&weights, b"").unwrap();
    assert!(matches!(Tokenizer::locate(&weights, None), Err(Error::NoTokenizer(_))));
    assert!(matches!(Tokenizer::locate(&dir, None), Err(Error::NoTokenizer(_))));
    std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
    assert_eq!(Tokenizer::locate(&weights, None).unwrap(), dir.join("tokenizer.json"));
    assert_eq!(Tokenizer::locate(&dir, None).unwrap(), dir.join("tokenizer.json"));
    std::fs::write(dir.join("model_tokenizer.json"), b"{}").unwrap();
    assert_eq!(Tokenizer::locate(&weights, None).unwrap(), dir.join("model_tokenizer.json"));
    let other = dir.join("other.json");
    assert!(matches!(Tokenizer::locate(&weights, Some(&other)), Err(Error::FileNotFound(_))));
    std::fs::write(&other, b"{}").unwrap();
    assert_eq!(Tokenizer::locate(&weights, Some(&other)).unwrap(), other);
    // A file that is not a tokenizer is a BadFormat naming the file.
    assert!(matches!(Tokenizer::from_file(&other), Err(Error::BadFormat { .. })));
    assert!(matches!(Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")), Err(Error::FileNotFound(_))));
    std::fs::remove_dir_all(&dir).ok();
}
