//! The fp8 kernels against their twins: the SIMD dots against the dequantized row, the
//! bf16-activation dots against the rounded products, the register dequantization bit for bit.
use super::simd::*;
use super::{Blocking, PackedFp8};
use crate::backend::cpu::simd::{avx2, avx512, avx512_bf16, bf16_round, dot_bf16_bf16, f32_to_bf16};
use crate::backend::cpu::simd::tests::close;
use crate::error::{Error, Result};

/// An fp8 row kernel of one ISA: (codes, scales, block, x) → the row's dot.
#[cfg(target_arch = "x86_64")]
type Kern = unsafe fn(&[u8], &[f32], usize, &[f32]) -> f32;

/// The AVX-512 and AVX2 kernels of a pair that this CPU runs, by name.
#[cfg(target_arch = "x86_64")]
fn runnable(avx512_kernel: Kern, avx2_kernel: Kern) -> Vec<(&'static str, Kern)> {
    [("avx512", avx512(), avx512_kernel), ("avx2", avx2(), avx2_kernel)].into_iter().filter(|k| k.1).map(|(n, _, f)| (n, f)).collect()
}

#[test]
fn dot_fp8_matches_the_dequantized_row_for_every_blocking() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    let kernels = runnable(dot_fp8_avx512, dot_fp8_avx2);
    #[cfg(not(target_arch = "x86_64"))]
    let kernels: Vec<(&str, fn())> = Vec::new();
    if kernels.is_empty() {
        eprintln!("no AVX-512 or AVX2: skipped");
        return Ok(());
    }
    for k in [16usize, 33, 100, 256, 2048, 5632] {
        let n = 3;
        let w: Vec<f32> = (0..n * k).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 3000.0).collect();
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
        for b in [Blocking::DEFAULT, Blocking::new(32)?, Blocking::new(128)?, Blocking::PerChannel] {
            let p = PackedFp8::prepack(&w, n, k, b)?;
            if b == Blocking::PerChannel && k % 16 != 0 {
                continue; // per-channel blocks are k wide: only multiples of 16 take this path
            }
            for r in 0..n {
                let (codes, scales) = p.row(r);
                let want: f32 = (0..k).map(|c| p.get(r, c) * x[c]).sum();
                let mag: f32 = (0..k).map(|c| (p.get(r, c) * x[c]).abs()).sum();
                let mut xs = Vec::new();
                assert!(fp8_x(&x, &mut xs));
                let got = dot_fp8(codes, scales, p.block, &xs).ok_or_else(|| Error::Internal("no SIMD dot".into()))?;
                assert!(close(got, want, mag), "{b:?} k={k} row {r}: {got} vs {want}");
                #[cfg(target_arch = "x86_64")]
                for (name, f) in &kernels {
                    // SAFETY: the kernel's features are present (filtered above); the row
                    // fits (dot_fp8 took it).
                    let got = unsafe { f(codes, scales, p.block, &xs) };
                    assert!(close(got, want, mag), "{name} {b:?} k={k} row {r}: {got} vs {want}");
                }
            }
        }
    }
    Ok(())
}

