//! Chat templates rendered by minijinja against transformers' apply_chat_template
//! (test/fixtures/chat/make_expected.py): the real TinyLlama and Llama-3 tokenizer configs.
use std::path::PathBuf;

use viva_core::chat::{ChatTemplate, Message};

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("VIVA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"));
    assert!(dir.is_dir(), "VIVA_MODELS ({}) is not a directory", dir.display());
    dir
}

fn expected() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/chat/expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("chat expected.json")).expect("json")
}

pub fn messages(v: &serde_json::Value) -> Vec<Message> {
    v.as_array()
        .expect("messages")
        .iter()
        .map(|m| Message { role: m["role"].as_str().unwrap().into(), content: m["content"].as_str().unwrap().into() })
        .collect()
}

#[test]
fn renders_exactly_as_transformers() {
    let exp = expected();
    for (key, dir) in [("tinyllama", "tinyllama-1.1b-chat"), ("llama3", "llama3-tokenizer")] {
        let t = ChatTemplate::from_tokenizer_config(&models_dir().join(dir).join("tokenizer_config.json"))
            .unwrap()
            .expect("has a chat_template");
        for case in exp["cases"][key].as_array().unwrap() {
            let got = t.render(&messages(&case["messages"]), case["add_generation_prompt"].as_bool().unwrap()).unwrap();
            assert_eq!(got, case["text"].as_str().unwrap(), "{key}");
        }
    }
}

#[test]
fn template_errors_are_bad_format() {
    let origin = std::path::Path::new("tokenizer_config.json");
    let broken = ChatTemplate::new("{% for m in messages %}".into(), String::new(), String::new(), origin);
    assert!(matches!(broken.render(&[], true), Err(viva_core::Error::BadFormat { .. })));
    let raising = ChatTemplate::new("{{ raise_exception('no system role') }}".into(), String::new(), String::new(), origin);
    match raising.render(&[], true) {
        Err(viva_core::Error::BadFormat { detail, .. }) => assert!(detail.contains("no system role"), "{detail}"),
        other => panic!("{other:?}"),
    }
}
