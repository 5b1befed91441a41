//! The low-level linears over FP8-packed weights (the NIF's `linear_*`), the same signatures on
//! every backend (this is the CPU one), and the fp8 row dot every CPU path uses:
//! `out (m × n) = act(x (m × k) · Wᵀ + bias)` for W = PackedFp8 [n, k], x and out row-major.
//! Each has a plain f32 `_ref` twin (dequantize, then a naive f64-accumulated matmul) that the
//! tests compare against. Work is split over tokens and, within a token, over output rows.
use std::borrow::Cow;

use half::{bf16, f16};
use rayon::prelude::*;

use super::codec::{e4m3_decode, e4m3_decode_arith, e4m3_encode};
use super::pack::{block_scale, PackedFp8};
use super::simd;
use crate::error::{Error, Result};

/// Lanes of the dot product's inner loop: one 16-byte code vector, and a whole number of them
/// per block (blocks are 16/32/64/128), so the loop body is a fixed-width vector body.
const LANES: usize = 16;
/// Output rows per rayon task: enough work to amortise scheduling, small enough to balance.
const ROWS_PER_TASK: usize = 32;

/// Activation element types a W8A16 linear reads: each token's row is converted to f32 once
/// (k values), then the dot products run on f32.
pub trait Activation: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    /// The row as f32, borrowed when it already is.
    fn row_f32(row: &[Self]) -> Cow<'_, [f32]> {
        Cow::Owned(row.iter().map(|v| v.to_f32()).collect())
    }
}
impl Activation for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    fn row_f32(row: &[f32]) -> Cow<'_, [f32]> {
        Cow::Borrowed(row)
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

/// Validates w, x (m × k), bias (n) and out (m × out_cols); returns m. Every mismatch names the
/// linear and the argument; flat buffers report their length as a one-element shape.
fn check_shapes(name: &str, x_len: usize, w: &PackedFp8, bias: Option<&[f32]>, out_len: usize, out_cols: usize) -> Result<usize> {
    w.validate()?;
    let mismatch = |arg: &str, expected: Vec<usize>, got: Vec<usize>| Error::ShapeMismatch { name: format!("{name} {arg}"), expected, got };
    if x_len == 0 || !x_len.is_multiple_of(w.k) {
        // m as the output implies it (at least 1): x must hold m whole rows of k
        let m = (out_len / out_cols.max(1)).max(1);
        return Err(mismatch("x (m × k)", vec![m * w.k], vec![x_len]));
    }
    let m = x_len / w.k;
    if out_len != m * out_cols {
        return Err(mismatch("out (m × n)", vec![m * out_cols], vec![out_len]));
    }
    if let Some(b) = bias {
        if b.len() != w.n {
            return Err(mismatch("bias (n)", vec![w.n], vec![b.len()]));
        }
    }
    Ok(m)
}

/// Row `r` of `w` dotted with `x`: Σ_blocks scale_b · Σ_{c∈b} decode(code_c)·x_c, f32
/// accumulation in 16 lanes, one 16-code vector per step (vector j's scale is 16j / block,
/// as in the layout docs). Decode is the branch-free arithmetic form, so the body vectorises;
/// on x86-64 with AVX2+FMA the same body is compiled for those (the default target is SSE2).
/// `xs`: x prepared by `simd::fp8_x` (the AVX-512 dot), when it could be ([`fp8_input`]).
/// Needs r < n and x.len() ≥ k (callers validate; out of range indexes like a slice).
pub fn dot_fp8_row(w: &PackedFp8, r: usize, x: &[f32], xs: Option<&[f32]>) -> f32 {
    let (codes, scales) = w.row(r);
    if let Some(v) = xs.and_then(|xs| simd::dot_fp8(codes, scales, w.block, &xs[..w.k.min(xs.len())])) {
        return v;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::simd::avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `avx2`); the body is safe Rust.
        return unsafe { dot_fp8_row_avx2(w, r, x) };
    }
    dot_fp8_row_body(w, r, x)
}

/// x prepared for [`dot_fp8_row`] into `buf` (`simd::fp8_x`): `Some` when the AVX-512 dot
/// takes it.
pub fn fp8_input<'b>(x: &[f32], buf: &'b mut Vec<f32>) -> Option<&'b [f32]> {
    simd::fp8_x(x, buf).then_some(&buf[..])
}

