//! The batched CPU decode step (`DecodeState::step_many` → `Model::forward_multi`) gives every
//! sequence bit for bit the logits it gets stepped alone, in every weight format and both
//! activation modes, for sequences at different positions.
mod common;

use viva_core::backend::cpu::state::DecodeState;
use viva_core::formats::{Activations, WeightFormat};
use viva_core::llm::{Llm, LoadOptions};

#[test]
fn a_batched_step_equals_each_sequence_alone() {
    for (name, weights, activations) in [
        ("tiny_gqa", WeightFormat::Native, Activations::F32),
        ("tiny_gqa", WeightFormat::Bf16, Activations::F32),
        ("tiny_gqa", WeightFormat::default(), Activations::F32),
        ("tiny_tied_llama3", WeightFormat::default(), Activations::F32),
        ("tiny_mha_sharded", WeightFormat::Native, Activations::F32),
        ("tiny_tied_llama3", WeightFormat::default(), Activations::Bf16),
    ] {
        let llm = Llm::load(&common::fixture(name), &LoadOptions { weights, activations, ..LoadOptions::default() }).unwrap();
        let model = llm.model().unwrap();
        let pool = model.kv_pool.get().unwrap();
        let vocab = llm.config.vocab_size as u32;
        let prompts: Vec<Vec<u32>> = (0..5u32).map(|i| (0..3 + 7 * i).map(|t| (t * 31 + i * 17 + 1) % vocab).collect()).collect();
        let make = || -> Vec<DecodeState> {
            prompts
                .iter()
                .map(|p| {
                    let mut s = DecodeState::with_kv(model, 64, Some(pool)).unwrap();
                    s.prefill(model, p).unwrap();
                    s
                })
                .collect()
        };
        let (mut together, mut alone) = (make(), make());
        for step in 0..6u32 {
            let ids: Vec<u32> = (0..5u32).map(|i| (step * 13 + i * 7 + 2) % vocab).collect();
            let mut batch: Vec<(&mut DecodeState, u32)> = together.iter_mut().zip(&ids).map(|(s, &id)| (s, id)).collect();
            DecodeState::step_many(model, &mut batch).unwrap();
            for (i, s) in alone.iter_mut().enumerate() {
                let pos = s.filled();
                s.step_at(model, ids[i], pos).unwrap();
                assert_eq!(together[i].logits(), s.logits(), "{name} {weights:?} {activations:?}: sequence {i} step {step}");
                assert_eq!(together[i].filled(), s.filled());
            }
        }
    }
}
