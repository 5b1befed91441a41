//! CPU generation benchmark: prefill tok/s and decode ms/token of the engine on one checkpoint.
//!
//! cargo run --release -p viva_bench --bin cpu_generate -- [CHECKPOINT] [NEW_TOKENS] [RUNS]
//! Prints a markdown table and appends it (with date, machine, commit) to bench/results/cpu_generate.md.
//! Prefill tok/s = prompt tokens / `GenerateResult::prefill_ms`; decode ms/token =
//! `GenerateResult::ms_per_token` (mean interval between consecutive generated tokens).
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use viva_core::llm::{GenerateOptions, Llm, LoadOptions};

const PROMPT: &str = "The quick brown fox jumps over the lazy dog. Once upon a time there was a little robot";

fn sh(cmd: &str) -> String {
    Command::new("sh").arg("-c").arg(cmd).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let args: Vec<String> = std::env::args().collect();
    let ckpt = args.get(1).map(PathBuf::from).unwrap_or_else(|| root.join("test/fixtures/tiny_mha_sharded"));
    let new_tokens: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let runs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);

    let t = std::time::Instant::now();
    let llm = Llm::load(&ckpt, &LoadOptions::default())?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let opts = GenerateOptions { max_new_tokens: new_tokens, stop_on_eos: false, ..Default::default() };
    llm.generate(PROMPT, &opts)?; // warm-up
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    let mut prompt_tokens = 0;
    for _ in 0..runs {
        let r = llm.generate(PROMPT, &opts)?;
        prompt_tokens = r.prompt_tokens;
        prefill.push(r.prompt_tokens as f64 / (r.prefill_ms / 1e3));
        decode.push(r.ms_per_token);
    }
    let (pf, ms) = (median(prefill), median(decode));
    let c = &llm.config;
    let table = format!(
        "| checkpoint | weights | layers×hidden | load ms | prompt tokens | prefill tok/s | decode ms/token | decode tok/s |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {} | {:?} | {}×{} | {:.1} | {} | {:.1} | {:.3} | {:.1} |\n",
        ckpt.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default(),
        llm.model()?.format,
        c.num_hidden_layers, c.hidden_size, load_ms, prompt_tokens, pf, ms, 1e3 / ms
    );
    print!("{table}");
    let header = format!(
        "\n## {} — {} {} ({} threads), commit {}\n`cargo run --release -p viva_bench --bin cpu_generate -- {} {new_tokens} {runs}` \
         (median of {runs} runs, {new_tokens} new tokens, greedy; prefill = prompt tokens / prefill wall time; decode ms/token = \
         mean interval between consecutive generated tokens; no baseline in this table: the llama.cpp comparison comes with the CPU performance issue)\n\n",
        sh("date -u +%Y-%m-%dT%H:%MZ"),
        sh("uname -m"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        sh("git rev-parse --short HEAD"),
        ckpt.display()
    );
    let out = root.join("bench/results/cpu_generate.md");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out)?;
    write!(f, "{header}{table}")?;
    Ok(())
}
