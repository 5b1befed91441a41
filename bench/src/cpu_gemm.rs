//! Prefill GEMM throughput (viva_core::backend::cpu::gemm) against this machine's multiply-add
//! peak, measured in the same run: f32 FMA and bf16 `vdpbf16ps` loops on every core (the
//! roofline of the f32 and bf16 kernels), then `linear_batch` on TinyLlama-1.1B's four linear
//! shapes at m = 32 / 512.
//! Second table: the decode GEMV (`backend::cpu::linear::linear`, m = 1) on the same shapes, in
//! GB/s of weights read against the read bandwidth of all cores measured in the same run (its
//! roofline).
//!
//! cargo run --release -p viva_bench --bin cpu_gemm -- [--no-append]
//! Prints a markdown table and appends it (date, machine, commit) to bench/results/cpu_gemm.md.
use std::io::Write;
use std::process::Command;
use std::time::Instant;

use viva_core::backend::cpu::gemm::{kernel_for, linear_batch_with, GemmBuf, Kernel};
use viva_core::backend::cpu::{linear, ops};
use viva_core::formats::fp8::Blocking;
use viva_core::kv::rows::LayerKv;
use viva_core::kv::{blocks_for, KvDims};
use viva_core::tensor::TensorView;
use viva_core::weights::{Activations, Linear, WeightFormat};

