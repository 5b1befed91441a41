//! Llm::load / generate behaviour beyond HF parity: options, limits, num_layers, concurrency,
//! damaged checkpoints (made by copying a fixture into a temp dir).
mod common;

use common::fixture;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use viva_core::llm::{Device, GenerateOptions, Llm, LoadOptions};
use viva_core::Error;


fn load(name: &str) -> Llm {
    Llm::load(&fixture(name), &LoadOptions::default()).expect("fixture loads")
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens: n, stop_on_eos: false, ..GenerateOptions::default() }
}

/// A copy of a fixture folder in a fresh temp dir.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("viva_gen_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn options_are_validated() {
    let llm = load("tiny_gqa");
    let bad = [
        GenerateOptions { temperature: -0.1, ..greedy(1) },
        GenerateOptions { temperature: f32::NAN, ..greedy(1) },
        GenerateOptions { top_k: Some(0), ..greedy(1) },
        GenerateOptions { top_k: Some(257), ..greedy(1) },
        GenerateOptions { top_p: 0.0, ..greedy(1) },
        GenerateOptions { top_p: 1.01, ..greedy(1) },
    ];
    for o in bad {
        assert!(matches!(llm.generate("hi", &o), Err(Error::InvalidOption { .. })), "{o:?}");
    }
    assert_eq!(llm.generate("hi", &greedy(0)).unwrap().tokens, Vec::<u32>::new());
}

#[test]
fn context_overflow_and_bad_prompts() {
    let llm = load("tiny_gqa"); // max_position_embeddings 128
    let prompt = vec![5u32; 100];
    assert_eq!(llm.generate_ids(&prompt, &greedy(29)), Err(Error::ContextOverflow { needed: 129, max: 128 }));
    assert_eq!(llm.generate_ids(&prompt, &greedy(28)).unwrap().tokens.len(), 28);
    assert_eq!(llm.generate_ids(&[], &greedy(1)), Err(Error::EmptyPrompt));
    assert_eq!(llm.generate_ids(&[1, 512], &greedy(1)), Err(Error::TokenOutOfRange { id: 512, vocab: 512 }));
}

