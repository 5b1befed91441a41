//! Linears over FP8-packed weights, the same signatures on every backend (this is the CPU one):
//! `out (m × n) = act(x (m × k) · Wᵀ + bias)` for W = PackedFp8 [n, k]. Each has a plain f32
//! `_ref` twin (dequantize, then a naive matmul) that the tests compare against.
use half::{bf16, f16};
use rayon::prelude::*;

use super::fp8::{e4m3_decode, e4m3_encode, PackedFp8, E4M3_MAX};
use crate::error::{Error, Result};

/// Activation element types a W8A16 linear reads directly (converted in the inner loop).
pub trait Activation: Copy + Send + Sync {
    fn to_f32(self) -> f32;
}
impl Activation for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}
impl Activation for f16 {
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}
impl Activation for bf16 {
    #[inline]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

fn check_shapes(name: &str, x_len: usize, w: &PackedFp8, bias: Option<&[f32]>, out_len: usize, out_cols: usize) -> Result<usize> {
    let mismatch = |expected: Vec<usize>, got: Vec<usize>| Error::ShapeMismatch { name: name.into(), expected, got };
    if x_len % w.k != 0 || x_len == 0 {
        return Err(mismatch(vec![x_len / w.k.max(1), w.k], vec![x_len]));
    }
    let m = x_len / w.k;
    if out_len != m * out_cols {
        return Err(mismatch(vec![m, out_cols], vec![out_len]));
    }
    if let Some(b) = bias {
        if b.len() != w.n {
            return Err(mismatch(vec![w.n], vec![b.len()]));
        }
    }
    Ok(m)
}

/// Σ_blocks scale_b · Σ_{c in b} decode(code_c) · x_c for row `r` (f32 accumulate).
#[inline]
pub fn dot_fp8_row<A: Activation>(w: &PackedFp8, r: usize, x: &[A]) -> f32 {
    let codes = &w.codes[r * w.row_stride..r * w.row_stride + w.k];
    let scales = &w.scales[r * w.blocks_per_row..(r + 1) * w.blocks_per_row];
    codes
        .chunks(w.block)
        .zip(x.chunks(w.block))
        .zip(scales)
        .map(|((cb, xb), &s)| s * cb.iter().zip(xb).map(|(&c, &v)| e4m3_decode(c) * v.to_f32()).sum::<f32>())
        .sum()
}

/// Runs `row_fn(token, out_row)` over the m output rows in parallel.
fn per_token(out: &mut [f32], cols: usize, row_fn: impl Fn(usize, &mut [f32]) + Sync) {
    out.par_chunks_mut(cols).enumerate().for_each(|(t, o)| row_fn(t, o));
}

/// W8A16: activations stay f32/f16/bf16, weights dequantize in the inner loop.
pub fn linear_fp8_w8a16<A: Activation>(x: &[A], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    check_shapes("linear_fp8_w8a16", x.len(), w, bias, out.len(), w.n)?;
    per_token(out, w.n, |t, o| {
        let xt = &x[t * w.k..(t + 1) * w.k];
        for (r, y) in o.iter_mut().enumerate() {
            *y = dot_fp8_row(w, r, xt) + bias.map_or(0.0, |b| b[r]);
        }
    });
    Ok(())
}

/// W8A8: each activation row is quantized to E4M3 with its own absmax scale, then the
/// products of codes are accumulated in f32 and rescaled by both scales.
pub fn linear_fp8(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    check_shapes("linear_fp8", x.len(), w, bias, out.len(), w.n)?;
    per_token(out, w.n, |t, o| {
        let (xq, sx) = quantize_row(&x[t * w.k..(t + 1) * w.k]);
        for (r, y) in o.iter_mut().enumerate() {
            *y = sx * dot_fp8_row(w, r, &xq) + bias.map_or(0.0, |b| b[r]);
        }
    });
    Ok(())
}

/// A row quantized to E4M3 and decoded back (values on the E4M3 grid), and its scale.
fn quantize_row(x: &[f32]) -> (Vec<f32>, f32) {
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = if absmax > 0.0 { absmax / E4M3_MAX } else { 1.0 };
    (x.iter().map(|&v| e4m3_decode(e4m3_encode(v / s))).collect(), s)
}

/// GELU as HF's "gelu" (erf form): 0.5·x·(1 + erf(x/√2)).
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x as f64 / std::f64::consts::SQRT_2) as f32)
}

/// erf from the Numerical Recipes erfc Chebyshev fit (|relative error| < 1.2e-7: below f32's).
fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

/// `gelu(x Wᵀ + bias)`, W8A16.
pub fn linear_gelu_fp8<A: Activation>(x: &[A], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    linear_fp8_w8a16(x, w, bias, out)?;
    out.iter_mut().for_each(|v| *v = gelu(*v));
    Ok(())
}

/// SwiGLU with gate and up packed together as ONE weight of 2·I rows: rows 0..I are gate_proj,
/// rows I..2I are up_proj (a plain concatenation, like fused QKV). out (m × I) =
/// silu(x·gateᵀ + b[..I]) · (x·upᵀ + b[I..]).
pub fn linear_swiglu_fp8<A: Activation>(x: &[A], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    if w.n % 2 != 0 {
        return Err(Error::ShapeMismatch { name: "linear_swiglu_fp8 gate·up rows".into(), expected: vec![w.n + 1], got: vec![w.n] });
    }
    let inter = w.n / 2;
    check_shapes("linear_swiglu_fp8", x.len(), w, bias, out.len(), inter)?;
    per_token(out, inter, |t, o| {
        let xt = &x[t * w.k..(t + 1) * w.k];
        for (i, y) in o.iter_mut().enumerate() {
            let g = dot_fp8_row(w, i, xt) + bias.map_or(0.0, |b| b[i]);
            let u = dot_fp8_row(w, inter + i, xt) + bias.map_or(0.0, |b| b[inter + i]);
            *y = crate::ops::silu(g) * u;
        }
    });
    Ok(())
}

// ---- reference twins: dequantize, then a naive f32 matmul ----

fn matmul_ref(x: &[f32], w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let m = x.len() / k;
    let mut out = vec![0.0; m * n];
    for t in 0..m {
        for r in 0..n {
            let mut acc = 0.0f64;
            for c in 0..k {
                acc += x[t * k + c] as f64 * w[r * k + c] as f64;
            }
            out[t * n + r] = acc as f32 + bias.map_or(0.0, |b| b[r]);
        }
    }
    out
}

pub fn linear_fp8_w8a16_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Vec<f32> {
    matmul_ref(x, &w.dequantize(), w.n, w.k, bias)
}

pub fn linear_fp8_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Vec<f32> {
    let xq: Vec<f32> = x
        .chunks(w.k)
        .flat_map(|row| {
            let (q, s) = quantize_row(row);
            q.into_iter().map(move |v| v * s)
        })
        .collect();
    matmul_ref(&xq, &w.dequantize(), w.n, w.k, bias)
}

pub fn linear_gelu_fp8_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Vec<f32> {
    linear_fp8_w8a16_ref(x, w, bias).into_iter().map(gelu).collect()
}

pub fn linear_swiglu_fp8_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Vec<f32> {
    let full = linear_fp8_w8a16_ref(x, w, bias);
    let inter = w.n / 2;
    full.chunks(w.n).flat_map(|row| (0..inter).map(move |i| crate::ops::silu(row[i]) * row[inter + i])).collect()
}