fn sh(cmd: &str) -> String {
    Command::new("sh").arg("-c").arg(cmd).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// Multiply-adds per second of `body` (which does `macs` of them) on every core at once.
fn on_all_cores(macs: f64, body: fn() -> f32) -> f64 {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let t = Instant::now();
    let sink: f32 = std::thread::scope(|s| (0..threads).map(|_| s.spawn(body)).collect::<Vec<_>>().into_iter().map(|h| h.join().unwrap_or(0.0)).sum());
    let dt = t.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    macs * threads as f64 / dt
}

const PEAK_ITERS: usize = 20_000_000;

/// Read bandwidth (bytes/s) of all cores streaming disjoint parts of a 1 GiB buffer (best of 3).
fn read_bandwidth() -> f64 {
    let buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let part = buf.len() / threads;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            let sink: u64 = std::thread::scope(|s| {
                let hs: Vec<_> = buf
                    .chunks(part)
                    .map(|c| {
                        s.spawn(move || {
                            let mut acc = [0u64; 8];
                            for v in c.chunks_exact(8) {
                                for l in 0..8 {
                                    acc[l] = acc[l].wrapping_add(v[l]);
                                }
                            }
                            acc.iter().fold(0u64, |a, b| a.wrapping_add(*b))
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0)).fold(0u64, |a, b| a.wrapping_add(b))
            });
            std::hint::black_box(sink);
            (buf.len() * 8) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
mod peak {
    use std::arch::x86_64::*;
    /// 12 independent chains of `step`, PEAK_ITERS steps each; inlined into the callers' target
    /// features.
    #[inline(always)]
    fn chains<V: Copy>(start: V, step: impl Fn(V) -> V) -> [V; 12] {
        let mut a = [start; 12];
        for _ in 0..super::PEAK_ITERS {
            for v in a.iter_mut() {
                *v = step(*v);
            }
        }
        a
    }
    /// 12 independent FMA chains (16 MACs each per step).
    pub fn fma() -> f32 {
        if !viva_core::tuning::get().cpu_has.avx512 {
            return 0.0;
        }
        // SAFETY: AVX-512F checked above (the CPU's own features, switches aside); registers only.
        unsafe { fma_loop() }
    }
    #[target_feature(enable = "avx512f")]
    unsafe fn fma_loop() -> f32 {
        let (x, y) = (_mm512_set1_ps(1.000_001), _mm512_set1_ps(0.999_999));
        chains(_mm512_set1_ps(0.5), |v| _mm512_fmadd_ps(x, y, v)).iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }
    /// 12 independent 256-bit FMA chains (8 MACs each per step): the AVX2 kernel's peak.
    pub fn fma256() -> f32 {
        if !viva_core::tuning::get().cpu_has.avx2 {
            return 0.0;
        }
        // SAFETY: AVX2/FMA checked above; registers only.
        unsafe { fma256_loop() }
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma256_loop() -> f32 {
        let (x, y) = (_mm256_set1_ps(1.000_001), _mm256_set1_ps(0.999_999));
        let a = chains(_mm256_set1_ps(0.5), |v| _mm256_fmadd_ps(x, y, v));
        // every chain feeds the result, so none is dead code
        let sum = a.iter().fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
        out.iter().sum()
    }
    /// 12 independent vdpbf16ps chains (32 MACs each per step).
    pub fn dpbf16() -> f32 {
        if !viva_core::tuning::get().cpu_has.avx512_bf16 {
            return 0.0;
        }
        // SAFETY: AVX512_BF16 checked above; registers only.
        unsafe { dp_loop() }
    }
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dp_loop() -> f32 {
        let x: __m512bh = std::mem::transmute(_mm512_set1_epi16(0x3f80));
        chains(_mm512_set1_ps(0.5), |v| _mm512_dpbf16_ps(v, x, x)).iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }
}

fn weight(n: usize, k: usize, format: WeightFormat) -> Result<Linear, Box<dyn std::error::Error>> {
    let data: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 25000.0).collect();
    Ok(Linear::fuse(&[&TensorView::from_f32("w", vec![n, k], &data)], format)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let append = !std::env::args().any(|a| a == "--no-append");
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    #[cfg(target_arch = "x86_64")]
    let (fma_peak, fma256_peak, bf16_peak) = (
        on_all_cores(PEAK_ITERS as f64 * 12.0 * 16.0, peak::fma),
        on_all_cores(PEAK_ITERS as f64 * 12.0 * 8.0, peak::fma256),
        on_all_cores(PEAK_ITERS as f64 * 12.0 * 32.0, peak::dpbf16),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (fma_peak, fma256_peak, bf16_peak) = (0.0, 0.0, 0.0);
    let shapes = [("qkv", 2560, 2048), ("o_proj", 2048, 2048), ("gate·up", 11264, 2048), ("down", 2048, 5632)];
    let mut table = String::from("| linear (n × k) | format | kernel | m | ms | GMAC/s | % of that kernel's peak |\n|---|---|---|---|---|---|---|\n");
    let mut buf = GemmBuf::default();
    for (name, n, k) in shapes {
        for (fname, format) in [("bf16", WeightFormat::Bf16), ("fp8 b16", WeightFormat::Fp8(Blocking::DEFAULT))] {
            let w = weight(n, k, format)?;
            // the kernel of each `activations` setting: f32 (default) and bf16; and the AVX2 f32
            // tiles (what CPUs without AVX-512 run) where this CPU has a better one
            let mut kernels = vec![(kernel_for(Activations::F32), " (activations f32)"), (kernel_for(Activations::Bf16), " (activations bf16)")];
            if kernels[0].0 != Kernel::Avx2 && viva_core::backend::cpu::simd::avx2() {
                kernels.push((Kernel::Avx2, " (activations f32, CPUs without AVX-512)"));
            }
            for (kernel, tag) in kernels {
                let peak = match kernel {
                    Kernel::Bf16 => bf16_peak,
                    Kernel::Avx2 => fma256_peak,
                    _ => fma_peak,
                };
                for m in [32usize, 512] {
                    let x: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
                    let mut out = vec![0.0; m * n];
                    linear_batch_with(kernel, &w, &x, m, &mut out, &mut buf); // warm-up
                    let reps = if m == 32 { 10 } else { 2 };
                    let t = Instant::now();
                    for _ in 0..reps {
                        linear_batch_with(kernel, &w, &x, m, &mut out, &mut buf);
                    }
                    let s = t.elapsed().as_secs_f64() / reps as f64;
                    let gmacs = (m * n * k) as f64 / s / 1e9;
                    table += &format!("| {name} ({n} × {k}) | {fname} | {kernel:?}{tag} | {m} | {:.2} | {gmacs:.1} | {:.0}% |\n", s * 1e3, 100.0 * gmacs * 1e9 / peak.max(1.0));
                }
            }
        }
    }
    let bw = read_bandwidth();
    table += &format!("\n| decode GEMV (n × k), from DRAM | format | activations | MB read | ms | GB/s | % of read bandwidth ({:.1} GB/s) |\n|---|---|---|---|---|---|---|\n", bw / 1e9);
    let gemv_cases = [
        ("bf16", WeightFormat::Bf16, Activations::F32),
        ("bf16", WeightFormat::Bf16, Activations::Bf16),
        ("fp8 b16", WeightFormat::Fp8(Blocking::DEFAULT), Activations::F32),
        ("fp8 b16", WeightFormat::Fp8(Blocking::DEFAULT), Activations::Bf16),
        ("fp8 b128", WeightFormat::Fp8(Blocking::new(128)?), Activations::F32),
    ];
    for (name, n, k) in shapes {
        for (fname, format, act) in gemv_cases {
            // copies totalling ≥ 256 MB, walked in turn: every call streams from DRAM as in decode
            let first = weight(n, k, format)?;
            let copies = (256e6 / first.nbytes() as f64).ceil() as usize;
            let mut ws = vec![first];
            for _ in 1..copies {
                ws.push(weight(n, k, format)?);
            }
            let w = &ws[0];
            let x: Vec<f32> = (0..k).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
            let mut out = vec![0.0; n];
            ws.iter().for_each(|w| linear::linear(w, &x, &mut out, act)); // warm-up
            let reps = 2 * copies;
            let t = Instant::now();
            for i in 0..reps {
                linear::linear(&ws[i % copies], &x, &mut out, act);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let gbs = w.nbytes() as f64 / s / 1e9;
            table += &format!("| {name} ({n} × {k}) | {fname} | {act:?} | {:.1} | {:.3} | {gbs:.1} | {:.0}% |\n", w.nbytes() as f64 / 1e6, s * 1e3, 100.0 * gbs * 1e9 / bw);
        }
    }
    // decode attention over a 2000-position cache (ops::attention, grouped flash-decoding
    // kernel), one cache per layer walked in turn as in a decode step: each read from DRAM
    table += "\n| decode attention, 2000 cached positions, from DRAM | heads / KV heads × head_dim | layers | µs per layer | GB/s of K+V read | % of read bandwidth |\n|---|---|---|---|---|---|\n";
    for (name, nh, nkv, hd, layers) in [("TinyLlama-1.1B", 32usize, 4usize, 64usize, 22usize), ("SmolLM2-135M", 9, 3, 64, 30), ("Llama-2-7B", 32, 32, 128, 8)] {
        let len = 2000;
        let shape = ops::AttnShape { n_heads: nh, n_kv_heads: nkv, head_dim: hd, max_seq: len };
        // (K, V) per layer, each a pool of its own in the paged layout (kv/), blocks in order
        let dims = KvDims { layers: 1, kv_heads: nkv, head_dim: hd };
        let blocks: Vec<u32> = (0..blocks_for(len) as u32).collect();
        let fill = |salt: usize| -> Vec<f32> { (0..blocks.len() * dims.block_floats()).map(|i| (((i + salt) * 7919 % 1013) as f32 - 506.0) / 500.0).collect() };
        let caches: Vec<(Vec<f32>, Vec<f32>)> = (0..layers).map(|l| (fill(2 * l), fill(2 * l + 1))).collect();
        let views = |k, v| (LayerKv::new(k, &blocks, dims, 0).expect("table inside the pool"), LayerKv::new(v, &blocks, dims, 0).expect("table inside the pool"));
        let q: Vec<f32> = (0..nh * hd).map(|i| ((i % 37) as f32 - 18.0) / 20.0).collect();
        let mut scratch = vec![0.0; ops::attention_scratch_len(&shape)];
        let mut out = vec![0.0; nh * hd];
        caches.iter().for_each(|(k, v)| {
            let (k, v) = views(k, v);
            ops::attention(&shape, &q, &k, &v, len - 1, &mut scratch, &mut out)
        });
        let reps = 10 * layers;
        let t = Instant::now();
        for i in 0..reps {
            let (k, v) = &caches[i % layers];
            let (k, v) = views(k, v);
            ops::attention(&shape, &q, &k, &v, len - 1, &mut scratch, &mut out);
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        let gbs = (2 * len * nkv * hd * 4) as f64 / s / 1e9;
        table += &format!("| {name} | {nh} / {nkv} × {hd} | {layers} | {:.0} | {gbs:.1} | {:.0}% |\n", s * 1e6, 100.0 * gbs * 1e9 / bw);
    }
    let commit = sh("git rev-parse --short HEAD");
    let head = format!(
        "## {} — {} ({threads} threads), commit {commit}\n`cargo run --release -p viva_bench --bin cpu_gemm`; peaks measured in the same run on all {threads} cores: f32 FMA {:.1} GMAC/s (256-bit: {:.1}), bf16 vdpbf16ps {:.1} GMAC/s.\n\n",
        sh("date -u +%Y-%m-%dT%H:%MZ"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs"),
        fma_peak / 1e9,
        fma256_peak / 1e9,
        bf16_peak / 1e9
    );
    print!("{head}{table}");
    if append {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results/cpu_gemm.md");
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        if new {
            writeln!(f, "# CPU prefill GEMM vs the machine's multiply-add peak\n")?;
        }
        writeln!(f, "{head}{table}")?;
    }
    Ok(())
}
