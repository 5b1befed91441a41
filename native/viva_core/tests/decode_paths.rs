//! The prompt fed as one batched pass (generate: GEMMs) against fed one token at a time (the
//! decode_step NIFs: GEMVs), then the same greedy steps.
//!
//! Known failure (issue 16), hence `#[ignore]`: on an AVX2-only CPU, tiny_tied_llama3 with fp8
//! weights and bf16 activations parts at generated token 8. Cause: the GEMM sums each output as
//! one FMA chain over k, the decode GEMV in 4 × 8 lanes plus a tree; the K/V rows then differ by
//! ~1 ulp (2.4e-7), a bf16 rounding of some activation flips (2^-8 relative), and a near-tie
//! (top-2 margin 5e-4 at that step) goes the other way. The same holds at every SIMD level and
//! weight format (only the luck differs): tokens agree only if GEMV and GEMM sum in one order.
mod common;

use common::fixture;
use viva_core::llm::{GenerateOptions, Llm, LoadOptions};
use viva_core::sampling::argmax;
use viva_core::backend::cpu::state::DecodeState;
use viva_core::weights::{Activations, WeightFormat};

const STEPS: usize = 20;

/// Greedy tokens after feeding `prompt` batched (`prefill`) or one position at a time.
fn greedy(llm: &Llm, prompt: &[u32], prefill: bool) -> Vec<u32> {
    let m = llm.model().unwrap();
    let mut st = DecodeState::new(m, prompt.len() + STEPS).unwrap();
    let mut next = if prefill {
        argmax(st.prefill(m, prompt).unwrap())
    } else {
        let mut n = 0;
        for (pos, &id) in prompt.iter().enumerate() {
            n = argmax(st.step_at(m, id, pos).unwrap());
        }
        n
    };
    let mut got = vec![next];
    while got.len() < STEPS {
        let pos = st.filled();
        next = argmax(st.step_at(m, next, pos).unwrap());
        got.push(next);
    }
    got
}

#[test]
#[ignore = "known failure on AVX2 (issue 16): GEMM and GEMV sum in different orders"]
fn a_prompt_fed_batched_or_stepped_gives_the_same_tokens() {
    for name in ["tiny_gqa", "tiny_mha_sharded", "tiny_tied_llama3"] {
        for (weights, activations) in [
            (WeightFormat::Native, Activations::F32),
            (WeightFormat::default(), Activations::F32),
            (WeightFormat::Native, Activations::Bf16),
            (WeightFormat::default(), Activations::Bf16),
        ] {
            let llm = Llm::load(&fixture(name), &LoadOptions { weights, activations, ..Default::default() }).unwrap();
            let prompt = llm.tokenizer.encode("The quick brown fox jumps over the lazy dog.", true).unwrap();
            let want = llm.generate_ids(&prompt, &GenerateOptions { max_new_tokens: STEPS, stop_on_eos: false, ..Default::default() }).unwrap().tokens;
            assert_eq!(greedy(&llm, &prompt, true), want, "{name} {weights:?} {activations:?}: prefill path");
            assert_eq!(greedy(&llm, &prompt, false), want, "{name} {weights:?} {activations:?}: stepped prompt");
        }
    }
}
