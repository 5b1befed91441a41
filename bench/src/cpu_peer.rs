//! Our side of the llama.cpp peer benchmark (issue 5): the same four measurements as
//! bench/peer/llama_cpp_bench.py, on our engine through viva_core's public API. Prints JSON.
//!
//! cargo run --release -p viva_bench --bin cpu_peer -- MODEL.gguf fp8|fp8-b<block>|bf16 [--runs N] [--ctx N] [--budget-s S] [--fill-budget-s S] [--activations f32|bf16] [--load-only]
//! (`--load-only`: load, greedy-generate 4 tokens, print config and tokens: the loader check.)
//!
//! - decode: 16-token prompt, then 64 greedy steps; tok/s = 1000 / `ms_per_token` (mean interval
//!   between consecutive sampled tokens: one forward step + argmax each).
//! - ppN: a prompt of exactly N ids, `prefill_ms` of `generate_ids` (max_new_tokens 1).
//! - ctx decode: the cache filled to `--ctx` positions, then 32 timed decode steps. The fill is a
//!   real prefill when it is predicted (from pp512) to take ≤ `--fill-budget-s`; otherwise the
//!   steps run at positions ctx.. over a zeroed cache ("zeroed-cache": attention reads the same
//!   ctx rows, so the step costs the same; only the fill time is saved). The JSON says which.
//!
//! Each measurement is repeated up to `--runs` times (median) but stops once it has used
//! `--budget-s` seconds (at least one run), so a slow engine still finishes; JSON has the counts.
//! Prompt ids: `peer_ids` (same formula as the Python side), BOS first.
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use viva_core::kv::{KvDims, SeqKv};
use viva_core::llm::{Device, GenerateOptions, Llm, LoadOptions};
use viva_core::backend::cpu::model::Scratch;
use viva_core::formats::fp8::Blocking;
use viva_core::sampling::Sampler;
use viva_core::weights::{Activations, WeightFormat};

const DECODE_PROMPT: usize = 16;
const DECODE_STEPS: usize = 64;
const CTX_STEPS: usize = 32;

