use super::*;
use crate::error::{Error, Result};
use crate::quant::fp8::{Blocking, PackedFp8};

/// [`exp512`] on a slice (for its test).
fn exp_slice(x: &mut [f32]) -> bool {
    if !avx512() || x.len() % 16 != 0 {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F present; whole 16-lane chunks of x.
    unsafe {
        for c in x.chunks_exact_mut(16) {
            _mm512_storeu_ps(c.as_mut_ptr(), exp512(_mm512_loadu_ps(c.as_ptr())));
        }
        return true;
    }
    #[allow(unreachable_code)]
    false
}

/// Named tolerance: relative to Σ|w·x| (different summation order only).
const RTOL: f32 = 1e-5;

fn close(a: f32, b: f32, mag: f32) -> bool {
    (a - b).abs() <= RTOL * mag + 1e-30
}

/// Every dot16 kernel this CPU runs (AVX-512, AVX2) against the scalar sum.
#[test]
fn dot16_matches_the_scalar_dot_on_odd_lengths() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    type Kern = unsafe fn(*const u8, Half, &[f32]) -> f32;
    #[cfg(target_arch = "x86_64")]
    let kernels: Vec<(&str, Kern)> = [("avx512", avx512(), dot16_avx512 as Kern), ("avx2", avx2(), dot16_avx2 as Kern)]
        .into_iter()
        .filter(|k| k.1)
        .map(|(n, _, f)| (n, f))
        .collect();
    #[cfg(not(target_arch = "x86_64"))]
    let kernels: Vec<(&str, fn())> = Vec::new();
    if kernels.is_empty() {
        eprintln!("no AVX-512 or AVX2: skipped");
        return Ok(());
    }
    for k in [1usize, 15, 16, 17, 63, 64, 65, 200, 2048, 5632 + 3] {
        let x: Vec<f32> = (0..k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 31.0).collect();
        let w: Vec<f32> = (0..k).map(|i| ((i * 53 % 97) as f32 - 48.0) / 77.0).collect();
        for kind in [Half::Bf16, Half::F16] {
            let bits: Vec<u16> = w
                .iter()
                .map(|&v| match kind {
                    Half::Bf16 => half::bf16::from_f32(v).to_bits(),
                    Half::F16 => half::f16::from_f32(v).to_bits(),
                })
                .collect();
            let dec = |b: u16| match kind {
                Half::Bf16 => half::bf16::from_bits(b).to_f32(),
                Half::F16 => half::f16::from_bits(b).to_f32(),
            };
            // an odd byte offset: the kernel must not assume alignment
            let mut bytes = vec![0u8];
            bytes.extend(bits.iter().flat_map(|b| b.to_le_bytes()));
            let want: f32 = bits.iter().zip(&x).map(|(&b, v)| dec(b) * v).sum();
            let mag: f32 = bits.iter().zip(&x).map(|(&b, v)| (dec(b) * v).abs()).sum();
            assert!(dot16(&bytes[1..], kind, &x).is_some_and(|got| close(got, want, mag)), "{kind:?} k={k}");
            #[cfg(target_arch = "x86_64")]
            for (name, f) in &kernels {
                // SAFETY: the kernel's features are present (filtered above); 2k bytes, k floats.
                let got = unsafe { f(bytes[1..].as_ptr(), kind, &x) };
                assert!(close(got, want, mag), "{name} {kind:?} k={k}: {got} vs {want}");
            }
        }
    }
    Ok(())
}

#[test]
fn dot_fp8_matches_the_dequantized_row_for_every_blocking() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    type Kern = unsafe fn(&[u8], &[f32], usize, &[f32]) -> f32;
    #[cfg(target_arch = "x86_64")]
    let kernels: Vec<(&str, Kern)> = [("avx512", avx512(), dot_fp8_avx512 as Kern), ("avx2", avx2(), dot_fp8_avx2 as Kern)]
        .into_iter()
        .filter(|k| k.1)
        .map(|(n, _, f)| (n, f))
        .collect();
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


/// The vector exp against f64 on [-104, 0] (and -inf): relative error ≤ 3 ulp (f32).
#[test]
fn exp512_is_accurate_on_the_softmax_range() {
    let mut x: Vec<f32> = (0..16 * 4096).map(|i| -104.0 * i as f32 / (16.0 * 4096.0)).collect();
    x[5] = f32::NEG_INFINITY;
    let want: Vec<f64> = x.iter().map(|&v| (v as f64).exp()).collect();
    if !exp_slice(&mut x) {
        eprintln!("no AVX-512: skipped");
        return;
    }
    for (i, (&g, &w)) in x.iter().zip(&want).enumerate() {
        let ulp = (w as f32).abs() * f32::EPSILON;
        assert!((g as f64 - w).abs() <= 3.0 * ulp as f64 + 1e-44, "exp at {i}: {g} vs {w}");
    }
}

