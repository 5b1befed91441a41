//! FP8 E4M3 codec, blocked prepack and the fp8 linears against their f32 reference twins.
use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use viva_core::backend::cpu::ops::silu;
use viva_core::formats::fp8::*;
use viva_core::formats::fp8::linear::*;
use viva_core::Error;

/// A fast linear vs its twin: the same quantized operands, only the summation order differs
/// (16 f32 lanes vs one f64 sum), so the error is a few f32 ulps of Σ|x_c·ŵ_c| (+|bias|),
/// the magnitude the terms had before cancelling. Worst case γ_{k/16+4} ≈ 2.4e-6 at k = 512.
const DOT_RTOL: f32 = 1e-5;
/// W8A16 block 16 vs the unquantized f32 product, rms error relative to the output's rms:
/// 3 mantissa bits give ≤ 2^-4 relative per weight, ~2% rms after averaging in a dot.
const W8A16_VS_F32_RMS: f32 = 0.04;
/// W8A8 (activations quantized too, one scale per row) vs the unquantized product.
const W8A8_VS_F32_RMS: f32 = 0.06;

const ALL_BLOCKINGS: [Blocking; 5] = [Blocking::PerChannel, Blocking::Block(16), Blocking::Block(32), Blocking::Block(64), Blocking::Block(128)];

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (r.random::<f32>() * 2.0 - 1.0) * scale).collect()
}

/// The OCP E4M3 definition, written independently of the crate's decoder.
fn spec_value(c: u8) -> f32 {
    let (s, e, m) = (c >> 7, (c >> 3) & 0xF, c & 7);
    if e == 0xF && m == 7 {
        return f32::NAN;
    }
    let mag = if e == 0 { (m as f32 / 8.0) * 2f32.powi(-6) } else { (1.0 + m as f32 / 8.0) * 2f32.powi(e as i32 - 7) };
    if s == 1 {
        -mag
    } else {
        mag
    }
}

// ---- codec ----

#[test]
fn decode_matches_the_spec_for_all_256_codes() {
    let mut nans = 0;
    for c in 0..=255u8 {
        let (got, want) = (e4m3_decode(c), spec_value(c));
        if want.is_nan() {
            assert!(got.is_nan(), "code {c:#04x}");
            nans += 1;
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "code {c:#04x}");
        }
    }
    assert_eq!(nans, 2); // only S.1111.111: no infinities in the "fn" variant
}

#[test]
fn decode_known_values() {
    assert_eq!(e4m3_decode(0x00).to_bits(), 0.0f32.to_bits());
    assert_eq!(e4m3_decode(0x80).to_bits(), (-0.0f32).to_bits());
    assert_eq!(e4m3_decode(0x7E), 448.0);
    assert_eq!(e4m3_decode(0xFE), -448.0);
    assert_eq!(e4m3_decode(0x7D), 416.0);
    assert!(e4m3_decode(0x7F).is_nan() && e4m3_decode(0xFF).is_nan());
    assert_eq!(e4m3_decode(0x08), 2f32.powi(-6)); // smallest normal
    assert_eq!(e4m3_decode(0x07), 7.0 * 2f32.powi(-9)); // largest subnormal
    assert_eq!(e4m3_decode(0x01), 2f32.powi(-9)); // smallest subnormal
    assert_eq!(e4m3_decode(0x38), 1.0);
    assert_eq!(e4m3_decode(0x3C), 1.5);
    assert_eq!(e4m3_decode(0xB8), -1.0);
}

#[test]
fn vector_friendly_decoders_equal_the_table() {
    for c in 0..=255u8 {
        let want = e4m3_decode(c);
        if want.is_nan() {
            continue;
        }
        assert_eq!(e4m3_decode_arith(c).to_bits(), want.to_bits(), "arith {c:#04x}");
        // the SIMD/GPU recipe of the layout docs: as f16, times 2^8
        let via_f16 = f16::from_bits(e4m3_to_f16_bits(c)).to_f32() * 256.0;
        assert_eq!(via_f16.to_bits(), want.to_bits(), "f16 {c:#04x}");
    }
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
        assert!(e4m3_decode(c | 0x80) > e4m3_decode((c + 1) | 0x80), "code {:#04x}", c | 0x80);
    }
    // encode is monotonic (non-decreasing in value) over a dense sweep of [-460, 460]
    let mut prev = f32::NEG_INFINITY;
    for i in -460_000..=460_000 {
        let v = e4m3_decode(e4m3_encode(i as f32 / 1000.0));
        assert!(v >= prev, "at {}", i as f32 / 1000.0);
        prev = v;
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
    // named cases: subnormal ties, the subnormal/normal seam, a normal tie
    assert_eq!(e4m3_encode(2f32.powi(-10)), 0x00); // 0.5 step: tie → 0 (even)
    assert_eq!(e4m3_encode(3.0 * 2f32.powi(-10)), 0x02); // 1.5 steps: tie → 2
    assert_eq!(e4m3_encode(15.0 * 2f32.powi(-10)), 0x08); // between 7·2^-9 and 2^-6: tie → 0x08 (even)
    assert_eq!(e4m3_encode(1.0625), 0x38); // halfway 1 and 1.125 → 1.0
    assert_eq!(e4m3_encode(1.1875), 0x3A); // halfway 1.125 and 1.25 → 1.25
    assert_eq!(e4m3_encode(432.0), 0x7E); // halfway 416 and 448 → 448 (0x7E even)
}

