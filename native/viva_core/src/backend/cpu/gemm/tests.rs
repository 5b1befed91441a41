use super::*;
use crate::error::Result;
use crate::formats::fp8::Blocking;
use crate::formats::tile::at;
use crate::tensor::{DType, Storage, TensorView};
use crate::formats::WeightFormat;

fn values(len: usize, salt: usize) -> Vec<f32> {
    (0..len).map(|i| (((i * 7919 + salt * 104729) % 1013) as f32 - 506.0) / 700.0).collect()
}

fn view(name: &str, dtype: DType, shape: Vec<usize>, v: &[f32]) -> TensorView {
    let bytes: Vec<u8> = match dtype {
        DType::F32 => v.iter().flat_map(|f| f.to_le_bytes()).collect(),
        DType::F16 => v.iter().flat_map(|&f| half::f16::from_f32(f).to_le_bytes()).collect(),
        DType::BF16 => v.iter().flat_map(|&f| half::bf16::from_f32(f).to_le_bytes()).collect(),
    };
    let len = bytes.len();
    TensorView::new(name.into(), dtype, shape, std::sync::Arc::new(Storage::Heap(bytes)), 0, len)
}

/// Every linear kind the model holds, for an (n, k) weight split into two fused parts.
fn linears(n: usize, k: usize) -> Result<Vec<(String, Linear)>> {
    let (n1, n2) = (n / 2, n - n / 2);
    let (a, b) = (values(n1 * k, 1), values(n2 * k, 2));
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let (pa, pb) = (view("a", dtype, vec![n1, k], &a), view("b", dtype, vec![n2, k], &b));
        let parts: Vec<&TensorView> = if n1 == 0 { vec![&pb] } else { vec![&pa, &pb] };
        out.push((format!("native {dtype:?}"), Linear::fuse(&parts, WeightFormat::Native)?));
        if dtype == DType::F32 {
            out.push(("bf16".into(), Linear::fuse(&parts, WeightFormat::Bf16)?));
            for b in [Blocking::DEFAULT, Blocking::new(32)?, Blocking::PerChannel] {
                out.push((format!("fp8 {b:?}"), Linear::fuse(&parts, WeightFormat::Fp8(b))?));
            }
        }
    }
    Ok(out)
}

/// Each kernel against the f64 twin of its numerics on ragged shapes (m, n, k not multiples
/// of the tiles), every weight format: tolerance 1e-5 of Σ|w·x| (summation order only; the
/// bf16 kernel against "round both factors to bf16, sum the products").
#[test]
fn every_kernel_matches_the_reference_on_ragged_shapes() -> Result<()> {
    let kernels: Vec<(Kernel, Activations)> =
        [(Kernel::Portable, Activations::F32), (Kernel::Avx2, Activations::F32), (Kernel::F32, Activations::F32), (Kernel::Bf16, Activations::Bf16)]
            .into_iter()
            .filter(|(k, _)| (*k != Kernel::F32 || crate::backend::cpu::simd::avx512()) && (*k != Kernel::Avx2 || crate::backend::cpu::simd::avx2()))
        .collect();
    let mut buf = GemmBuf::default();
    // m = 130: 5 token panels
    for (m, n, k) in [(1, 1, 16), (3, 5, 48), (4, 16, 64), (5, 17, 70), (9, 33, 256), (17, 40, 100), (130, 29, 70)] {
        let x = values(m * k, 3);
        for (name, w) in linears(n, k)? {
            for &(kernel, act) in &kernels {
                let want = linear_batch_ref(&w, &x, m, act);
                let mut got = vec![f32::NAN; m * n];
                linear_batch_with(kernel, &w, &x, m, &mut got, &mut buf);
                for t in 0..m {
                    for r in 0..n {
                        let mag: f64 = (0..k).map(|c| (w.weight_at(r, c) as f64 * x[t * k + c] as f64).abs()).sum();
                        let (g, e) = (got[t * n + r], want[t * n + r]);
                        assert!(((g - e).abs() as f64) <= 1e-5 * mag + 1e-30, "{name} {kernel:?} m{m} n{n} k{k} [{t},{r}]: {g} vs {e}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// The fused tile-major expansion is bit-identical to the row expansion it replaces
/// (`expand_row_f32` / `expand_row_bf16`, read through `at::<true>`), zero padding included:
/// every format, bands with ragged rows, k with and without a 16/32 tail.
#[test]
fn fused_tile_major_expansion_matches_the_row_expansion() -> Result<()> {
    for (n, k) in [(1usize, 16usize), (12, 32), (29, 70), (30, 96), (50, 130), (13, 2)] {
        let kp = k.div_ceil(K_ALIGN) * K_ALIGN;
        for (name, w) in linears(n, k)? {
            for (kernel, round) in [(Kernel::F32, false), (Kernel::F32, true), (Kernel::Bf16, false)] {
                for (r0, rows) in [(0, n), (n / 3, n - n / 3)] {
                    let rows_pad = rows.div_ceil(RT) * RT;
                    let units = if kernel == Kernel::F32 { kp } else { kp / 2 };
                    let span = tm_units(units);
                    let mut got = vec![0xDEAD_BEEFu32; rows_pad * span];
                    if !dispatch!(&w, f => expand_tiled(kernel, round, f, r0, rows, k, kp, &mut got)) {
                        // only where the CPU lacks the kernel's instructions
                        let has = if kernel == Kernel::F32 { crate::backend::cpu::simd::avx512() } else { crate::backend::cpu::simd::avx512_bf16() };
                        assert!(!has, "{name} {kernel:?} n{n} k{k}: fused expansion refused");
                        continue;
                    }
                    for r in 0..rows_pad {
                        let (mut f, mut b) = (vec![0f32; kp], vec![0u16; kp]);
                        if r < rows {
                            w.expand_row_f32(r0 + r, &mut f[..k]);
                            w.expand_row_bf16(r0 + r, &mut b[..k]);
                        }
                        for u in 0..span {
                            let want = match u < units {
                                false => 0,
                                true if kernel == Kernel::F32 && round => crate::backend::cpu::simd::bf16_round(f[u]).to_bits(),
                                true if kernel == Kernel::F32 => f[u].to_bits(),
                                true => b[2 * u] as u32 | (b[2 * u + 1] as u32) << 16,
                            };
                            let at = (r / RT) * RT * span + at::<true>(r % RT, u, span);
                            assert_eq!(got[at], want, "{name} {kernel:?} round {round} n{n} k{k} rows {r0}+{rows}: row {r} unit {u}");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The decode GEMV (linear::linear, m = 1) makes the GEMM's products under both numerics:
/// against the same twin, every format, odd k.
#[test]
fn decode_gemv_matches_the_reference_under_both_numerics() -> Result<()> {
    for (n, k) in [(5, 48), (33, 70), (40, 256), (8, 2048 + 16)] {
        let x = values(k, 4);
        for (name, w) in linears(n, k)? {
            for act in [Activations::F32, Activations::Bf16] {
                let want = crate::backend::cpu::linear::linear_ref(&w, &x, act);
                let mut got = vec![f32::NAN; n];
                crate::backend::cpu::linear::linear(&w, &x, &mut got, act);
                for r in 0..n {
                    let mag: f64 = (0..k).map(|c| (w.weight_at(r, c) as f64 * x[c] as f64).abs()).sum();
                    assert!(((got[r] - want[r]).abs() as f64) <= 1e-5 * mag + 1e-30, "{name} {act:?} n{n} k{k} row {r}: {} vs {}", got[r], want[r]);
                }
            }
        }
    }
    Ok(())
}
