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

/// Renders `source` with three short messages on a thread with a dirty CPU scheduler's default
/// stack (40 kilowords): the BEAM renders chat templates there.
fn render_on_dirty_stack(source: &str) -> viva_core::Result<String> {
    let t = ChatTemplate::new(source.into(), "<s>".into(), "</s>".into(), std::path::Path::new("tokenizer_config.json"));
    let msgs: Vec<Message> = ["system", "user", "assistant"]
        .iter()
        .map(|r| Message { role: r.to_string(), content: format!("a {r} message") })
        .collect();
    std::thread::Builder::new().stack_size(320 * 1024).spawn(move || t.render(&msgs, true)).unwrap().join().unwrap()
}

#[track_caller]
fn assert_template_limit(source: &str, needle: &str) {
    match render_on_dirty_stack(source) {
        Err(viva_core::Error::BadFormat { file, detail }) => {
            assert_eq!(file, "chat_template");
            assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
        }
        other => panic!("expected bad_format chat_template, got {other:?}"),
    }
}

/// A hostile template stops at a bound (fuel, recursion, output size) with
/// `BadFormat { file: "chat_template" }` instead of pinning a scheduler or its memory.
#[test]
fn hostile_templates_hit_a_limit() {
    // 10^10 iterations (range itself caps one range at 10^5 items; nesting multiplies)
    assert_template_limit("{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}", "fuel");
    // a macro calling itself without end, on the small stack
    assert_template_limit("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion");
    // nested loops calling a recursive macro: recursion depth, not the stack, stops it
    assert_template_limit("{% macro f(n) %}{% for m in messages %}{% if n < 1000 %}{{ f(n + 1) }}{% endif %}{% endfor %}{% endmacro %}{{ f(0) }}", "recursion");
    // 2 MB of output from a little work: the output bound
    assert_template_limit("{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}", "output exceeds");
    // one huge string (100 MB): fuel is charged before it is made
    assert_template_limit("{{ 'x' * 100000000 }}", "fuel");
    // a string doubled until it is huge
    assert_template_limit("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", "fuel");
    // a real template with many messages stays well inside the bounds
    let t = ChatTemplate::from_tokenizer_config(&models_dir().join("llama3-tokenizer").join("tokenizer_config.json")).unwrap().unwrap();
    let long: Vec<Message> =
        (0..2000).map(|i| Message { role: ["user", "assistant"][i % 2].into(), content: "word ".repeat(200) }).collect();
    assert!(t.render(&long, true).unwrap().len() > 2000 * 1000);
}