/// Deterministic prompt ids in [100, vocab − 100), BOS first; mirrored in llama_cpp_bench.py.
fn peer_ids(n: usize, vocab: usize, bos: u32) -> Vec<u32> {
    let span = vocab.saturating_sub(200).max(1);
    (0..n).map(|i| if i == 0 { bos } else { (100 + (i * 7919) % span) as u32 }).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` (returns tok/s) up to `runs` times within `budget_s` (at least once); (median, count).
fn repeat(runs: usize, budget_s: f64, mut f: impl FnMut() -> Result<f64, Box<dyn std::error::Error>>) -> Result<(f64, usize), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let mut v = Vec::new();
    while v.len() < runs.max(1) && (v.is_empty() || t.elapsed().as_secs_f64() < budget_s) {
        v.push(f()?);
    }
    let n = v.len();
    Ok((median(v), n))
}

fn arg<T: std::str::FromStr>(args: &[String], key: &str, default: T) -> Result<T, Box<dyn std::error::Error>> {
    match args.iter().position(|a| a == key) {
        Some(i) => args.get(i + 1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("{key} needs a value").into()),
        None => Ok(default),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(fmt)) = (args.get(1), args.get(2)) else {
        return Err("usage: cpu_peer MODEL.gguf fp8|fp8-b<block>|bf16 [--runs N] [--ctx N] [--budget-s S] [--fill-budget-s S]".into());
    };
    let weights = match fmt.as_str() {
        "fp8" => WeightFormat::Fp8(Blocking::DEFAULT),
        "bf16" => WeightFormat::Bf16,
        other => match other.strip_prefix("fp8-b").and_then(|b| b.parse().ok()) {
            Some(b) => WeightFormat::Fp8(Blocking::new(b)?),
            None => return Err(format!("weights {other:?}: fp8, fp8-b<16|32|64|128> or bf16").into()),
        },
    };
    let runs: usize = arg(&args, "--runs", 3)?;
    let ctx: usize = arg(&args, "--ctx", 2000)?;
    let budget_s: f64 = arg(&args, "--budget-s", 30.0)?;
    let fill_budget_s: f64 = arg(&args, "--fill-budget-s", 60.0)?;
    let activations = match arg(&args, "--activations", "f32".to_string())?.as_str() {
        "f32" => Activations::F32,
        "bf16" => Activations::Bf16,
        other => return Err(format!("--activations {other:?}: f32 or bf16").into()),
    };

    let t = Instant::now();
    let llm = Llm::load(&PathBuf::from(path), &LoadOptions { weights, activations, device: Device::Cpu, ..Default::default() })?;
    let load_s = t.elapsed().as_secs_f64();
    let cfg = &llm.config;
    let ids = |n| peer_ids(n, cfg.vocab_size, cfg.bos_token_id.unwrap_or(1));
    let greedy = |n| GenerateOptions { max_new_tokens: n, stop_on_eos: false, ..Default::default() };

    let warm = llm.generate_ids(&ids(8), &greedy(4))?; // warm-up: pool start, page-in
    if args.iter().any(|a| a == "--load-only") {
        println!("{}", json!({ "model": path, "load_s": load_s, "config": format!("{cfg:?}"), "greedy_tokens": warm.tokens }));
        return Ok(());
    }
    let (decode, decode_runs) = repeat(runs, budget_s, || {
        // DECODE_STEPS + 1 sampled tokens = DECODE_STEPS timed intervals
        let r = llm.generate_ids(&ids(DECODE_PROMPT), &greedy(DECODE_STEPS + 1))?;
        Ok(1e3 / r.ms_per_token)
    })?;
    let pp = |n: usize| {
        repeat(runs, budget_s, || {
            let r = llm.generate_ids(&ids(n), &greedy(1))?;
            Ok(n as f64 / (r.prefill_ms / 1e3))
        })
    };
    let (pp32, pp32_runs) = pp(32)?;
    let (pp512, pp512_runs) = pp(512)?;

    let fill_real = ctx as f64 / pp512 <= fill_budget_s;
    let (ctx_decode, ctx_runs) = if fill_real {
        repeat(runs, budget_s, || {
            let r = llm.generate_ids(&ids(ctx), &greedy(CTX_STEPS + 1))?;
            Ok(1e3 / r.ms_per_token)
        })?
    } else {
        // positions 0..ctx stay zero; buffers allocated once, outside the timed loop
        let max_seq = ctx + CTX_STEPS + 1;
        let mut kv = SeqKv::private(KvDims::of(cfg), max_seq)?;
        let mut scratch = Scratch::new(cfg, max_seq)?;
        let mut sampler = Sampler::new(0.0, None, 1.0, 0);
        let start = ids(ctx + 1)[ctx];
        llm.model()?.forward(start, ctx, &mut kv, &mut scratch)?; // the first token, untimed as in generate
        repeat(runs, budget_s, || {
            let mut id = sampler.sample(&scratch.logits);
            let t = Instant::now();
            for pos in ctx + 1..=ctx + CTX_STEPS {
                id = sampler.sample(llm.model()?.forward(id, pos, &mut kv, &mut scratch)?);
            }
            Ok(CTX_STEPS as f64 / t.elapsed().as_secs_f64())
        })?
    };

    let out = json!({
        "engine": "viva_tensor",
        "model": path,
        "activations": format!("{activations:?}").to_lowercase(),
        "weights": match weights { WeightFormat::Bf16 => "bf16".to_string(), w => format!("{w:?}") },
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_s": load_s,
        "decode_tok_s": decode, "decode_runs": decode_runs,
        "pp32_tok_s": pp32, "pp32_runs": pp32_runs,
        "pp512_tok_s": pp512, "pp512_runs": pp512_runs,
        "ctx": ctx, "ctx_decode_tok_s": ctx_decode, "ctx_runs": ctx_runs,
        "ctx_fill": if fill_real { "prefill" } else { "zeroed-cache" },
    });
    println!("{out}");
    Ok(())
}