/// The branch-free bf16 rounding against `half` (subnormals flushed, its documented twin) on
/// a sweep of bit patterns (every sign, exponent and rounding case, NaN, inf, subnormals),
/// and `f32_to_bf16` (AVX-512 BF16 / AVX2 / scalar, whichever runs) against both.
#[test]
fn bf16_rounding_matches_half_on_every_kind_of_value() {
    let twin = |v: f32| if v.is_subnormal() { ((v.to_bits() >> 16) & 0x8000) as u16 } else { half::bf16::from_f32(v).to_bits() };
    let vals: Vec<f32> = (0..=u32::MAX / 4099).map(|i| f32::from_bits(i.wrapping_mul(4099) ^ (i & 0xFFFF))).chain([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE, 1e-40]).collect();
    let mut got = vec![0u16; vals.len()];
    f32_to_bf16(&vals, &mut got);
    for (&v, &g) in vals.iter().zip(&got) {
        let want = twin(v);
        if v.is_nan() {
            assert!(half::bf16::from_bits(bf16_bits(v)).is_nan() && half::bf16::from_bits(g).is_nan(), "{:#x}", v.to_bits());
            continue;
        }
        assert_eq!(bf16_bits(v), want, "{:#x}", v.to_bits());
        assert_eq!(g, want, "f32_to_bf16 {:#x}", v.to_bits());
    }
}

/// The vector bf16 roundings against [`bf16_round`] on the same sweep: the exact form (the
/// GEMM's rounded weights) bit for bit on every input, NaN payloads that the add would carry
/// into the sign or out of the word included; the finite form (the fp8 dots, AVX-512 and
/// AVX2) on non-NaN inputs, ±0 alike.
#[test]
fn vector_bf16_rounding_matches_the_scalar_rule() {
    let vals: Vec<f32> = (0..=u32::MAX / 4099)
        .map(|i| f32::from_bits(i.wrapping_mul(4099) ^ (i & 0xFFFF)))
        .chain([0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FFF_8000, 0xFF80_0001, 0x7F80_0000, 0x8000_0001, 0x7F7F_FFFF].map(f32::from_bits))
        .collect();
    #[cfg(target_arch = "x86_64")]
    for (name, on) in [("avx512 exact", avx512()), ("avx512", avx512()), ("avx2", avx2())] {
        if !on {
            continue;
        }
        let lanes = if name == "avx2" { 8 } else { 16 };
        for c in vals.chunks_exact(lanes) {
            let mut got = [0f32; 16];
            // SAFETY: the feature is present (checked above); loads/stores of `lanes` floats.
            unsafe {
                match name {
                    "avx512 exact" => _mm512_storeu_ps(got.as_mut_ptr(), bf16_round512::<true>(_mm512_loadu_ps(c.as_ptr()))),
                    "avx512" => _mm512_storeu_ps(got.as_mut_ptr(), bf16_round512::<false>(_mm512_loadu_ps(c.as_ptr()))),
                    _ => _mm256_storeu_ps(got.as_mut_ptr(), bf16_round256(_mm256_loadu_ps(c.as_ptr()))),
                }
            }
            for l in 0..lanes {
                let want = bf16_round(c[l]);
                if name == "avx512 exact" {
                    assert_eq!(got[l].to_bits(), want.to_bits(), "{name} {:#x}", c[l].to_bits());
                } else if !c[l].is_nan() {
                    assert_eq!(got[l].abs().to_bits(), want.abs().to_bits(), "{name} {:#x}", c[l].to_bits());
                }
            }
        }
    }
}

/// The bf16-activation dots (bf16 weights; fp8 rounded to bf16) against their scalar twin,
/// Σ bf16_round(w)·bf16_round(x) in f64: the `vdpbf16ps` kernels where AVX512_BF16 runs, the
/// fp8 f32-FMA kernels (AVX-512F, AVX2) wherever they run.
#[test]
fn bf16_activation_dots_match_the_rounded_products() -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    type Kern = unsafe fn(&[u8], &[f32], usize, &[f32]) -> f32;
    #[cfg(target_arch = "x86_64")]
    let fma_kernels: Vec<(&str, Kern)> = [("avx512", avx512(), dot_fp8_bf16r_avx512 as Kern), ("avx2", avx2(), dot_fp8_bf16r_avx2 as Kern)]
        .into_iter()
        .filter(|k| k.1)
        .map(|(n, _, f)| (n, f))
        .collect();
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
