//! Every registered format against the reference matvec of the separate parts.
use super::*;
use crate::backend::cpu::linear;
use crate::formats::native::matvec_ref;

fn tensor(name: &str, n: usize, k: usize, seed: usize) -> TensorView {
    let data: Vec<f32> = (0..n * k).map(|i| (((i + seed) * 7919 % 541) as f32 - 270.0) / 300.0).collect();
    TensorView::from_f32(name, vec![n, k], &data)
}

/// Each format's fused matvec against the reference matvec of the separate parts.
#[test]
fn fused_linears_match_their_parts_in_every_format() -> Result<()> {
    let k = 48;
    let parts = [tensor("q", 32, k, 1), tensor("k", 16, k, 2), tensor("v", 16, k, 3)];
    let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.21).cos()).collect();
    let mut want = Vec::new();
    for p in &parts {
        let mut o = vec![0.0; p.shape[0]];
        matvec_ref(p, &x, &mut o);
        want.extend(o);
    }
    let refs: Vec<&TensorView> = parts.iter().collect();
    for (format, tol) in [(WeightFormat::Native, 1e-5), (WeightFormat::Bf16, 2e-2), (WeightFormat::Fp8(fp8::Blocking::DEFAULT), 0.15)] {
        let lin = Linear::fuse(&refs, format)?;
        assert_eq!(lin.shape(), (64, k));
        let mut got = vec![0.0; 64];
        linear::linear(&lin, &x, &mut got, Activations::F32);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{format:?} row {i}: {a} vs {b}");
        }
    }
    // fp8 exactly against its own dequantized weights (tight)
    if let Linear::Fp8(p) = Linear::fuse(&refs, WeightFormat::default())? {
        let deq = TensorView::from_f32("deq", vec![64, k], &p.dequantize());
        let (mut a, mut b) = (vec![0.0; 64], vec![0.0; 64]);
        linear::linear(&Linear::Fp8(p), &x, &mut a, Activations::F32);
        matvec_ref(&deq, &x, &mut b);
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()));
        }
    }
    Ok(())
}

#[test]
fn fuse_rejects_mismatched_widths() {
    let (a, b) = (tensor("a", 4, 16, 0), tensor("b", 4, 8, 0));
    assert!(matches!(Linear::fuse(&[&a, &b], WeightFormat::Native), Err(Error::ShapeMismatch { .. })));
}

/// The registry's names round-trip, and the default is fp8 block 16.
#[test]
fn registry_names_round_trip() {
    for &name in WeightFormat::NAMES {
        assert_eq!(WeightFormat::from_name(name).map(WeightFormat::name), Some(name));
    }
    assert_eq!(WeightFormat::from_name("fp8"), Some(WeightFormat::default()));
    assert_eq!(WeightFormat::from_name("q4_k"), None);
}
