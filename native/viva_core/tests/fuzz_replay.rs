//! Replays the fuzz corpora (`fuzz/corpus/<target>/`, seeds and what libFuzzer kept) and the
//! inputs that once failed (`fuzz/regressions/<target>/`) through the fuzz targets' bodies,
//! without libFuzzer: every run of the tests re-checks them (see fuzz/README.md).
use std::path::PathBuf;

#[path = "../../../fuzz/src/targets.rs"]
mod targets;

fn replay(target: &str, body: fn(&[u8])) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| body(&bytes));
            assert!(r.is_ok(), "{target}: {} fails", f.display());
            n += 1;
        }
    }
    assert!(n > 0, "no corpus for {target} under {}", root.display());
}

#[test]
fn safetensors() {
    replay("safetensors", targets::safetensors);
}

#[test]
fn index_json() {
    replay("index_json", targets::index_json);
}

#[test]
fn config_json() {
    replay("config_json", targets::config_json);
}

#[test]
fn gguf() {
    replay("gguf", targets::gguf);
}

#[test]
fn gguf_tokenizer() {
    replay("gguf_tokenizer", targets::gguf_tokenizer);
}

#[test]
fn tokenizer() {
    replay("tokenizer", targets::tokenizer);
}

#[test]
fn chat_template() {
    replay("chat_template", targets::chat_template);
}
