//! FP8 E4M3 codec, blocked prepack and the fp8 linears against their f32 reference twins.
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use viva_core::quant::fp8::{e4m3_decode, e4m3_encode, e4m3_encode_ref, error_bound, Blocking, PackedFp8, E4M3_MAX, ROW_ALIGN};
use viva_core::quant::linear::*;
use viva_core::Error;

/// fp8 linear vs its dequantized f32 twin: only the summation order differs.
const LINEAR_RTOL: f32 = 1e-4;
const LINEAR_ATOL: f32 = 1e-4;

#[test]
fn decode_known_values() {
    assert_eq!(e4m3_decode(0x00), 0.0);
    assert_eq!(e4m3_decode(0x80).to_bits(), (-0.0f32).to_bits());
    assert_eq!(e4m3_decode(0x7E), 448.0);
    assert_eq!(e4m3_decode(0xFE), -448.0);
    assert!(e4m3_decode(0x7F).is_nan() && e4m3_decode(0xFF).is_nan());
    assert_eq!(e4m3_decode(0x08), 2f32.powi(-6)); // smallest normal
    assert_eq!(e4m3_decode(0x01), 2f32.powi(-9)); // smallest subnormal
    assert_eq!(e4m3_decode(0x38), 1.0);
    assert_eq!(e4m3_decode(0x3C), 1.5);
}

#[test]
fn every_code_round_trips_and_codes_are_monotonic() {
    for c in 0..=255u8 {
        let v = e4m3_decode(c);
        if v.is_nan() {
            continue;
        }
        assert_eq!(e4m3_decode(e4m3_encode(v)).to_bits(), v.to_bits(), "code {c:#04x}");
        assert_eq!(e4m3_encode(v), c, "code {c:#04x}");
    }
    for c in 0..0x7Eu8 {
        assert!(e4m3_decode(c) < e4m3_decode(c + 1), "code {c:#04x}");
    }
}

#[test]
fn rounds_to_nearest_even_at_midpoints() {
    for c in 0..0x7Eu8 {
        let (a, b) = (e4m3_decode(c), e4m3_decode(c + 1));
        let mid = (a + b) / 2.0; // exact in f32
        let want = if c % 2 == 0 { c } else { c + 1 };
        assert_eq!(e4m3_encode(mid), want, "midpoint of {c:#04x}");
        assert_eq!(e4m3_encode(-mid), want | 0x80);
        // just off the midpoint goes to the nearer one
        assert_eq!(e4m3_encode(mid - (b - a) / 8.0), c);
        assert_eq!(e4m3_encode(mid + (b - a) / 8.0), c + 1);
    }
}

#[test]
fn saturates_and_never_writes_nan() {
    for v in [448.0, 449.0, 1e9, f32::INFINITY, f32::MAX] {
        assert_eq!(e4m3_encode(v), 0x7E);
        assert_eq!(e4m3_encode(-v), 0xFE);
    }
    assert_eq!(e4m3_encode(f32::NAN), 0);
    assert_eq!(e4m3_encode(1e-30), 0);
}

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (r.random::<f32>() * 2.0 - 1.0) * scale).collect()
}

#[test]
fn prepack_error_is_bounded_per_block() {
    for blocking in [Blocking::PerChannel, Blocking::Block(16), Blocking::Block(32), Blocking::Block(64), Blocking::Block(128)] {
        for (n, k) in [(7, 64), (3, 200), (5, 16), (2, 130)] {
            let mut w = random(n * k, (n * k) as u64, 3.0);
            w[0] = 0.0;
            w[1] = 1e-6; // deep subnormal after scaling
            let p = PackedFp8::prepack(&w, n, k, blocking).unwrap();
            assert_eq!(p.row_stride % ROW_ALIGN, 0);
            assert!(p.row_stride >= k);
            let d = p.dequantize();
            for r in 0..n {
                for c in 0..k {
                    let s = p.scales[r * p.blocks_per_row + c / p.block];
                    let (x, y) = (w[r * k + c], d[r * k + c]);
                    assert!((x - y).abs() <= error_bound(x, s), "{blocking:?} ({r},{c}): {x} vs {y}");
                }
                // padding codes are zero
                assert!(p.codes[r * p.row_stride + k..(r + 1) * p.row_stride].iter().all(|&c| c == 0));
                // every block's absmax maps to ±448
                for b in 0..p.blocks_per_row {
                    let blk = &w[r * k + b * p.block..r * k + ((b + 1) * p.block).min(k)];
                    let absmax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    assert!((p.scales[r * p.blocks_per_row + b] * E4M3_MAX - absmax).abs() <= absmax * 1e-6);
                }
            }
        }
    }
}

#[test]
fn smaller_blocks_are_more_accurate_on_outliers() {
    let (n, k) = (16, 256);
    let mut w = random(n * k, 9, 0.05);
    for r in 0..n {
        w[r * k + 3] = 8.0; // one outlier per row, as in real LLM weights
    }
    let mse = |b| {
        let d = PackedFp8::prepack(&w, n, k, b).unwrap().dequantize();
        w.iter().zip(&d).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
    };
    assert!(mse(Blocking::Block(16)) < mse(Blocking::Block(128)));
    assert!(mse(Blocking::Block(128)) <= mse(Blocking::PerChannel));
}