#[test]
fn stop_on_eos_stops_and_keeps_the_eos_id() {
    let llm = load("tiny_gqa");
    let all = llm.generate("The quick brown fox", &greedy(20)).unwrap().tokens;
    // Pretend the 5th greedy token is an EOS: the same run must stop right after it.
    let dir = copy_fixture("tiny_gqa", "eos");
    edit_json(&dir.join("generation_config.json"), |v| v["eos_token_id"] = serde_json::json!([all[4]]));
    let llm2 = Llm::load(&dir, &LoadOptions::default()).unwrap();
    let first = all.iter().position(|&t| t == all[4]).unwrap();
    let opts = GenerateOptions { max_new_tokens: 20, ..GenerateOptions::default() };
    assert_eq!(llm2.generate("The quick brown fox", &opts).unwrap().tokens, all[..=first].to_vec());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn num_layers_loads_a_prefix_of_the_blocks() {
    let full = load("tiny_mha_sharded");
    let one = Llm::load(&fixture("tiny_mha_sharded"), &LoadOptions { num_layers: Some(1), ..Default::default() }).unwrap();
    assert_eq!(one.config.num_hidden_layers, 1);
    assert_ne!(full.last_logits(&[1, 5, 9]).unwrap(), one.last_logits(&[1, 5, 9]).unwrap());
    for n in [0, 4] {
        let r = Llm::load(&fixture("tiny_mha_sharded"), &LoadOptions { num_layers: Some(n), ..Default::default() });
        assert!(matches!(r, Err(Error::InvalidOption { .. })), "num_layers {n}");
    }
}

#[test]
fn result_counts_and_timings() {
    let llm = load("tiny_gqa");
    let prompt = llm.tokenizer.encode("The quick brown fox", true).unwrap();
    let r = llm.generate_ids(&prompt, &greedy(6)).unwrap();
    assert_eq!((r.prompt_tokens, r.tokens.len(), r.total_tokens), (prompt.len(), 6, prompt.len() + 6));
    assert_eq!(r.text, llm.tokenizer.decode(&r.tokens, true).unwrap());
    assert!(r.ms_per_token > 0.0 && r.prefill_ms > 0.0, "{r:?}");
    // one token: no decode step ran, so there is no decode speed to report
    let one = llm.generate_ids(&prompt, &greedy(1)).unwrap();
    assert_eq!((one.tokens.len(), one.ms_per_token), (1, 0.0));
    assert_eq!(one.tokens[0], r.tokens[0]);
}

#[test]
fn device_cuda_needs_a_gpu_and_cpu_always_works() {
    let info = viva_core::backend::info();
    let r = Llm::load(&fixture("tiny_gqa"), &LoadOptions { device: Device::Cuda, ..Default::default() });
    if info.cuda_available {
        assert_eq!(r.map(|l| l.backend()).ok(), Some("cuda"));
    } else {
        assert!(matches!(r, Err(Error::CudaUnavailable)), "{info:?}");
        assert_eq!(info.auto, "cpu");
        assert_ne!(info.cuda_reason, "ok");
    }
    let cpu = Llm::load(&fixture("tiny_gqa"), &LoadOptions { device: Device::Cpu, ..Default::default() }).unwrap();
    assert_eq!(cpu.backend(), "cpu");
    let auto = Llm::load(&fixture("tiny_gqa"), &LoadOptions::default()).unwrap();
    assert_eq!(auto.backend(), info.auto);
}

#[test]
fn one_model_serves_many_threads_at_once() {
    let llm = Arc::new(load("tiny_tied_llama3"));
    let want = llm.generate("Once upon a time", &greedy(16)).unwrap().tokens;
    let sampled = GenerateOptions { temperature: 0.9, top_k: Some(40), top_p: 0.95, seed: 7, ..greedy(16) };
    let want_sampled = llm.generate("Once upon a time", &sampled).unwrap().tokens;
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (llm, sampled) = (llm.clone(), sampled.clone());
            std::thread::spawn(move || {
                let o = if i % 2 == 0 { greedy(16) } else { sampled };
                llm.generate("Once upon a time", &o).unwrap().tokens
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(&h.join().unwrap(), if i % 2 == 0 { &want } else { &want_sampled });
    }
}

#[test]
fn damaged_checkpoints_give_clear_errors() {
    // wrong shape in config: hidden_size no longer matches the tensors
    let dir = copy_fixture("tiny_gqa", "shape");
    edit_json(&dir.join("config.json"), |v| v["intermediate_size"] = serde_json::json!(384));
    assert!(matches!(Llm::load(&dir, &LoadOptions::default()), Err(Error::ShapeMismatch { .. })));
    // a missing tensor: claim one more layer than stored
    edit_json(&dir.join("config.json"), |v| {
        v["intermediate_size"] = serde_json::json!(512);
        v["num_hidden_layers"] = serde_json::json!(3);
    });
    assert_eq!(
        Llm::load(&dir, &LoadOptions::default()).err(),
        Some(Error::MissingTensor("model.layers.2.input_layernorm.weight".into()))
    );
    // bad JSON
    std::fs::write(dir.join("config.json"), b"{\"hidden_size\": 25").unwrap();
    assert!(matches!(Llm::load(&dir, &LoadOptions::default()), Err(Error::BadFormat { .. })));
    // no tokenizer
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::copy(fixture("tiny_gqa/config.json"), dir.join("config.json")).unwrap();
    assert!(matches!(Llm::load(&dir, &LoadOptions::default()), Err(Error::NoTokenizer(_))));
    // ...unless one is given
    let opts = LoadOptions { tokenizer_path: Some(fixture("tiny_gqa/tokenizer.json")), ..Default::default() };
    assert!(Llm::load(&dir, &opts).is_ok());
    // truncated weights
    let w = dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(Llm::load(&dir, &opts), Err(Error::BadFormat { .. })));
    std::fs::remove_dir_all(dir).ok();
    assert!(matches!(Llm::load(Path::new("/nonexistent/model"), &LoadOptions::default()), Err(Error::FileNotFound(_))));
}

#[test]
fn decode_state_loop_reproduces_generate() {
    use viva_core::sampling::argmax;
    use viva_core::backend::cpu::state::DecodeState;
    for weights in [viva_core::weights::WeightFormat::Native, Default::default()] {
        let llm = Llm::load(&fixture("tiny_mha_sharded"), &LoadOptions { weights, ..Default::default() }).unwrap();
        let prompt = llm.tokenizer.encode("The quick brown fox", true).unwrap();
        let want = llm.generate_ids(&prompt, &greedy(12)).unwrap().tokens;
        let mut st = DecodeState::new(llm.model().unwrap(), 64).unwrap();
        let mut next = 0;
        for (pos, &id) in prompt.iter().enumerate() {
            next = argmax(st.step_at(llm.model().unwrap(), id, pos).unwrap());
        }
        let mut got = vec![next];
        while got.len() < 12 {
            let pos = prompt.len() + got.len() - 1;
            next = argmax(st.step_at(llm.model().unwrap(), next, pos).unwrap());
            got.push(next);
        }
        assert_eq!(got, want, "{weights:?}");
        // stepping past the filled length is refused; rewinding is allowed
        assert!(matches!(st.step_at(llm.model().unwrap(), 1, st.filled() + 1), Err(Error::InvalidOption { .. })));
        assert!(st.step_at(llm.model().unwrap(), prompt[0], 0).is_ok());
        assert_eq!(st.filled(), 1);
    }
}
