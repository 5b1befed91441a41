//! GPU decode benchmark (issue 6): batch 1, a 16-token prompt, 128 new tokens, per checkpoint and
//! weight format; prints ms/token, tok/s, bytes read per token, the roofline (bytes / device copy
//! bandwidth measured in the same run) and % of it, 512-token prefill tok/s and load time.
//! With `--expect FILE` (HF fp32 greedy tokens from bench/peer/hf_reference.py) it also reports
//! greedy agreement with transformers for each format.
//!
//! cargo build --release -p viva_bench --bin gpu_decode
//! gpu_decode [--expect expected.json] [--out results.json] MODEL_DIR...
use std::path::PathBuf;
use std::time::Instant;

use viva_core::llm::{Device, GenerateOptions, Llm, LoadOptions};
use viva_core::formats::fp8::Blocking;
use viva_core::weights::WeightFormat;

const PROMPT_TOKENS: usize = 16;
const NEW_TOKENS: usize = 128;
const PREFILL_TOKENS: usize = 512;
const RUNS: usize = 3;

/// This process's resident host memory in MB (VmRSS), 0 where /proc is missing.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.get(i + 1).cloned();
        args.drain(i..(i + 2).min(args.len()));
        v
    };
    let expect: Option<serde_json::Value> = take("--expect").map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap());
    let out_path = take("--out");
    let info = viva_core::backend::info();
    eprintln!("{info:?}");
    let bw = viva_core::backend::cuda::check::copy_bandwidth()?;
    eprintln!("device copy bandwidth: {:.0} GB/s (read + write)", bw / 1e9);
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for dir in &args {
        let dir = PathBuf::from(dir);
        let name = dir.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let all = [("native", WeightFormat::Native), ("bf16", WeightFormat::Bf16), ("fp8-b16", WeightFormat::Fp8(Blocking::DEFAULT)), ("fp8-b128", WeightFormat::Fp8(Blocking::new(128)?))];
        // VIVA_BENCH_FORMATS=native,fp8-b16 picks a subset (bf16 of a bf16 checkpoint is native)
        let pick = std::env::var("VIVA_BENCH_FORMATS").unwrap_or_else(|_| "native,bf16,fp8-b16,fp8-b128".into());
        for (label, weights) in all.into_iter().filter(|(l, _)| pick.split(',').any(|p| p == *l)) {
            let t = Instant::now();
            let llm = Llm::load(&dir, &LoadOptions { device: Device::Cuda, weights, ..Default::default() })?;
            let load_s = t.elapsed().as_secs_f64();
            let rss = rss_mb(); // what the loaded model holds on the host
            let cm = llm.cuda.as_ref().ok_or("not on cuda")?;
            let bytes = cm.bytes_per_token();
            let vocab = llm.config.vocab_size as u32;
            let prompt: Vec<u32> = match expect.as_ref().and_then(|e| e[&name]["prompt"].as_array()) {
                Some(p) => p.iter().map(|v| v.as_u64().unwrap_or(1) as u32).collect(),
                None => (0..PROMPT_TOKENS as u32).map(|i| 1 + (i * 7919) % (vocab - 1)).collect(),
            };
            let opts = GenerateOptions { max_new_tokens: NEW_TOKENS, stop_on_eos: false, ..Default::default() };
            llm.generate_ids(&prompt, &opts)?; // warm-up: graph capture, cuBLAS heuristics
            let mut ms = Vec::new();
            let mut tokens = Vec::new();
            for _ in 0..RUNS {
                let r = llm.generate_ids(&prompt, &opts)?;
                ms.push(r.ms_per_token);
                tokens = r.tokens;
            }
            let ms = median(ms);
            let long: Vec<u32> = (0..PREFILL_TOKENS as u32).map(|i| 1 + (i * 104729) % (vocab - 1)).collect();
            let one = GenerateOptions { max_new_tokens: 1, ..Default::default() };
            llm.generate_ids(&long, &one)?;
            let pf = median((0..RUNS).map(|_| llm.generate_ids(&long, &one).map(|r| PREFILL_TOKENS as f64 / (r.prefill_ms / 1e3))).collect::<Result<_, _>>()?);
            let roof_ms = bytes as f64 / bw * 1e3;
            if std::env::var_os("VIVA_PROFILE").is_some() {
                for (label, t) in viva_core::backend::cuda::check::profile_decode(&llm, &prompt)? {
                    eprintln!("  profile {name} {label}: {:.1} us", t * 1e3);
                }
            }
            let agree = expect.as_ref().and_then(|e| e[&name]["tokens"].as_array()).map(|want| {
                let want: Vec<u32> = want.iter().map(|v| v.as_u64().unwrap_or(0) as u32).collect();
                let n = want.len().min(tokens.len());
                let same = want[..n].iter().zip(&tokens[..n]).take_while(|(a, b)| a == b).count();
                format!("{same}/{n}")
            });
            rows.push(format!(
                "| {name} | {label} | {:.3} | {:.0} | {:.1} | {:.3} | {:.0}% | {:.0} | {:.2} | {rss:.0} | {} |",
                ms,
                1e3 / ms,
                bytes as f64 / 1e6,
                roof_ms,
                roof_ms / ms * 100.0,
                pf,
                load_s,
                agree.clone().unwrap_or("-".into())
            ));
            json.push(serde_json::json!({"model": name, "weights": label, "ms_per_token": ms, "bytes_per_token": bytes,
                "roofline_ms": roof_ms, "prefill_tok_s": pf, "load_s": load_s, "rss_mb_after_load": rss, "hf_greedy_prefix": agree, "tokens": tokens}));
            eprintln!("{}", rows.last().unwrap());
        }
    }
    println!("device: {} (cc {:?}, {} SMs); copy bandwidth {:.0} GB/s", info.gpu_name.unwrap_or_default(), info.compute_capability.unwrap_or_default(), info.sm_count.unwrap_or(0), bw / 1e9);
    println!("| model | weights | ms/token | tok/s | MB read/token | roofline ms | % of roofline | prefill 512 tok/s | load s | host RSS MB after load | HF fp32 greedy prefix |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    if let Some(p) = out_path {
        std::fs::write(p, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
