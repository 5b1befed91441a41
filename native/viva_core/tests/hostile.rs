//! The whole load path (`Llm::load`) on a real fixture with one hostile file swapped in: each
//! gives its error before anything is sized by the hostile value, never an abort (an abort
//! would kill this test binary), and a model loaded before still generates the same tokens.
mod common;

use std::path::{Path, PathBuf};

use viva_core::llm::{Device, GenerateOptions, Llm, LoadOptions};
use viva_core::Error;

/// A copy of a fixture folder (config, weights linked, tokenizer) in a fresh temp folder.
struct Copy(PathBuf);

impl Copy {
    fn of(fixture: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("viva_hostile_{}_{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(common::fixture(fixture)).unwrap() {
            let p = e.unwrap().path();
            let to = dir.join(p.file_name().unwrap());
            if p.extension().is_some_and(|x| x == "safetensors") {
                std::os::unix::fs::symlink(&p, &to).unwrap();
            } else {
                std::fs::copy(&p, &to).unwrap();
            }
        }
        Copy(dir)
    }

    /// config.json with `key` set to `value`.
    fn set_config(&self, key: &str, value: serde_json::Value) {
        let p = self.0.join("config.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v[key] = value;
        std::fs::write(&p, v.to_string()).unwrap();
    }

    fn load(&self) -> viva_core::Result<Llm> {
        Llm::load(&self.0, &cpu())
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cpu() -> LoadOptions {
    LoadOptions { device: Device::Cpu, ..Default::default() }
}

fn greedy(llm: &Llm) -> Vec<u32> {
    llm.generate("Hello", &GenerateOptions { max_new_tokens: 8, stop_on_eos: false, ..Default::default() }).unwrap().tokens
}

#[test]
fn hostile_config_dimensions_fail_the_load_cleanly() {
    let before = Llm::load(&common::fixture("tiny_gqa"), &cpu()).unwrap();
    let tokens = greedy(&before);
    let huge = |e: u32| serde_json::json!(1u64 << e);
    let cases: Vec<(&str, serde_json::Value, Box<dyn Fn(&Error) -> bool>)> = vec![
        ("num_hidden_layers", huge(50), Box::new(|e| e == &Error::MissingTensor("model.layers.2.input_layernorm.weight".into()))),
        ("hidden_size", huge(40), Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name == "model.embed_tokens.weight"))),
        ("vocab_size", huge(50), Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name == "model.embed_tokens.weight"))),
        ("intermediate_size", huge(50), Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name.ends_with("gate_proj.weight")))),
        ("num_attention_heads", huge(40), Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name.ends_with("q_proj.weight")))),
        ("num_key_value_heads", huge(40), Box::new(|e| matches!(e, Error::BadFormat { detail, .. } if detail.contains("num_key_value_heads")))),
        ("head_dim", huge(40), Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name.ends_with("q_proj.weight")))),
        ("max_position_embeddings", huge(50), Box::new(|e| matches!(e, Error::BadFormat { detail, .. } if detail.contains("max_position_embeddings")))),
    ];
    for (key, value, want) in cases {
        let c = Copy::of("tiny_gqa", key);
        c.set_config(key, value);
        match c.load() {
            Err(e) => assert!(want(&e), "{key}: {e:?}"),
            Ok(_) => panic!("{key}: loaded"),
        }
    }
    assert_eq!(greedy(&before), tokens, "the model loaded before still generates the same tokens");
}

#[test]
fn hostile_files_beside_the_weights_fail_the_load_cleanly() {
    // a chat template that loops forever: the load succeeds, chat stops at the fuel limit
    let c = Copy::of("tiny_gqa", "template");
    std::fs::write(
        c.0.join("tokenizer_config.json"),
        r#"{"chat_template": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"}"#,
    )
    .unwrap();
    let llm = c.load().unwrap();
    let msgs = [viva_core::chat::Message { role: "user".into(), content: "hi".into() }];
    match llm.chat(&msgs, &GenerateOptions::default()) {
        Err(Error::BadFormat { file, .. }) => assert_eq!(file, "chat_template"),
        other => panic!("{other:?}"),
    }
    // a tokenizer.json far past any real size: refused by its size, unread (sparse file)
    let c = Copy::of("tiny_gqa", "big_tokenizer");
    std::fs::File::create(c.0.join("tokenizer.json")).unwrap().set_len(viva_core::alloc::MAX_TOKENIZER_JSON + 1).unwrap();
    assert!(matches!(c.load(), Err(Error::BadFormat { file, .. }) if Path::new(&file).ends_with("tokenizer.json")));
}

