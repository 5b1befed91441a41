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
    let path = models_dir().join(rel);
    Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("real tokenizer {}: {e}", path.display()))
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
    // A sharded checkpoint's index names no tokenizer of its own: the folder's tokenizer.json.
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(&index, b"{}").unwrap();
    std::fs::write(dir.join("model.safetensors.index_tokenizer.json"), b"{}").unwrap();
    assert_eq!(Tokenizer::locate(&index, None).unwrap(), dir.join("tokenizer.json"));
    // A file that is not a tokenizer is a BadFormat naming the file.
    match Tokenizer::from_file(&other) {
        Err(Error::BadFormat { file, .. }) => assert_eq!(file, other.display().to_string()),
        r => panic!("expected BadFormat, got {:?}", r.map(|_| ())),
    }
    assert!(matches!(Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json")), Err(Error::FileNotFound(_))));
    std::fs::remove_dir_all(&dir).ok();
}

/// xorshift64*: a fixed, dependency-free stream so every run tests the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Pieces the generated strings are made of: every class of the fixed cases, mixed freely.
const PIECES: &[&str] = &[
    "a", "The", " cat", "ing", "  ", " ", "\t", "\n", "\r\n", "é", "ñ", "Æ", "ø", "日本", "語", "中文", "𠜎", "𠜱",
    "😀", "🎉", "👩\u{200D}👩\u{200D}👧", "🏳️\u{200D}🌈", "🇫🇷", "\u{F0000}", "\u{10FFFD}", "\u{1}", "\u{7}", "\u{a0}",
    "\u{2009}", "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|eot_id|>", "123", "3.14", "!", "{}", "\"", "'s",
    "▁", "<0xE2>", "\u{FFFD}",
];

fn random_text(rng: &mut Rng) -> String {
    (0..1 + rng.below(12)).map(|_| *rng.pick(PIECES)).collect()
}

fn detokenize_all(tok: &Tokenizer, ids: &[u32]) -> (String, Vec<String>) {
    let mut d = Detokenizer::new();
    let mut chunks: Vec<String> = ids.iter().map(|&id| d.push(tok, id).unwrap()).collect();
    chunks.push(d.finish(tok).unwrap());
    (chunks.concat(), chunks)
}

/// 400 generated strings per tokenizer: the streamed text equals the one-shot decode, and no
/// chunk carries a U+FFFD the full text does not have (a character split across chunks).
#[test]
fn incremental_detokenizer_equals_full_decode_on_generated_strings() {
    for key in ["tinyllama", "llama3"] {
        let tok = tokenizer(key);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..400 {
            let text = random_text(&mut rng);
            let ids = tok.encode(&text, rng.below(2) == 0).unwrap();
            let full = tok.decode(&ids, true).unwrap();
            let (streamed, chunks) = detokenize_all(&tok, &ids);
            assert_eq!(streamed, full, "{key} {text:?} {ids:?}");
            let fffd_full = full.matches('\u{FFFD}').count();
            let fffd_chunks: usize = chunks.iter().map(|c| c.matches('\u{FFFD}').count()).sum();
            assert_eq!(fffd_chunks, fffd_full, "{key}: a character was split across chunks of {text:?}: {chunks:?}");
        }
    }
}

/// Ids a model may sample in any order: byte-fallback / partial-UTF-8 tokens next to words,
/// spaces and special tokens. The stream never stalls and still equals the one-shot decode.
#[test]
fn incremental_detokenizer_equals_full_decode_on_arbitrary_ids() {
    for key in ["tinyllama", "llama3"] {
        let tok = tokenizer(key);
        let vocab = tok.vocab_size() as u32;
        // Tokens whose text alone is not complete UTF-8 (the <0xNN> tokens; byte-level pieces).
        let partial: Vec<u32> = (0..vocab).filter(|&id| tok.decode(&[id], false).unwrap().contains('\u{FFFD}')).collect();
        assert!(partial.len() >= 128, "{key}: only {} partial tokens", partial.len());
        let words: Vec<u32> = tok.encode(" Hello world, the café 日本 😀", false).unwrap();
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..300 {
            let ids: Vec<u32> = (0..1 + rng.below(24))
                .map(|_| match rng.below(8) {
                    0..=3 => *rng.pick(&partial),
                    4 | 5 => *rng.pick(&words),
                    6 => rng.below(vocab as usize) as u32,
                    _ => *rng.pick(&[0, 1, 2, 128000, 128009].map(|i: u32| i.min(vocab - 1))),
                })
                .collect();
            let (streamed, _) = detokenize_all(&tok, &ids);
            assert_eq!(streamed, tok.decode(&ids, true).unwrap(), "{key} {ids:?}");
        }
    }
}

/// A long run of byte-fallback characters streams (held at most 64 ids), still exactly.
#[test]
fn long_byte_fallback_run_streams_before_it_ends() {
    let tl = tokenizer("tinyllama");
    let text = "𠜎".repeat(40);
    let ids = tl.encode(&text, false).unwrap();
    assert!(ids.len() > 150, "{} ids", ids.len());
    let (streamed, chunks) = detokenize_all(&tl, &ids);
    assert_eq!(streamed, text);
    let before_end: String = chunks[..100].concat();
    assert!(before_end.len() >= "𠜎".len() * 10, "held back too long: {before_end:?}");
}

/// Text that contains U+FFFD itself (an invalid byte a model emitted, or the character) streams
/// too: a trailing U+FFFD is held at most 64 ids, not to the end (which held everything after it
/// and decoded an ever-growing window on every push). Ids that decode to nothing (special
/// tokens, ids past the vocabulary) in long runs change nothing. Found by the tokenizer fuzz
/// target (fuzz/regressions/tokenizer/).
#[test]
fn text_with_replacement_characters_streams_before_it_ends() {
    for key in ["tinyllama", "llama3"] {
        let tok = tokenizer(key);
        let text = format!("{} and then some words", "\u{FFFD}".repeat(100));
        let ids = tok.encode(&text, false).unwrap();
        let (streamed, chunks) = detokenize_all(&tok, &ids);
        assert_eq!(streamed, tok.decode(&ids, true).unwrap(), "{key}");
        let n = chunks.len();
        assert!(!chunks[..n - 1].concat().is_empty(), "{key}: everything was held to the end");
        // 5000 ids past the vocabulary between two words
        let mut ids = tok.encode("Hello", false).unwrap();
        ids.extend(std::iter::repeat_n(tok.vocab_size() as u32 + 7, 5000));
        ids.extend(tok.encode(" world", false).unwrap());
        assert_eq!(detokenize_all(&tok, &ids).0, tok.decode(&ids, true).unwrap(), "{key}");
    }
}

#[test]
fn tokenizer_and_detokenizer_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<Detokenizer>();
}
