use super::*;
use crate::error::Result;

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

/// `a` equals `b` to [`RTOL`] of the terms' magnitude `mag` (the fp8 kernels' tests use it too).
pub(crate) fn close(a: f32, b: f32, mag: f32) -> bool {
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