/// [`dot_fp8_row`] compiled for the baseline target only (tests compare the two).
pub fn dot_fp8_row_portable(w: &PackedFp8, r: usize, x: &[f32]) -> f32 {
    dot_fp8_row_body(w, r, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_fp8_row_avx2(w: &PackedFp8, r: usize, x: &[f32]) -> f32 {
    dot_fp8_row_body(w, r, x)
}

#[inline(always)]
fn dot_fp8_row_body(w: &PackedFp8, r: usize, x: &[f32]) -> f32 {
    let (codes, scales) = w.row(r);
    let (codes, x) = (&codes[..w.k], &x[..w.k]);
    let (mut cv, mut xv) = (codes.chunks_exact(LANES), x.chunks_exact(LANES));
    let mut acc = [0f32; LANES];
    let tail: f32 = if w.blocks_per_row == 1 {
        // per-channel (or one block): scale once at the end
        for (cs, xs) in (&mut cv).zip(&mut xv) {
            for l in 0..LANES {
                acc[l] += e4m3_decode_arith(cs[l]) * xs[l];
            }
        }
        cv.remainder().iter().zip(xv.remainder()).map(|(&c, &v)| e4m3_decode_arith(c) * v).sum()
    } else {
        // vectors per block is a power of two (blocks are 16..128): a shift, not a division
        let shift = (w.block / LANES).trailing_zeros();
        for (j, (cs, xs)) in (&mut cv).zip(&mut xv).enumerate() {
            let s = scales[j >> shift];
            for l in 0..LANES {
                acc[l] += s * (e4m3_decode_arith(cs[l]) * xs[l]);
            }
        }
        // the remainder (k % 16 codes) lies in the last block
        let s = scales[w.blocks_per_row - 1];
        s * cv.remainder().iter().zip(xv.remainder()).map(|(&c, &v)| e4m3_decode_arith(c) * v).sum::<f32>()
    };
    let sum = acc.iter().sum::<f32>() + tail;
    if w.blocks_per_row == 1 {
        scales[0] * sum
    } else {
        sum
    }
}

/// Runs `row_fn(x_row, out_chunk, first_col)` for every token (row of x, k wide) and every
/// ROWS_PER_TASK-wide chunk of its output row, in parallel (a GEMV with m = 1 still spreads
/// over the pool). x_row is f32: converted once per token.
fn for_each_output<A: Activation>(x: &[A], k: usize, out: &mut [f32], cols: usize, row_fn: impl Fn(&[f32], Option<&[f32]>, &mut [f32], usize) + Sync) {
    out.par_chunks_mut(cols).zip(x.par_chunks(k)).for_each(|(o, xt)| {
        let xt = A::row_f32(xt);
        let mut buf = Vec::new();
        let xs = fp8_input(&xt, &mut buf);
        o.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(i, oc)| row_fn(&xt, xs, oc, i * ROWS_PER_TASK));
    });
}

#[inline]
fn bias_at(bias: Option<&[f32]>, r: usize) -> f32 {
    bias.map_or(0.0, |b| b[r])
}

/// W8A16: activations stay f32/f16/bf16, weights dequantize in the inner loop, f32 accumulate.
pub fn linear_fp8_w8a16<A: Activation>(x: &[A], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    check_shapes("linear_fp8_w8a16", x.len(), w, bias, out.len(), w.n)?;
    for_each_output(x, w.k, out, w.n, |xt, xs, o, r0| {
        for (r, y) in (r0..).zip(o.iter_mut()) {
            *y = dot_fp8_row(w, r, xt, xs) + bias_at(bias, r);
        }
    });
    Ok(())
}

/// W8A8: each activation row is quantized to E4M3 with its own absmax scale (as the weights
/// are, one block per row), the products of the two grids are accumulated in f32 (exact: 4 × 4
/// significant bits) and rescaled by both scales.
pub fn linear_fp8(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    check_shapes("linear_fp8", x.len(), w, bias, out.len(), w.n)?;
    out.par_chunks_mut(w.n).zip(x.par_chunks(w.k)).for_each(|(o, xt)| {
        let (xq, sx) = quantize_row(xt);
        let mut buf = Vec::new();
        let xs = fp8_input(&xq, &mut buf);
        o.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(i, oc)| {
            for (r, y) in (i * ROWS_PER_TASK..).zip(oc.iter_mut()) {
                *y = sx * dot_fp8_row(w, r, &xq, xs) + bias_at(bias, r);
            }
        });
    });
    Ok(())
}

/// A row quantized to E4M3 (per-row absmax scale, the same rule as a weight block) and decoded
/// back: (values on the E4M3 grid, scale). ±inf saturate, NaN becomes 0.
pub fn quantize_row(x: &[f32]) -> (Vec<f32>, f32) {
    let s = block_scale(x);
    (x.iter().map(|&v| e4m3_decode(e4m3_encode(v / s))).collect(), s)
}

