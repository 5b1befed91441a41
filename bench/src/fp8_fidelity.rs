//! FP8 fidelity report: how close each fp8 scale blocking stays to bf16 weights.
//!
//! cargo run --release -p viva_bench --bin fp8_fidelity -- [CHECKPOINT ...]
//! (default: the three HF fixtures). Teacher-forced over the bf16 greedy continuation (STEPS
//! tokens): top-1 agreement and mean KL(bf16 ‖ fp8) per position; plus, where the checkpoint has
//! an expected.json (HF fp32 reference), first-token agreement with HF. Prints a markdown table
//! and appends it, with date, machine and commit, to bench/results/fp8_fidelity.md.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use viva_core::llm::{GenerateOptions, Llm, LoadOptions};
use viva_core::formats::fp8::Blocking;
use viva_core::sampling::argmax;
use viva_core::backend::cpu::state::DecodeState;
use viva_core::weights::WeightFormat;

const STEPS: usize = 32;
const PROMPT: &str = "The quick brown fox jumps over the lazy dog.";

fn sh(cmd: &str) -> String {
    Command::new("sh").arg("-c").arg(cmd).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn load(path: &Path, weights: WeightFormat) -> Result<Llm, viva_core::Error> {
    Llm::load(path, &LoadOptions { weights, ..Default::default() })
}

/// Logits after each prefix `ids[..prompt_len + i]`, i in 0..=steps (teacher forcing).
fn logits_along(llm: &Llm, ids: &[u32], prompt_len: usize) -> Result<Vec<Vec<f32>>, viva_core::Error> {
    let model = llm.model()?;
    let mut s = DecodeState::new(model, ids.len() + 1)?;
    let mut out = vec![s.prefill(model, &ids[..prompt_len])?.to_vec()];
    for &id in &ids[prompt_len..] {
        let pos = s.filled();
        out.push(s.step_at(model, id, pos)?.to_vec());
    }
    Ok(out)
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

fn kl(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

/// HF fp32's first greedy token after its own prompt, from a fixture's expected.json.
fn hf_first(path: &Path) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(path.join("expected.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((v["prompt"].as_str()?.to_string(), v["greedy_tokens"][0].as_u64()? as u32))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        paths = ["tiny_gqa", "tiny_tied_llama3", "tiny_mha_sharded"].iter().map(|n| root.join("test/fixtures").join(n)).collect();
    }
    let formats = [
        ("fp8 block 16", WeightFormat::Fp8(Blocking::Block(16))),
        ("fp8 block 32", WeightFormat::Fp8(Blocking::Block(32))),
        ("fp8 block 128", WeightFormat::Fp8(Blocking::Block(128))),
        ("fp8 per-channel", WeightFormat::Fp8(Blocking::PerChannel)),
        ("bf16", WeightFormat::Bf16),
    ];
    let mut table = String::from(
        "| checkpoint | weights | bytes/token | top-1 agreement vs bf16 | mean KL(bf16‖w) | first token = HF fp32 |\n|---|---|---|---|---|---|\n",
    );
    for path in &paths {
        let name = path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let base = load(path, WeightFormat::Bf16)?;
        let prompt_ids = base.tokenizer.encode(PROMPT, true)?;
        let greedy = GenerateOptions { max_new_tokens: STEPS, stop_on_eos: false, ..Default::default() };
        let cont = base.generate_ids(&prompt_ids, &greedy)?.tokens;
        let ids: Vec<u32> = prompt_ids.iter().chain(&cont[..STEPS - 1]).copied().collect();
        let want = logits_along(&base, &ids, prompt_ids.len())?;
        let hf = hf_first(path);
        for (label, format) in formats {
            let llm = load(path, format)?;
            let got = logits_along(&llm, &ids, prompt_ids.len())?;
            let agree = want.iter().zip(&got).filter(|(a, b)| argmax(a) == argmax(b)).count();
            let mean_kl = want.iter().zip(&got).map(|(a, b)| kl(a, b)).sum::<f64>() / want.len() as f64;
            let first = match &hf {
                Some((p, tok)) => {
                    let one = GenerateOptions { max_new_tokens: 1, ..greedy.clone() };
                    if llm.generate(p, &one)?.tokens[0] == *tok { "yes" } else { "no" }
                }
                None => "n/a",
            };
            table += &format!(
                "| {name} | {label} | {} | {agree}/{} | {mean_kl:.2e} | {first} |\n",
                llm.model()?.bytes_per_token(),
                want.len()
            );
        }
    }
    print!("{table}");
    let header = format!(
        "\n## {} — {}, commit {}\n`cargo run --release -p viva_bench --bin fp8_fidelity` (teacher-forced over {STEPS} bf16 greedy tokens after \"{PROMPT}\"; random-weight fixtures have far flatter logits than trained models, so their agreement is a lower bound)\n\n",
        sh("date -u +%Y-%m-%dT%H:%MZ"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("git rev-parse --short HEAD"),
    );
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(root.join("bench/results/fp8_fidelity.md"))?;
    write!(f, "{header}{table}")?;
    Ok(())
}
