//! One function per parser of untrusted bytes. libFuzzer drives them (`fuzz/fuzz_targets/`,
//! `scripts/fuzz.sh`) and `native/viva_core/tests/fuzz_replay.rs` replays the corpora through
//! them on every test run. On any input each must return (an `Err` is the expected outcome):
//! no panic, no hang, no allocation the input cannot bound, and never `Error::Internal`.
use std::path::Path;

use viva_core::chat::{ChatTemplate, Message, TEMPLATE_FILE};
use viva_core::config::ModelConfig;
use viva_core::gguf::Gguf;
use viva_core::safetensors::{parse_index, Checkpoint};
use viva_core::tokenizer::{Detokenizer, Tokenizer};
use viva_core::Error;

/// Errors from hostile input are the input's fault; `Internal` is a bug.
fn not_internal<T>(r: &viva_core::Result<T>) {
    if let Err(Error::Internal(msg)) = r {
        panic!("internal error on fuzzed input: {msg}");
    }
}

/// A `.safetensors` file: header, entries, then every tensor read, and the config that the
/// shapes imply (infer + validate + check against the tensors).
pub fn safetensors(data: &[u8]) {
    let r = Checkpoint::from_bytes(Path::new("fuzz.safetensors"), data.to_vec());
    not_internal(&r);
    let Ok(ckpt) = r else { return };
    for name in ckpt.names() {
        if let Ok(t) = ckpt.get(name) {
            assert_eq!(Some(t.shape.as_slice()), ckpt.shape(name));
            assert_eq!(t.to_f32_vec().len(), t.numel());
        }
    }
    if let Ok(cfg) = ModelConfig::infer(&ckpt) {
        if cfg.validate().is_ok() {
            not_internal(&cfg.check_tensors(&ckpt));
        }
    }
}

/// `model.safetensors.index.json`.
pub fn index_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        not_internal(&parse_index(text, Path::new("model.safetensors.index.json")));
    }
}

/// `config.json` → ModelConfig (parse, then validate).
pub fn config_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let r = ModelConfig::from_json_str(text, Path::new("config.json"));
        not_internal(&r);
        if let Ok(cfg) = r {
            not_internal(&cfg.validate());
        }
    }
}

/// A GGUF file: header, metadata, tensor infos and offsets; every tensor dequantized; the
/// llama config, the tensors under HF names checked against it and made. (What the metadata
/// says about the tokenizer and the chat template: [`gguf_tokenizer`].)
pub fn gguf(data: &[u8]) {
    let r = Gguf::from_bytes(Path::new("fuzz.gguf"), data.to_vec());
    not_internal(&r);
    let Ok(g) = r else { return };
    for name in g.tensor_names() {
        if let Ok((shape, values)) = g.dequantize(name) {
            assert_eq!(shape.iter().product::<usize>(), values.len());
        }
    }
    if let Ok(cfg) = g.llama_config() {
        let r = g.to_checkpoint(&cfg);
        not_internal(&r);
        if let Ok(ckpt) = r {
            for name in ckpt.names() {
                if let Ok(t) = ckpt.get(name) {
                    assert_eq!(Some(t.shape.as_slice()), ckpt.shape(name));
                }
            }
            not_internal(&cfg.check_tensors(&ckpt));
        }
    }
}

/// A GGUF file (metadata; its seeds have no tensors) as the tokenizer sees it: the
/// tokenizer.json built from the `tokenizer.ggml.*` metadata, loaded and used; the chat
/// template (`tokenizer.chat_template`, BOS/EOS from the token list) rendered. Split from
/// [`gguf`] so that each gets its own executions: building a tokenizer costs far more than
/// parsing the file.
pub fn gguf_tokenizer(data: &[u8]) {
    let path = Path::new("fuzz.gguf");
    let r = Gguf::from_bytes(path, data.to_vec());
    not_internal(&r);
    let Ok(g) = r else { return };
    if let Some(t) = viva_core::gguf::tokenizer::chat_template(&g) {
        render_checked(&t, &sample_messages(), true);
    }
    let json = viva_core::gguf::tokenizer::tokenizer_json(&g);
    not_internal(&json);
    if let Ok(json) = json {
        if let Ok(tok) = Tokenizer::from_bytes(json.as_bytes(), path) {
            exercise_tokenizer(&tok, "Hello world! 123 <s>\n\u{1F600}".as_bytes(), false);
        }
    }
}

/// Byte 0 picks the mode. Even: the rest is a tokenizer.json, loaded and (when it loads)
/// used. Odd: the rest is text and ids for one of the fixture tokenizers (SentencePiece-style
/// and byte-level BPE), which must encode, decode and stream it without an error.
pub fn tokenizer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        if let Ok(tok) = Tokenizer::from_bytes(rest, Path::new("tokenizer.json")) {
            exercise_tokenizer(&tok, "Hello world! 123 <s>\n\u{1F600}".as_bytes(), false);
            // a slice of the document as text: the whole of a 60 kB document is slow to encode
            exercise_tokenizer(&tok, &rest[..rest.len().min(256)], false);
        }
    } else {
        exercise_tokenizer(&fixture_tokenizers()[usize::from(mode / 2) % 2], rest, true);
    }
}