/// The bf16-activation dots (bf16 weights; fp8 rounded to bf16) against their scalar twin,
/// Σ bf16_round(w)·bf16_round(x) in f64: the `vdpbf16ps` kernels where AVX512_BF16 runs, the
/// fp8 f32-FMA kernels (AVX-512F, AVX2) wherever they run.
#[test]
fn bf16_activation_dots_match_the_rounded_products() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    let fma_kernels = runnable(dot_fp8_bf16r_avx512, dot_fp8_bf16r_avx2);
    #[cfg(not(target_arch = "x86_64"))]
    let fma_kernels: Vec<(&str, fn())> = Vec::new();
    if !avx512_bf16() && fma_kernels.is_empty() {
        eprintln!("no AVX-512 or AVX2: skipped");
        return Ok(());
    }
    for k in [16usize, 37, 64, 100, 2048, 5632 + 7] {
        let x: Vec<f32> = (0..k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 31.0 * (1.0 + i as f32 * 1e-3)).collect();
        let mut xb = vec![0u16; k];
        f32_to_bf16(&x, &mut xb);
        let xr: Vec<f64> = xb.iter().map(|&b| f32::from_bits((b as u32) << 16) as f64).collect();
        for (j, (&b, &v)) in xb.iter().zip(&x).enumerate() {
            assert_eq!(f32::from_bits((b as u32) << 16), bf16_round(v), "x[{j}]");
        }
        // bf16 weights
        let w: Vec<u16> = (0..k).map(|i| half::bf16::from_f32(((i * 53 % 97) as f32 - 48.0) / 77.0).to_bits()).collect();
        let bytes: Vec<u8> = w.iter().flat_map(|b| b.to_le_bytes()).collect();
        let want: f64 = w.iter().zip(&xr).map(|(&b, v)| f32::from_bits((b as u32) << 16) as f64 * v).sum();
        let mag: f64 = w.iter().zip(&xr).map(|(&b, v)| (f32::from_bits((b as u32) << 16) as f64 * v).abs()).sum();
        if avx512_bf16() {
            let got = dot_bf16_bf16(&bytes, &xb).ok_or_else(|| Error::Internal("no bf16 dot".into()))?;
            assert!(close(got, want as f32, mag as f32), "bf16 k={k}: {got} vs {want}");
        }
        // fp8 weights, every blocking
        let wf: Vec<f32> = (0..2 * k).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 3000.0).collect();
        let xr32: Vec<f32> = xr.iter().map(|&v| v as f32).collect();
        for b in [Blocking::DEFAULT, Blocking::new(32)?, Blocking::new(128)?, Blocking::PerChannel] {
            let p = PackedFp8::prepack(&wf, 2, k, b)?;
            let (codes, scales) = p.row(1);
            if !fp8_row_fits(codes.len(), scales.len(), p.block, k, k) {
                continue; // per-channel with k % 16 ≠ 0: the callers' portable path
            }
            let want: f64 = (0..k).map(|c| bf16_round(p.get(1, c)) as f64 * xr[c]).sum();
            let mag: f64 = (0..k).map(|c| (p.get(1, c) as f64 * xr[c]).abs()).sum();
            if avx512_bf16() {
                let got = dot_fp8_bf16(codes, scales, p.block, &xb).ok_or_else(|| Error::Internal("no fp8 bf16 dot".into()))?;
                assert!(close(got, want as f32, mag as f32), "fp8 {b:?} k={k}: {got} vs {want}");
            }
            let got = dot_fp8_bf16r(codes, scales, p.block, &xr32).ok_or_else(|| Error::Internal("no fp8 bf16r dot".into()))?;
            assert!(close(got, want as f32, mag as f32), "fp8 f32-FMA {b:?} k={k}: {got} vs {want}");
            #[cfg(target_arch = "x86_64")]
            for (name, f) in &fma_kernels {
                // SAFETY: the kernel's features are present (filtered above); the row fits.
                let got = unsafe { f(codes, scales, p.block, &xr32) };
                assert!(close(got, want as f32, mag as f32), "fp8 {name} {b:?} k={k}: {got} vs {want}");
            }
        }
    }
    Ok(())
}

/// fp8 rows dequantized in registers equal PackedFp8::get bit for bit.
#[test]
fn fp8_row_to_f32_is_exact() -> Result<()> {
    for k in [16usize, 37, 2048] {
        let w: Vec<f32> = (0..2 * k).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 3000.0).collect();
        for b in [Blocking::DEFAULT, Blocking::new(128)?] {
            let p = PackedFp8::prepack(&w, 2, k, b)?;
            let (codes, scales) = p.row(1);
            let mut got = vec![0f32; k];
            if !fp8_row_to_f32(codes, scales, p.block, &mut got) {
                eprintln!("no AVX-512: skipped");
                return Ok(());
            }
            for (c, g) in got.iter().enumerate() {
                assert_eq!(g.to_bits(), p.get(1, c).to_bits(), "{b:?} k={k} col {c}");
            }
        }
    }
    Ok(())
}
