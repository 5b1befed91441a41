//! Transpose benchmark: `viva_core::convert::transpose_into` (cache-tiled, parallel bands) vs its
//! `transpose_ref` twin (plain double loop) on an f32 matrix, by default the TinyLlama LM head
//! (32000 × 2048, 250 MiB), plus bf16 → f32 of a matrix of the same shape.
//!
//! cargo run --release -p viva_bench --bin transpose -- [ROWS] [COLS] [RUNS]
//! Each run writes into a freshly allocated output, as the `transpose_fp32` NIF does (so page
//! faults on the output are part of the time). Prints a markdown table and appends it (with
//! date, machine, commit) to bench/results/transpose.md.
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use viva_core::convert;

fn sh(cmd: &str) -> String {
    Command::new("sh").arg("-c").arg(cmd).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median wall time in ms of `runs` calls of `f` (after one warm-up call).
fn time_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// rayon's pool size: `RAYON_NUM_THREADS` when set, else the available parallelism.
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let args: Vec<String> = std::env::args().collect();
    let rows: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32000);
    let cols: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2048);
    let runs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);

    let src: Vec<u32> = (0..rows * cols).map(|i| (i as f32).to_bits()).collect(); // (rows, cols)
    let tiled = time_ms(runs, || {
        let mut dst = vec![0u32; rows * cols]; // (cols, rows)
        convert::transpose_into(&src, &mut dst, rows, cols).expect("sizes match");
        std::hint::black_box(&dst);
    });
    let reference = time_ms(runs.min(3), || {
        std::hint::black_box(convert::transpose_ref(&src, rows, cols));
    });
    // check once: tiled == reference
    let mut dst = vec![0u32; rows * cols];
    convert::transpose_into(&src, &mut dst, rows, cols)?;
    assert!(dst == convert::transpose_ref(&src, rows, cols), "tiled transpose differs from the reference");

    let bf16: Vec<u8> = src.iter().flat_map(|b| ((b >> 16) as u16).to_le_bytes()).collect();
    let widen = time_ms(runs, || {
        let mut out = vec![0u8; 2 * bf16.len()];
        convert::bf16_to_f32_into(&bf16, &mut out).expect("even length");
        std::hint::black_box(&out);
    });

    let mib = (rows * cols * 4) as f64 / (1 << 20) as f64;
    let table = format!(
        "| rows×cols | f32 MiB | tiled transpose ms | reference transpose ms | speed-up | tiled GB/s (read+write) | bf16→f32 ms |\n\
         |---|---|---|---|---|---|---|\n\
         | {rows}×{cols} | {mib:.0} | {tiled:.1} | {reference:.1} | {:.1}× | {:.2} | {widen:.1} |\n",
        reference / tiled,
        2.0 * (rows * cols * 4) as f64 / (tiled / 1e3) / 1e9,
    );
    print!("{table}");
    let header = format!(
        "\n## {} — {} {} ({} threads), commit {}\n`cargo run --release -p viva_bench --bin transpose -- {rows} {cols} {runs}` \
         (median of {runs} runs after a warm-up, reference: median of {} runs; fresh output buffer per run, page faults included; \
         baseline = the plain double loop `transpose_ref`)\n\n",
        sh("date -u +%Y-%m-%dT%H:%MZ"),
        sh("uname -m"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs"),
        threads(),
        sh(&format!("git -C {} rev-parse --short HEAD", root.display())),
        runs.min(3),
    );
    let out = root.join("bench/results/transpose.md");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&out)?;
    if f.metadata()?.len() == 0 {
        writeln!(f, "# transpose_fp32 / bf16_to_fp32_binary (viva_core::convert)")?;
    }
    write!(f, "{header}{table}")?;
    eprintln!("appended to {}", out.display());
    Ok(())
}