#[test]
fn bad_blocks_and_shapes_are_errors() {
    for b in [0, 8, 48, 256] {
        assert!(matches!(Blocking::new(b), Err(Error::InvalidOption { .. })));
    }
    assert!(matches!(PackedFp8::prepack(&[1.0; 10], 3, 4, Blocking::DEFAULT), Err(Error::ShapeMismatch { .. })));
    let p = PackedFp8::prepack(&random(4 * 32, 1, 1.0), 4, 32, Blocking::DEFAULT).unwrap();
    let mut out = vec![0.0; 4];
    assert!(matches!(linear_fp8_w8a16(&[1.0f32; 31], &p, None, &mut out), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(linear_fp8_w8a16(&[1.0f32; 32], &p, None, &mut [0.0; 5]), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(linear_fp8_w8a16(&[1.0f32; 32], &p, Some(&[0.0; 3]), &mut out), Err(Error::ShapeMismatch { .. })));
    let odd = PackedFp8::prepack(&random(3 * 32, 1, 1.0), 3, 32, Blocking::DEFAULT).unwrap();
    assert!(matches!(linear_swiglu_fp8(&[1.0f32; 32], &odd, None, &mut [0.0; 1]), Err(Error::ShapeMismatch { .. })));
}

fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= LINEAR_ATOL + LINEAR_RTOL * b.abs(), "{name}[{i}]: {a} vs {b}");
    }
}

#[test]
fn linears_match_their_reference_twins() {
    let shapes = [(1, 16, 16), (1, 64, 48), (3, 130, 40), (5, 256, 64), (2, 100, 18)]; // (m, k, n), k=130/100 not a block multiple
    for blocking in [Blocking::PerChannel, Blocking::Block(16), Blocking::Block(32), Blocking::Block(64), Blocking::Block(128)] {
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            let seed = i as u64 * 31;
            let w = PackedFp8::prepack(&random(n * k, seed, 0.5), n, k, blocking).unwrap();
            let x = random(m * k, seed + 1, 2.0);
            let bias = random(n, seed + 2, 1.0);
            for b in [None, Some(bias.as_slice())] {
                let tag = format!("{blocking:?} m{m} k{k} n{n} bias {}", b.is_some());
                let mut out = vec![0.0; m * n];
                linear_fp8_w8a16(&x, &w, b, &mut out).unwrap();
                assert_close(&format!("w8a16 {tag}"), &out, &linear_fp8_w8a16_ref(&x, &w, b));
                let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                let xh32: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
                linear_fp8_w8a16(&xh, &w, b, &mut out).unwrap();
                assert_close(&format!("w8a16 f16 {tag}"), &out, &linear_fp8_w8a16_ref(&xh32, &w, b));
                linear_fp8(&x, &w, b, &mut out).unwrap();
                assert_close(&format!("w8a8 {tag}"), &out, &linear_fp8_ref(&x, &w, b));
                linear_gelu_fp8(&x, &w, b, &mut out).unwrap();
                assert_close(&format!("gelu {tag}"), &out, &linear_gelu_fp8_ref(&x, &w, b));
                let mut half_out = vec![0.0; m * n / 2];
                if n % 2 == 0 {
                    linear_swiglu_fp8(&x, &w, b, &mut half_out).unwrap();
                    assert_close(&format!("swiglu {tag}"), &half_out, &linear_swiglu_fp8_ref(&x, &w, b));
                }
            }
        }
    }
}

#[test]
fn gelu_matches_known_values() {
    // torch.nn.functional.gelu (erf form)
    for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.841_344_7), (-1.0, -0.158_655_3), (3.0, 2.995_950_6), (-0.5, -0.154_268_5)] {
        assert!((gelu(x) - want).abs() < 1e-6, "gelu({x}) = {}", gelu(x));
    }
}

#[test]
fn w8a16_stays_close_to_the_unquantized_product() {
    // End to end: fp8 block 16 vs the f32 weights, relative to the output's scale.
    let (m, k, n) = (2, 512, 64);
    let wf = random(n * k, 5, 0.1);
    let x = random(m * k, 6, 1.0);
    let w = PackedFp8::prepack(&wf, n, k, Blocking::DEFAULT).unwrap();
    let mut out = vec![0.0; m * n];
    linear_fp8_w8a16(&x, &w, None, &mut out).unwrap();
    let exact: Vec<f32> = (0..m * n)
        .map(|i| (0..k).map(|c| x[(i / n) * k + c] * wf[(i % n) * k + c]).sum())
        .collect();
    let rms = (exact.iter().map(|v| v * v).sum::<f32>() / exact.len() as f32).sqrt();
    let err_rms = (out.iter().zip(&exact).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / exact.len() as f32).sqrt();
    // 3 mantissa bits: per-weight relative error ≤ 2^-4, ~2.5% rms after averaging in the dot
    assert!(err_rms < 0.04 * rms, "rms err {err_rms} vs rms {rms}");
}

#[test]
fn fast_encode_matches_its_reference_twin() {
    // every code's value, every midpoint and its neighbours in ulps, then random magnitudes
    let mut probes = Vec::new();
    for c in 0..0x7Eu8 {
        let (a, b) = (e4m3_decode(c), e4m3_decode(c + 1));
        for v in [a, (a + b) / 2.0, b] {
            for d in -2i32..=2 {
                probes.push(f32::from_bits((v.to_bits() as i32 + d).max(0) as u32));
            }
        }
    }
    let mut r = ChaCha8Rng::seed_from_u64(77);
    for _ in 0..200_000 {
        let e: i32 = r.random_range(-14..10);
        probes.push(r.random::<f32>() * 2f32.powi(e));
    }
    probes.extend([0.0, 447.99, 448.0, 1e-12, f32::MIN_POSITIVE, 1.0 / 64.0, 1.0 / 128.0]);
    for v in probes {
        for s in [v, -v] {
            assert_eq!(e4m3_encode(s), e4m3_encode_ref(s), "{s:e} ({:#010x})", s.to_bits());
        }
    }
}
