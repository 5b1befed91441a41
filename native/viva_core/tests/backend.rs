//! The backend interface (backend/mod.rs) as the facade and the coming scheduler use it.
mod common;

use common::fixture;
use viva_core::backend::{Backend, Seq};
use viva_core::llm::{GenerateOptions, Llm, LoadOptions};

const STEPS: usize = 8;

/// Two sequences stepped together in one batch give each one's tokens from `generate` alone.
#[test]
fn a_batched_step_equals_each_sequence_alone() {
    let llm = Llm::load(&fixture("tiny_gqa"), &LoadOptions::default()).unwrap();
    let greedy = GenerateOptions { max_new_tokens: STEPS, stop_on_eos: false, ..GenerateOptions::default() };
    let prompts: Vec<Vec<u32>> = ["The quick brown fox", "Hello"].iter().map(|p| llm.tokenizer.encode(p, true).unwrap()).collect();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| llm.generate_ids(p, &greedy).unwrap().tokens).collect();

    let e = llm.engine().unwrap();
    let mut seqs: Vec<Seq> = prompts
        .iter()
        .map(|p| {
            let mut s = e.new_seq(p.len() + STEPS).unwrap();
            e.prefill(&mut s, p).unwrap();
            s
        })
        .collect();
    let mut got = vec![Vec::new(); seqs.len()];
    for step in 0..STEPS {
        let ids: Vec<u32> = seqs.iter_mut().map(|s| e.argmax(s).unwrap()).collect();
        for (g, &id) in got.iter_mut().zip(&ids) {
            g.push(id);
        }
        if step + 1 < STEPS {
            let mut batch: Vec<(&mut Seq, u32)> = seqs.iter_mut().zip(ids).collect();
            e.step(&mut batch).unwrap();
        }
    }
    assert_eq!(got, want);
    for (s, p) in seqs.iter().zip(&prompts) {
        assert_eq!(e.filled(s), p.len() + STEPS - 1);
    }
    // top-1 candidate is the argmax; logits are the vocab
    let s = &mut seqs[0];
    assert_eq!(e.top_k(s, 1).unwrap()[0].0, e.argmax(s).unwrap());
    assert_eq!(e.logits(s).unwrap().len(), llm.config.vocab_size);
}

/// `backend::info()` says which CPU kernels run; the switches in this process's environment show.
#[test]
fn info_reports_the_cpu_level_and_kernels() {
    let i = viva_core::backend::info();
    let t = viva_core::tuning::get();
    assert_eq!(i.cpu_level, t.cpu_level());
    for k in ["cpu_level", "gemv", "gemm_f32", "gemm_bf16", "attention"] {
        assert!(i.cpu_kernels.iter().any(|(n, _)| *n == k), "{k} missing from {:?}", i.cpu_kernels);
    }
    let on = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0");
    if on("VIVA_NO_AVX2") && (on("VIVA_NO_AVX512") || !t.cpu_has.avx512) {
        assert_eq!(i.cpu_level, "portable");
        assert!(!viva_core::backend::cpu::simd::avx2());
    }
    assert_eq!(viva_core::backend::cpu::simd::avx512(), t.avx512);
}