/// GELU as HF's "gelu" (erf form, torch's default): 0.5·x·(1 + erf(x/√2)).
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

/// `gelu(x Wᵀ + bias)`, W8A16, the bias and GELU applied as each output is produced.
pub fn linear_gelu_fp8<A: Activation>(x: &[A], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    check_shapes("linear_gelu_fp8", x.len(), w, bias, out.len(), w.n)?;
    for_each_output(x, w.k, out, w.n, |xt, xs, o, r0| {
        for (r, y) in (r0..).zip(o.iter_mut()) {
            *y = gelu(dot_fp8_row(w, r, xt, xs) + bias_at(bias, r));
        }
    });
    Ok(())
}

/// SwiGLU with gate and up packed together as ONE weight of 2·I rows: rows 0..I are gate_proj,
/// rows I..2I are up_proj (a plain concatenation, as the model's fused gate·up and QKV are;
/// prepack `[gate; up]` stacked along rows). Bias, if any, is 2·I wide in the same order.
/// out (m × I) = silu(x·gateᵀ + b[..I]) · (x·upᵀ + b[I..]).
pub fn linear_swiglu_fp8<A: Activation>(x: &[A], w: &PackedFp8, bias: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
    w.validate()?;
    if !w.n.is_multiple_of(2) {
        return Err(Error::ShapeMismatch { name: "linear_swiglu_fp8 w (2·I × k) rows".into(), expected: vec![w.n + 1], got: vec![w.n] });
    }
    let inter = w.n / 2;
    check_shapes("linear_swiglu_fp8", x.len(), w, bias, out.len(), inter)?;
    for_each_output(x, w.k, out, inter, |xt, xs, o, i0| {
        for (i, y) in (i0..).zip(o.iter_mut()) {
            let g = dot_fp8_row(w, i, xt, xs) + bias_at(bias, i);
            let u = dot_fp8_row(w, inter + i, xt, xs) + bias_at(bias, inter + i);
            *y = crate::backend::cpu::ops::silu(g) * u;
        }
    });
    Ok(())
}

// ---- reference twins: dequantize (table decode), then a naive matmul, f64 accumulation ----

fn matmul_ref(x: &[f32], w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let m = x.len() / k;
    let mut out = vec![0.0; m * n];
    for t in 0..m {
        for r in 0..n {
            let mut acc = 0.0f64;
            for c in 0..k {
                acc += x[t * k + c] as f64 * w[r * k + c] as f64;
            }
            out[t * n + r] = acc as f32 + bias_at(bias, r);
        }
    }
    out
}

/// Twin of [`linear_fp8_w8a16`] (f32 activations; convert f16/bf16 to f32 first).
pub fn linear_fp8_w8a16_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    check_shapes("linear_fp8_w8a16_ref", x.len(), w, bias, (x.len() / w.k) * w.n, w.n)?;
    Ok(matmul_ref(x, &w.dequantize(), w.n, w.k, bias))
}

/// Twin of [`linear_fp8`]: x quantized row by row, dequantized, then the f32 matmul.
pub fn linear_fp8_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    check_shapes("linear_fp8_ref", x.len(), w, bias, (x.len() / w.k) * w.n, w.n)?;
    let xq: Vec<f32> = x
        .chunks(w.k)
        .flat_map(|row| {
            let (q, s) = quantize_row(row);
            q.into_iter().map(move |v| v * s)
        })
        .collect();
    Ok(matmul_ref(&xq, &w.dequantize(), w.n, w.k, bias))
}

/// Twin of [`linear_gelu_fp8`].
pub fn linear_gelu_fp8_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    Ok(linear_fp8_w8a16_ref(x, w, bias)?.into_iter().map(gelu).collect())
}

/// Twin of [`linear_swiglu_fp8`].
pub fn linear_swiglu_fp8_ref(x: &[f32], w: &PackedFp8, bias: Option<&[f32]>) -> Result<Vec<f32>> {
    if !w.n.is_multiple_of(2) {
        return Err(Error::ShapeMismatch { name: "linear_swiglu_fp8_ref w (2·I × k) rows".into(), expected: vec![w.n + 1], got: vec![w.n] });
    }
    let full = linear_fp8_w8a16_ref(x, w, bias)?;
    let inter = w.n / 2;
    Ok(full.chunks(w.n).flat_map(|row| (0..inter).map(move |i| crate::backend::cpu::ops::silu(row[i]) * row[inter + i])).collect())
}