#[test]
fn saturates_and_never_writes_nan() {
    for v in [448.0, 449.0, 464.0, 480.0, 1e9, f32::INFINITY, f32::MAX] {
        assert_eq!(e4m3_encode(v), 0x7E, "{v}");
        assert_eq!(e4m3_encode(-v), 0xFE, "{v}");
    }
    assert_eq!(e4m3_encode(447.99), 0x7E);
    assert_eq!(e4m3_encode(f32::NAN), 0);
    assert_eq!(e4m3_encode(-f32::NAN), 0);
    assert_eq!(e4m3_encode(1e-30), 0);
    assert_eq!(e4m3_encode(-1e-30), 0x80); // underflow keeps the sign: -0
    assert_eq!(e4m3_encode(-0.0), 0x80);
    assert_eq!(e4m3_encode(0.0), 0x00);
    // no f32 encodes to a NaN code: every exponent of both signs, dense mantissas
    for bits in (0..=u32::MAX).step_by(997) {
        let c = e4m3_encode(f32::from_bits(bits));
        assert!(c & 0x7F != 0x7F, "{:#010x} → NaN code", bits);
    }
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

// ---- prepack ----

#[test]
fn prepack_error_is_bounded_per_block() {
    let mut worst_ratio = 0.0f32;
    for blocking in ALL_BLOCKINGS {
        for (n, k) in [(7, 64), (3, 200), (5, 16), (2, 130), (4, 1), (3, 17)] {
            let mut w = random(n * k, (n * k) as u64, 3.0);
            w[0] = 0.0;
            if k > 1 {
                w[1] = 1e-6; // deep subnormal after scaling
            }
            let p = PackedFp8::prepack(&w, n, k, blocking).unwrap();
            p.validate().unwrap();
            let d = p.dequantize();
            for r in 0..n {
                for c in 0..k {
                    let s = p.scales[r * p.blocks_per_row + c / p.block];
                    let (x, y) = (w[r * k + c], d[r * k + c]);
                    let bound = error_bound(x, s);
                    assert!((x - y).abs() <= bound, "{blocking:?} ({r},{c}): {x} vs {y}");
                    worst_ratio = worst_ratio.max((x - y).abs() / bound);
                }
                // every block's absmax maps to ±448
                for b in 0..p.blocks_per_row {
                    let blk = &w[r * k + b * p.block..r * k + ((b + 1) * p.block).min(k)];
                    let absmax = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let s = p.scales[r * p.blocks_per_row + b];
                    if absmax == 0.0 {
                        assert_eq!(s, 1.0, "all-zero block");
                    } else {
                        assert!((s * E4M3_MAX - absmax).abs() <= absmax * 1e-6);
                    }
                }
            }
        }
    }
    // the bound is tight, not vacuous: some element comes within 20% of it
    eprintln!("prepack: worst |w − ŵ| / error_bound = {worst_ratio:.3}");
    assert!(worst_ratio > 0.8, "{worst_ratio}");
}

#[test]
fn layout_rows_padded_to_16_and_scales_per_vector() {
    for blocking in ALL_BLOCKINGS {
        for k in [1, 15, 16, 17, 100, 130, 200, 256] {
            let n = 3;
            let w = random(n * k, k as u64, 1.0);
            let p = PackedFp8::prepack(&w, n, k, blocking).unwrap();
            let block = if blocking == Blocking::PerChannel { k } else { p.block };
            assert_eq!(p.block, block);
            assert_eq!(p.row_stride, k.div_ceil(16) * 16);
            assert_eq!(p.blocks_per_row, k.div_ceil(block));
            assert_eq!((p.codes.len(), p.scales.len()), (n * p.row_stride, n * p.blocks_per_row));
            let d = p.dequantize();
            for r in 0..n {
                let (codes, scales) = p.row(r);
                assert!(codes[k..].iter().all(|&c| c == 0), "padding codes are +0");
                // the kernels' view: 16-byte vector j uses scale 16j / block, padding included
                for j in 0..p.row_stride / 16 {
                    for l in 0..16 {
                        let c = 16 * j + l;
                        let v = e4m3_decode(codes[c]) * scales[16 * j / block];
                        if c < k {
                            assert_eq!(v, d[r * k + c], "{blocking:?} k{k} ({r},{c})");
                        } else {
                            assert_eq!(v, 0.0);
                        }
                    }
                }
                // a short last block takes its scale from its own (real) elements only
                let last = p.blocks_per_row - 1;
                let tail = &w[r * k + last * block..(r + 1) * k];
                assert_eq!(scales[last], tail.iter().fold(0.0f32, |m, v| m.max(v.abs())) / E4M3_MAX);
            }
        }
    }
}

#[test]
fn zero_and_non_finite_weights_pack_to_finite_values() {
    let k = 32;
    let mut w = vec![0.0f32; 4 * k]; // row 0: all zero
    w[k..2 * k].copy_from_slice(&random(k, 3, 1.0));
    w[k + 5] = f32::INFINITY; // row 1: ±inf and NaN among finite values
    w[k + 6] = f32::NEG_INFINITY;
    w[k + 7] = f32::NAN;
    w[2 * k..3 * k].fill(f32::INFINITY); // row 2: nothing finite
    w[3 * k..4 * k].fill(1e-44); // row 3: absmax / 448 underflows f32
    for blocking in ALL_BLOCKINGS {
        let p = PackedFp8::prepack(&w, 4, k, blocking).unwrap();
        assert!(p.scales.iter().all(|s| s.is_finite() && *s > 0.0), "{blocking:?}");
        assert!(p.codes.iter().all(|&c| c & 0x7F != 0x7F), "no NaN codes");
        let d = p.dequantize();
        assert!(d.iter().all(|v| v.is_finite()));
        assert!(d[..k].iter().all(|&v| v == 0.0));
        let s = p.scales[p.blocks_per_row + 5 / p.block];
        assert_eq!((d[k + 5], d[k + 6], d[k + 7]), (448.0 * s, -448.0 * s, 0.0));
        assert!(d[2 * k..3 * k].iter().all(|&v| v == 448.0));
        assert!(d[3 * k..].iter().all(|&v| v.abs() <= 1e-44));
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
    let (m16, m32, m128, mpc) = (mse(Blocking::Block(16)), mse(Blocking::Block(32)), mse(Blocking::Block(128)), mse(Blocking::PerChannel));
    assert!(m16 < m32 && m32 < m128 && m128 <= mpc, "{m16} {m32} {m128} {mpc}");
}

#[test]
fn bad_blocks_are_invalid_options() {
    for b in [0, 1, 8, 48, 96, 256] {
        assert!(matches!(Blocking::new(b), Err(Error::InvalidOption { ref key, .. }) if key == "block_size"), "{b}");
        // a hand-built Block(b) is rejected too (no chunks(0) panic, no kernel-unfriendly size)
        assert!(matches!(PackedFp8::prepack(&[1.0; 64], 1, 64, Blocking::Block(b)), Err(Error::InvalidOption { .. })), "{b}");
    }
    for b in Blocking::BLOCK_SIZES {
        assert_eq!(Blocking::new(b), Ok(Blocking::Block(b)));
    }
    assert_eq!(Blocking::DEFAULT, Blocking::Block(16));
}

#[test]
fn wrong_shapes_are_shape_mismatches() {
    let shape_err = |r: Result<(), Error>| match r {
        Err(Error::ShapeMismatch { name, expected, got }) => (name, expected, got),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    };
    for (n, k, len) in [(3, 4, 10), (0, 4, 0), (3, 0, 0)] {
        let r = PackedFp8::prepack(&vec![1.0; len], n, k, Blocking::DEFAULT).map(|_| ());
        assert_eq!(shape_err(r), ("fp8 weight".to_string(), vec![n, k], vec![len]));
    }
    let p = PackedFp8::prepack(&random(4 * 32, 1, 1.0), 4, 32, Blocking::DEFAULT).unwrap();
    let mut out = vec![0.0; 4];
    let (name, expected, got) = shape_err(linear_fp8_w8a16(&[1.0f32; 31], &p, None, &mut out));
    assert_eq!((name.as_str(), expected, got), ("linear_fp8_w8a16 x (m × k)", vec![32], vec![31]));
    let (name, expected, got) = shape_err(linear_fp8(&[1.0f32; 64], &p, None, &mut out));
    assert_eq!((name.as_str(), expected, got), ("linear_fp8 out (m × n)", vec![8], vec![4]));
    let (name, expected, got) = shape_err(linear_gelu_fp8(&[1.0f32; 32], &p, Some(&[0.0; 3]), &mut out));
    assert_eq!((name.as_str(), expected, got), ("linear_gelu_fp8 bias (n)", vec![4], vec![3]));
    shape_err(linear_fp8_w8a16::<f32>(&[], &p, None, &mut out));
    shape_err(linear_fp8_w8a16(&[1.0f32; 32], &p, None, &mut [0.0; 5]));
    // swiglu: out is m × n/2; the packed weight must have an even row count
    shape_err(linear_swiglu_fp8(&[1.0f32; 32], &p, None, &mut out));
    linear_swiglu_fp8(&[1.0f32; 32], &p, None, &mut out[..2]).unwrap();
    let odd = PackedFp8::prepack(&random(3 * 32, 1, 1.0), 3, 32, Blocking::DEFAULT).unwrap();
    shape_err(linear_swiglu_fp8(&[1.0f32; 32], &odd, None, &mut [0.0; 1]));
    // the reference twins validate the same way
    assert!(matches!(linear_fp8_w8a16_ref(&[1.0; 31], &p, None), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(linear_swiglu_fp8_ref(&[1.0; 32], &odd, None), Err(Error::ShapeMismatch { .. })));
}

#[test]
fn an_inconsistent_packed_weight_is_an_error_not_a_panic() {
    let good = PackedFp8::prepack(&random(4 * 40, 2, 1.0), 4, 40, Blocking::Block(32)).unwrap();
    let mut broken = Vec::new();
    let mut p = good.clone();
    p.codes.pop();
    broken.push(p);
    let mut p = good.clone();
    p.scales.truncate(3);
    broken.push(p);
    let mut p = good.clone();
    p.block = 16; // disagrees with blocking
    broken.push(p);
    let mut p = good.clone();
    p.k = 17; // row_stride no longer k rounded up
    broken.push(p);
    let mut p = good.clone();
    p.blocking = Blocking::Block(0);
    broken.push(p);
    for p in broken {
        assert!(matches!(p.validate(), Err(Error::Internal(_))), "{p:?}");
        let x = vec![1.0f32; p.k];
        let mut out = vec![0.0; p.n];
        assert!(linear_fp8_w8a16(&x, &p, None, &mut out).is_err());
        assert!(linear_fp8(&x, &p, None, &mut out).is_err());
        assert!(linear_gelu_fp8(&x, &p, None, &mut out).is_err());
        assert!(linear_swiglu_fp8(&x, &p, None, &mut out[..p.n / 2]).is_err());
    }
}

// ---- linears ----

/// Asserts |got − want| ≤ DOT_RTOL · mag per element; returns the worst |got − want| / mag.
fn assert_close(name: &str, got: &[f32], want: &[f32], mag: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{name}");
    let mut worst = 0.0f32;
    for (i, ((a, b), m)) in got.iter().zip(want).zip(mag).enumerate() {
        let rel = (a - b).abs() / m.max(f32::MIN_POSITIVE);
        assert!(rel <= DOT_RTOL, "{name}[{i}]: {a} vs {b} (|diff| / Σ|x·w| = {rel:e})");
        worst = worst.max(rel);
    }
    worst
}

/// Σ_c |x_c · ŵ_rc| + |bias_r| for every (token, row): the scale of the summation-order error.
fn magnitudes(x: &[f32], wd: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let m = x.len() / k;
    (0..m * n)
        .map(|i| {
            let (t, r) = (i / n, i % n);
            (0..k).map(|c| (x[t * k + c] * wd[r * k + c]).abs()).sum::<f32>() + bias.map_or(0.0, |b| b[r].abs())
        })
        .collect()
}

#[test]
fn linears_match_their_reference_twins() {
    // (m, k, n): m = 1 is the decode GEMV; n = 70 spans several row tasks; k = 100, 130, 200
    // are not multiples of the larger blocks, k = 100 and 130 not of 16 either
    let shapes = [(1, 16, 16), (1, 64, 48), (3, 130, 40), (5, 256, 64), (2, 100, 18), (1, 200, 70), (7, 48, 6), (1, 512, 96)];
    let mut worst = [0.0f32; 6];
    for blocking in ALL_BLOCKINGS {
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            let seed = i as u64 * 31;
            let w = PackedFp8::prepack(&random(n * k, seed, 0.5), n, k, blocking).unwrap();
            let wd = w.dequantize();
            let x = random(m * k, seed + 1, 2.0);
            let bias = random(n, seed + 2, 1.0);
            for b in [None, Some(bias.as_slice())] {
                let tag = format!("{blocking:?} m{m} k{k} n{n} bias {}", b.is_some());
                let mag = magnitudes(&x, &wd, n, k, b);
                let mut out = vec![f32::NAN; m * n];
                linear_fp8_w8a16(&x, &w, b, &mut out).unwrap();
                let want = linear_fp8_w8a16_ref(&x, &w, b).unwrap();
                worst[0] = worst[0].max(assert_close(&format!("w8a16 {tag}"), &out, &want, &mag));

                // f16 and bf16 activations: the same as their f32 values
                let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
                let xh32: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
                linear_fp8_w8a16(&xh, &w, b, &mut out).unwrap();
                worst[1] = worst[1].max(assert_close(&format!("w8a16 f16 {tag}"), &out, &linear_fp8_w8a16_ref(&xh32, &w, b).unwrap(), &mag));
                let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
                let xb32: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
                linear_fp8_w8a16(&xb, &w, b, &mut out).unwrap();
                worst[1] = worst[1].max(assert_close(&format!("w8a16 bf16 {tag}"), &out, &linear_fp8_w8a16_ref(&xb32, &w, b).unwrap(), &mag));

                linear_fp8(&x, &w, b, &mut out).unwrap();
                worst[2] = worst[2].max(assert_close(&format!("w8a8 {tag}"), &out, &linear_fp8_ref(&x, &w, b).unwrap(), &mag));

                // gelu is 1.13-Lipschitz: the pre-activation tolerance, scaled by that
                linear_gelu_fp8(&x, &w, b, &mut out).unwrap();
                let mag_gelu: Vec<f32> = mag.iter().map(|v| 1.13 * v).collect();
                worst[3] = worst[3].max(assert_close(&format!("gelu {tag}"), &out, &linear_gelu_fp8_ref(&x, &w, b).unwrap(), &mag_gelu));
                // and it is the erf GELU of the plain output
                let plain: Vec<f32> = want.iter().map(|&v| gelu(v)).collect();
                assert_close(&format!("gelu∘w8a16 {tag}"), &out, &plain, &mag_gelu);

                if n % 2 == 0 {
                    let inter = n / 2;
                    let mut half_out = vec![f32::NAN; m * inter];
                    linear_swiglu_fp8(&x, &w, b, &mut half_out).unwrap();
                    // d(silu(g)·u) ≤ 1.1·|u|·dg + |g|·du (silu' ≤ 1.1, |silu(g)| ≤ |g|)
                    let mag_sw: Vec<f32> = (0..m * inter)
                        .map(|j| {
                            let (t, i) = (j / inter, j % inter);
                            let (g, u) = (want[t * n + i], want[t * n + inter + i]);
                            1.1 * u.abs() * mag[t * n + i] + (g.abs() + 1e-3) * mag[t * n + inter + i]
                        })
                        .collect();
                    let sw_ref = linear_swiglu_fp8_ref(&x, &w, b).unwrap();
                    worst[4] = worst[4].max(assert_close(&format!("swiglu {tag}"), &half_out, &sw_ref, &mag_sw));
                }
            }
        }
    }
    eprintln!("worst |fast − ref| / Σ|x·ŵ| (DOT_RTOL {DOT_RTOL:e}): w8a16 {:.2e}, w8a16 f16/bf16 {:.2e}, w8a8 {:.2e}, gelu {:.2e}, swiglu {:.2e}", worst[0], worst[1], worst[2], worst[3], worst[4]);
}

#[test]
fn dispatched_dot_matches_the_portable_build() {
    // dot_fp8_row runs the AVX-512 dot (with x prepared) or an AVX2+FMA build of the body:
    // compare both with the baseline build
    for blocking in ALL_BLOCKINGS {
        for (k, n) in [(16, 3), (100, 5), (130, 4), (512, 6), (1, 2)] {
            let w = PackedFp8::prepack(&random(n * k, k as u64, 1.0), n, k, blocking).unwrap();
            let wd = w.dequantize();
            let x = random(k, 7, 1.0);
            for r in 0..n {
                let mag: f32 = (0..k).map(|c| (x[c] * wd[r * k + c]).abs()).sum();
                let mut buf = Vec::new();
                let xs = fp8_input(&x, &mut buf);
                let b = dot_fp8_row_portable(&w, r, &x);
                for a in [dot_fp8_row(&w, r, &x, None), dot_fp8_row(&w, r, &x, xs)] {
                    assert!((a - b).abs() <= DOT_RTOL * mag, "{blocking:?} k{k} row {r}: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn swiglu_reads_gate_rows_then_up_rows() {
    // pack gate and up separately and stacked: row-wise scales make the codes identical, so the
    // fused linear must equal silu(gate) · up computed from the two halves
    let (m, k, inter) = (3, 96, 20);
    let gate = random(inter * k, 41, 0.3);
    let up = random(inter * k, 42, 0.3);
    let x = random(m * k, 43, 1.0);
    let bias = random(2 * inter, 44, 0.5);
    let fused = PackedFp8::prepack(&[gate.clone(), up.clone()].concat(), 2 * inter, k, Blocking::DEFAULT).unwrap();
    let pg = PackedFp8::prepack(&gate, inter, k, Blocking::DEFAULT).unwrap();
    let pu = PackedFp8::prepack(&up, inter, k, Blocking::DEFAULT).unwrap();
    let (mut g, mut u, mut out) = (vec![0.0; m * inter], vec![0.0; m * inter], vec![0.0; m * inter]);
    linear_fp8_w8a16(&x, &pg, Some(&bias[..inter]), &mut g).unwrap();
    linear_fp8_w8a16(&x, &pu, Some(&bias[inter..]), &mut u).unwrap();
    linear_swiglu_fp8(&x, &fused, Some(&bias), &mut out).unwrap();
    for j in 0..m * inter {
        assert_eq!(out[j], silu(g[j]) * u[j], "{j}");
    }
}

#[test]
fn gelu_matches_known_values() {
    // torch.nn.functional.gelu (erf form, HF "gelu"), float64
    for (x, want) in [(0.0f32, 0.0f32), (1.0, 0.841_344_7), (-1.0, -0.158_655_3), (3.0, 2.995_950_6), (-0.5, -0.154_268_5), (-4.0, -1.266_849_6e-4), (0.1, 0.053_982_8)] {
        assert!((gelu(x) - want).abs() <= 1e-6 * want.abs().max(1.0), "gelu({x}) = {}", gelu(x));
    }
}

#[test]
fn w8a16_stays_close_to_the_unquantized_product() {
    // End to end: fp8 block 16 vs the f32 weights, relative to the output's scale.
    let (m, k, n) = (2, 512, 64);
    let wf = random(n * k, 5, 0.1);
    let x = random(m * k, 6, 1.0);
    let w = PackedFp8::prepack(&wf, n, k, Blocking::DEFAULT).unwrap();
    let exact: Vec<f32> = (0..m * n).map(|i| (0..k).map(|c| x[(i / n) * k + c] * wf[(i % n) * k + c]).sum()).collect();
    let rms = |v: &[f32], w: &[f32]| (v.iter().zip(w).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / v.len() as f32).sqrt();
    let zero = vec![0.0; m * n];
    let mut out = vec![0.0; m * n];
    linear_fp8_w8a16(&x, &w, None, &mut out).unwrap();
    let e16 = rms(&out, &exact) / rms(&exact, &zero);
    linear_fp8(&x, &w, None, &mut out).unwrap();
    let e8 = rms(&out, &exact) / rms(&exact, &zero);
    eprintln!("vs unquantized f32: w8a16 rms err {e16:.4}, w8a8 {e8:.4} (of the output rms)");
    assert!(e16 < W8A16_VS_F32_RMS, "{e16}");
    assert!(e8 < W8A8_VS_F32_RMS && e8 > e16, "{e8}");
}

#[test]
fn activation_quantization_is_absmax_per_row_and_finite() {
    let (q, s) = quantize_row(&[1.0, -2.0, 0.5, f32::INFINITY, f32::NAN]);
    assert_eq!(s, 2.0 / E4M3_MAX);
    assert_eq!(q, vec![224.0, -448.0, 112.0, 448.0, 0.0]);
    let (q, s) = quantize_row(&[0.0; 4]);
    assert_eq!((q, s), (vec![0.0; 4], 1.0));
}