/// Encode `bytes` (lossy UTF-8) both ways, decode the ids back, and decode / stream ids made
/// of the raw bytes (u16 LE, some past the vocabulary). `trusted`: a real tokenizer, which
/// must not fail, and whose streamed chunks concatenate to the whole decode.
fn exercise_tokenizer(tok: &Tokenizer, bytes: &[u8], trusted: bool) {
    // every step is linear in the text; past 1 kB an input only costs time (a 4.7 kB one took
    // > 1 s under the sanitizer), while a superlinear step still shows within it
    let bytes = &bytes[..bytes.len().min(1024)];
    let text = String::from_utf8_lossy(bytes);
    for special in [false, true] {
        let ids = tok.encode(&text, special);
        if trusted {
            let ids = ids.expect("a fixture tokenizer encodes any text");
            tok.decode(&ids, !special).expect("a fixture tokenizer decodes its own ids");
            stream(tok, &ids, trusted);
        } else if let Ok(ids) = ids {
            let _ = tok.decode(&ids, !special);
        }
    }
    let past = tok.vocab_size() as u32 + 8;
    let ids: Vec<u32> = bytes.chunks(2).map(|c| u32::from(c[0]) | u32::from(*c.get(1).unwrap_or(&0)) << 8).map(|id| id % past).collect();
    let decoded = tok.decode(&ids, false);
    if trusted {
        decoded.expect("a fixture tokenizer decodes any id list");
    }
    stream(tok, &ids, trusted);
}

/// The incremental detokenizer over `ids`; for a real tokenizer its chunks must concatenate
/// to `decode(ids, skip_special_tokens = true)` (its documented contract, which holds while no
/// run of held ids reaches its 64-id cap: checked on inputs shorter than that), up to the
/// number of U+FFFD in a long run of invalid bytes.
fn stream(tok: &Tokenizer, ids: &[u32], trusted: bool) {
    let mut d = Detokenizer::new();
    let mut text = String::new();
    for &id in ids {
        match d.push(tok, id) {
            Ok(chunk) => text.push_str(&chunk),
            Err(e) if trusted => panic!("detokenizer push: {e}"),
            Err(_) => return,
        }
    }
    match d.finish(tok) {
        Ok(chunk) => text.push_str(&chunk),
        Err(e) if trusted => panic!("detokenizer finish: {e}"),
        Err(_) => return,
    }
    if trusted && ids.len() < 64 {
        let whole = tok.decode(ids, true).unwrap();
        assert_eq!(collapse_fffd(&text), collapse_fffd(&whole), "streamed chunks differ from the whole decode of {ids:?}");
    }
}

/// Runs of U+FFFD as one: how many U+FFFD a run of invalid bytes longer than the
/// detokenizer's hold (8 ids) decodes to depends on where the stream cut it.
fn collapse_fffd(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '\u{FFFD}' && out.ends_with('\u{FFFD}')) {
            out.push(c);
        }
    }
    out
}

fn fixture_tokenizers() -> &'static [Tokenizer; 2] {
    static TOKS: std::sync::OnceLock<[Tokenizer; 2]> = std::sync::OnceLock::new();
    TOKS.get_or_init(|| {
        let load = |bytes: &[u8], name: &str| Tokenizer::from_bytes(bytes, Path::new(name)).expect("fixture tokenizer");
        [
            load(include_bytes!("../../test/fixtures/tiny_gqa/tokenizer.json"), "tiny_gqa"),
            load(include_bytes!("../../test/fixtures/tiny_tied_llama3/tokenizer.json"), "tiny_tied_llama3"),
        ]
    })
}

/// A chat template and its messages, both from the input (lossy UTF-8): the template source,
/// then NUL-separated role, content, role, content, ...; the input's length parity picks
/// `add_generation_prompt`.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or("").to_string();
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<Message> = rest
        .chunks(2)
        .map(|c| Message { role: c[0].to_string(), content: c.get(1).unwrap_or(&"").to_string() })
        .collect();
    let t = ChatTemplate::new(source, "<s>".into(), "</s>".into(), Path::new("fuzz"));
    render_checked(&t, &messages, data.len() % 2 == 0);
}

fn sample_messages() -> Vec<Message> {
    [("system", "Be brief."), ("user", "Hi!"), ("assistant", "Hello."), ("user", "2+2?")]
        .iter()
        .map(|(r, c)| Message { role: r.to_string(), content: c.to_string() })
        .collect()
}

/// Stack of the thread a render runs on: a dirty CPU scheduler's default (40 kilowords),
/// four times that under the fuzzer (sanitizer frames are larger).
#[allow(unexpected_cfgs)]
const RENDER_STACK: usize = if cfg!(fuzzing) { 4 * 320 * 1024 } else { 320 * 1024 };

/// Renders on a thread with a dirty scheduler's stack; a failure must be
/// `BadFormat { file: "chat_template", .. }`.
fn render_checked(t: &ChatTemplate, messages: &[Message], add_generation_prompt: bool) {
    let r = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(RENDER_STACK)
            .spawn_scoped(s, || t.render(messages, add_generation_prompt))
            .expect("spawn the render thread")
            .join()
    });
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(Error::BadFormat { file, .. })) if file == TEMPLATE_FILE => {}
        Ok(Err(e)) => panic!("template error is not bad_format chat_template: {e:?}"),
        Err(p) => std::panic::resume_unwind(p),
    }
}