/// A GGUF (the fuzz seed: SmolLM2's metadata shrunk to a one-block model of every tensor
/// type) whose `llama.*` dimension `key` (a u32) is replaced by `value`.
fn gguf_with(key: &str, value: u32) -> PathBuf {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/gguf/seed_smollm2_tiny");
    let mut bytes = std::fs::read(seed).unwrap();
    let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap() + key.len();
    assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    let p = std::env::temp_dir().join(format!("viva_hostile_{}_{key}.gguf", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn hostile_gguf_dimensions_fail_the_load_cleanly() {
    let fine = gguf_with("llama.block_count", 1);
    let llm = Llm::load(&fine, &cpu()).unwrap();
    assert_eq!(llm.config.num_hidden_layers, 1);
    let cases: Vec<(&str, Box<dyn Fn(&Error) -> bool>)> = vec![
        ("llama.block_count", Box::new(|e| e == &Error::MissingTensor("model.layers.1.input_layernorm.weight".into()))),
        ("llama.embedding_length", Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name == "model.embed_tokens.weight"))),
        ("llama.feed_forward_length", Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name.ends_with("gate_proj.weight")))),
        ("llama.vocab_size", Box::new(|e| matches!(e, Error::ShapeMismatch { name, .. } if name == "model.embed_tokens.weight"))),
        ("llama.context_length", Box::new(|e| matches!(e, Error::BadFormat { detail, .. } if detail.contains("max_position_embeddings")))),
    ];
    for (key, want) in cases {
        let p = gguf_with(key, 1 << 31);
        match Llm::load(&p, &cpu()) {
            Err(e) => assert!(want(&e), "{key}: {e:?}"),
            Ok(_) => panic!("{key}: loaded"),
        }
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(fine);
}

/// KV caches and scratch are sized by a request (prompt + max_new_tokens, or the low-level
/// kv_cache_new's max_seq): past the engine's context cap, or past memory, an error.
#[test]
fn kv_cache_sizes_past_memory_are_errors() {
    let llm = Llm::load(&common::fixture("tiny_gqa"), &cpu()).unwrap();
    let model = llm.model().unwrap();
    let cap = viva_core::config::MAX_POSITION_EMBEDDINGS;
    assert!(matches!(
        viva_core::backend::cpu::state::DecodeState::new(model, cap + 1),
        Err(Error::ContextOverflow { needed, max }) if needed == cap + 1 && max == cap
    ));
    assert!(matches!(viva_core::backend::cpu::state::DecodeState::new(model, usize::MAX), Err(Error::ContextOverflow { .. })));
    // a config whose KV cache is ~2^48 bytes, and one whose size overflows usize
    let mut cfg = llm.config.clone();
    cfg.num_hidden_layers = 1 << 12;
    cfg.num_key_value_heads = 1 << 8;
    assert_eq!(viva_core::kv::SeqKv::private(viva_core::kv::KvDims::of(&cfg), cap).err(), Some(Error::OutOfMemory));
    cfg.num_hidden_layers = 1 << 40;
    assert_eq!(viva_core::kv::SeqKv::private(viva_core::kv::KvDims::of(&cfg), cap).err(), Some(Error::OutOfMemory));
    // max_new_tokens past the model's context: refused before anything is sized by it
    let opts = GenerateOptions { max_new_tokens: usize::MAX / 2, ..Default::default() };
    assert!(matches!(llm.generate("Hello", &opts), Err(Error::ContextOverflow { .. })));
    assert_eq!(greedy(&llm), greedy(&Llm::load(&common::fixture("tiny_gqa"), &cpu()).unwrap()));
}
