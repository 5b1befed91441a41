//! CPU kernels of the Llama forward pass besides the linears (linear.rs): RMSNorm, SiLU,
//! softmax, RoPE, and the attention drivers over the head-major KV cache (attn.rs holds the
//! grouped flash-decoding kernel), with the plain twins the tests compare against.
use std::f64::consts::PI;

use rayon::prelude::*;

use crate::backend::cpu::attn;
use crate::kv::rows::LayerKv;
use crate::config::{ModelConfig, RopeScaling};

use crate::backend::cpu::par::PARALLEL_MIN_WORK;

/// HF LlamaRMSNorm: `x * rsqrt(mean(x²) + eps) * weight`, all in f32.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inv);
    }
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// In-place softmax, max-subtracted.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// RoPE inverse frequencies (head_dim / 2), as HF computes them, llama3 scaling included
/// (transformers `_compute_llama3_parameters`).
pub fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base = cfg.rope_theta as f64;
    let inv: Vec<f64> = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f64 / d as f64)).collect();
    match cfg.rope_scaling {
        RopeScaling::Default => inv.into_iter().map(|f| f as f32).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let (factor, lo, hi) = (factor as f64, low_freq_factor as f64, high_freq_factor as f64);
            let old_ctx = original_max_position_embeddings as f64;
            let low_freq_wavelen = old_ctx / lo;
            let high_freq_wavelen = old_ctx / hi;
            inv.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * PI / f;
                    let scaled = if wavelen > low_freq_wavelen {
                        f / factor
                    } else if wavelen < high_freq_wavelen {
                        f
                    } else {
                        let smooth = (old_ctx / wavelen - lo) / (hi - lo);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    scaled as f32
                })
                .collect()
        }
    }
}

/// cos/sin of `pos * inv_freq` (head_dim / 2 each); the angle is an f32 product as in HF.
pub fn rope_cos_sin(inv_freq: &[f32], pos: usize, cos: &mut [f32], sin: &mut [f32]) {
    for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let angle = (pos as f32 * f) as f64;
        *c = angle.cos() as f32;
        *s = angle.sin() as f32;
    }
}

/// Rotate-half RoPE on every head of `x` (n_heads, head_dim): pairs (i, i + head_dim/2), as HF.
pub fn apply_rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos[i] - b * sin[i];
            head[i + half] = b * cos[i] + a * sin[i];
        }
    }
}

/// Causal attention of one query position over the cached keys/values 0..=pos.
/// q (n_heads, head_dim); k_cache, v_cache (n_kv_heads, max_seq, head_dim) of one layer;
/// scores scratch (n_heads, max_seq); out (n_heads, head_dim).
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub max_seq: usize,
}

impl AttnShape {
    pub fn of(cfg: &ModelConfig, max_seq: usize) -> Self {
        AttnShape { n_heads: cfg.num_attention_heads, n_kv_heads: cfg.num_key_value_heads, head_dim: cfg.head_dim, max_seq }
    }

}

/// Floats of scratch [`attention`] needs for `s` (scores and the per-piece partials).
pub fn attention_scratch_len(s: &AttnShape) -> usize {
    let pieces = s.max_seq.div_ceil(attn::CHUNK);
    s.n_heads * pieces * attn::CHUNK + s.n_kv_heads * pieces * attn::partial_len(s.n_heads / s.n_kv_heads, s.head_dim)
}

/// `scratch`: at least [`attention_scratch_len`] floats.
/// `k_cache`, `v_cache`: the layer's rows of this sequence (its block table, kv/rows.rs).
pub fn attention(s: &AttnShape, q: &[f32], k_cache: &LayerKv, v_cache: &LayerKv, pos: usize, scratch: &mut [f32], out: &mut [f32]) {
    let (hd, len) = (s.head_dim, pos + 1);
    let g = s.n_heads / s.n_kv_heads;
    let pieces = len.div_ceil(attn::CHUNK);
    let plen = attn::partial_len(g, hd);
    if attn::available(hd) && scratch.len() >= attention_scratch_len(s) {
        // (KV group, piece of the sequence) tasks, then one merge per group
        let (sc, parts) = scratch.split_at_mut(s.n_heads * s.max_seq.div_ceil(attn::CHUNK) * attn::CHUNK);
        let task = |(i, (sc, part)): (usize, (&mut [f32], &mut [f32]))| {
            let (grp, piece) = (i / pieces, i % pieces);
            let (t0, t1) = (piece * attn::CHUNK, ((piece + 1) * attn::CHUNK).min(len));
            let qg = &q[grp * g * hd..(grp + 1) * g * hd];
            attn::group_chunk(qg, hd, k_cache.head(grp), v_cache.head(grp), t0, t1, sc, part);
        };
        let n_tasks = s.n_kv_heads * pieces;
        if s.n_heads * len * hd < PARALLEL_MIN_WORK {
            sc.chunks_mut(g * attn::CHUNK).zip(parts.chunks_mut(plen)).take(n_tasks).enumerate().for_each(task);
        } else {
            sc.par_chunks_mut(g * attn::CHUNK).zip(parts.par_chunks_mut(plen)).take(n_tasks).enumerate().for_each(task);
        }
        for (grp, o) in out.chunks_mut(g * hd).enumerate() {
            attn::merge(&parts[grp * pieces * plen..(grp + 1) * pieces * plen], g, hd, o);
        }
        return;
    }
    let head = |(h, (o, sc)): (usize, (&mut [f32], &mut [f32]))| attend_head(s, h, &q[h * hd..(h + 1) * hd], k_cache, v_cache, len, sc, o);
    if s.n_heads * len * hd < PARALLEL_MIN_WORK {
        out.chunks_mut(hd).zip(scratch.chunks_mut(s.max_seq)).enumerate().for_each(head);
    } else {
        out.par_chunks_mut(hd).zip(scratch.par_chunks_mut(s.max_seq)).enumerate().for_each(head);
    }
}

/// Causal attention of m consecutive query positions pos0..pos0+m (the prompt pass), each over
/// the cached positions 0..=its own: q rows `q_stride` apart (head-major within a row), out
/// (m, n_heads · head_dim). Split over (row, KV group) pairs (grouped kernel) or (row, head).
pub fn attention_rows(s: &AttnShape, q: &[f32], q_stride: usize, k_cache: &LayerKv, v_cache: &LayerKv, pos0: usize, out: &mut [f32]) {
    let hd = s.head_dim;
    let m = out.len() / (s.n_heads * hd);
    let g = s.n_heads / s.n_kv_heads;
    if attn::available(hd) {
        out.par_chunks_mut(g * hd).enumerate().for_each_init(
            || (vec![0f32; g * (pos0 + m)], vec![0f32; attn::partial_len(g, hd)]),
            |(sc, part), (i, o)| {
                let (row, grp) = (i / s.n_kv_heads, i % s.n_kv_heads);
                let qg = &q[row * q_stride + grp * g * hd..row * q_stride + (grp + 1) * g * hd];
                attn::group_chunk(qg, hd, k_cache.head(grp), v_cache.head(grp), 0, pos0 + row + 1, sc, part);
                attn::merge(part, g, hd, o);
            },
        );
        return;
    }
    out.par_chunks_mut(hd).enumerate().for_each_init(
        || vec![0f32; pos0 + m],
        |sc, (i, o)| {
            let (row, h) = (i / s.n_heads, i % s.n_heads);
            let qh = &q[row * q_stride + h * hd..row * q_stride + (h + 1) * hd];
            attend_head(s, h, qh, k_cache, v_cache, pos0 + row + 1, sc, o);
        },
    );
}

/// Query head `h` (qh: head_dim) over cached positions 0..len of its KV head: scores in
/// sc[..len], softmax, weighted sum of V into o (head_dim).
#[inline]
#[allow(clippy::too_many_arguments)]
fn attend_head(s: &AttnShape, h: usize, qh: &[f32], k_cache: &LayerKv, v_cache: &LayerKv, len: usize, sc: &mut [f32], o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::simd::avx2() {
        // SAFETY: AVX2/FMA present (checked by `avx2`); the body is safe Rust.
        return unsafe { attend_head_avx2(s, h, qh, k_cache, v_cache, len, sc, o) };
    }
    attend_head_body(s, h, qh, k_cache, v_cache, len, sc, o)
}

/// [`attend_head`] compiled for AVX2 (its P·V loop vectorises 8 wide).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn attend_head_avx2(s: &AttnShape, h: usize, qh: &[f32], k_cache: &LayerKv, v_cache: &LayerKv, len: usize, sc: &mut [f32], o: &mut [f32]) {
    attend_head_body(s, h, qh, k_cache, v_cache, len, sc, o)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_head_body(s: &AttnShape, h: usize, qh: &[f32], k_cache: &LayerKv, v_cache: &LayerKv, len: usize, sc: &mut [f32], o: &mut [f32]) {
    let hd = s.head_dim;
    let kvh = h / (s.n_heads / s.n_kv_heads);
    let (k_cache, v_cache) = (k_cache.head(kvh), v_cache.head(kvh));
    let scale = 1.0 / (hd as f32).sqrt();
    let sc = &mut sc[..len];
    for (t, st) in sc.iter_mut().enumerate() {
        *st = crate::backend::cpu::simd::dot_f32(qh, k_cache.row(t)) * scale;
    }
    softmax(sc);
    o.fill(0.0);
    for (t, &p) in sc.iter().enumerate() {
        let vt = v_cache.row(t);
        for (oi, &vi) in o.iter_mut().zip(vt) {
            *oi += p * vi;
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{KvDims, BLOCK};

    #[test]
    fn rope_rotates_pairs_half_apart() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        apply_rope(&mut x, 4, &[0.0, 1.0], &[1.0, 0.0]);
        // pair (0,2) rotated by 90°, pair (1,3) unrotated
        assert_eq!(x, vec![-3.0, 2.0, 1.0, 4.0]);
    }

    fn rope_config(head_dim: usize, rope_theta: f32, rope_scaling: RopeScaling) -> ModelConfig {
        ModelConfig {
            hidden_size: head_dim * 16,
            num_hidden_layers: 1,
            num_attention_heads: 16,
            num_key_value_heads: 16,
            head_dim,
            intermediate_size: 1,
            rms_norm_eps: 1e-5,
            rope_theta,
            rope_scaling,
            vocab_size: 1,
            max_position_embeddings: 131072,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    fn assert_rel(got: &[f32], want: &[(usize, f32)], tol: f32) {
        for &(i, w) in want {
            assert!((got[i] - w).abs() <= tol * w.abs(), "inv_freq[{i}] = {} vs HF {w}", got[i]);
        }
    }

    /// Values from transformers 5.23 `ROPE_INIT_FUNCTIONS["default"/"llama3"]` (f32): Llama-3.1's
    /// rope_scaling (factor 8, low 1, high 4, original 8192, theta 5e5, head_dim 128). Indices
    /// 29..=34 lie in the smoothed band, 35.. in the low-frequency band (divided by factor).
    #[test]
    fn rope_inv_freq_matches_transformers() {
        let plain = rope_inv_freq(&rope_config(64, 10000.0, RopeScaling::Default));
        assert_eq!(plain.len(), 32);
        assert_rel(&plain, &[(0, 1.0), (1, 0.749_894_2), (15, 0.013_335_215), (31, 0.000_133_352_15)], 2e-6);

        let llama3 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let scaled = rope_inv_freq(&rope_config(128, 500000.0, llama3));
        assert_eq!(scaled.len(), 64);
        assert_rel(
            &scaled,
            &[
                (0, 1.0),
                (1, 0.814_617_2),
                (28, 0.003_211_446_1),
                (29, 0.002_166_570_6),
                (31, 0.000_856_751_46),
                (34, 0.000_178_507_79),
                (35, 9.556_212e-5),
                (63, 3.068_925_9e-7),
            ],
            2e-6,
        );
    }

    #[test]
    fn rmsnorm_by_hand() {
        // mean(x²) = (9 + 16) / 2 = 12.5
        let mut out = [0.0; 2];
        rmsnorm(&mut out, &[3.0, -4.0], &[1.0, 2.0], 0.0);
        let inv = 1.0 / 12.5f32.sqrt();
        assert_eq!(out, [3.0 * inv, -8.0 * inv]);
    }

    /// Plain attention, written independently of [`attention`]: f64, explicit GQA head map,
    /// caches (n_kv_heads, max_seq, head_dim).
    fn attention_naive(s: &AttnShape, q: &[f32], k: &[f32], v: &[f32], pos: usize) -> Vec<f32> {
        let hd = s.head_dim;
        let at = |kvh: usize, t: usize, d: usize| (kvh * s.max_seq + t) * hd + d;
        let mut out = vec![0.0; s.n_heads * hd];
        for h in 0..s.n_heads {
            let kvh = h * s.n_kv_heads / s.n_heads;
            let dot = |t: usize| (0..hd).map(|d| q[h * hd + d] as f64 * k[at(kvh, t, d)] as f64).sum::<f64>();
            let scores: Vec<f64> = (0..=pos).map(|t| dot(t) / (hd as f64).sqrt()).collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = w.iter().sum();
            for d in 0..hd {
                let acc: f64 = (0..=pos).map(|t| w[t] / z * v[at(kvh, t, d)] as f64).sum();
                out[h * hd + d] = acc as f32;
            }
        }
        out
    }

    /// NaN in every KV head's positions `len..` of a (n_kv_heads, max_seq, head_dim) cache.
    fn poison_after(c: &mut [f32], s: &AttnShape, len: usize) {
        for h in c.chunks_exact_mut(s.max_seq * s.head_dim) {
            h[len * s.head_dim..].fill(f32::NAN);
        }
    }

    /// Layer 0's K and V rows of `paged` caches.
    fn views<'a>(k: &'a [f32], v: &'a [f32], table: &'a [u32], dims: KvDims) -> (LayerKv<'a>, LayerKv<'a>) {
        match (LayerKv::new(k, table, dims, 0), LayerKv::new(v, table, dims, 0)) {
            (Some(k), Some(v)) => (k, v),
            _ => panic!("the table lies inside the pool"),
        }
    }

    /// A (n_kv_heads, max_seq, head_dim) cache laid out in blocks (kv/), the table in reverse
    /// order so the indirection shows; rows past max_seq in the last block hold NaN.
    fn paged(c: &[f32], s: &AttnShape) -> (Vec<f32>, Vec<u32>, KvDims) {
        let (hd, nb) = (s.head_dim, s.max_seq.div_ceil(BLOCK));
        let dims = KvDims { layers: 1, kv_heads: s.n_kv_heads, head_dim: hd };
        let table: Vec<u32> = (0..nb as u32).rev().collect();
        let mut data = vec![f32::NAN; nb * dims.block_floats()];
        for h in 0..s.n_kv_heads {
            for t in 0..s.max_seq {
                let at = (table[t / BLOCK] as usize * s.n_kv_heads + h) * BLOCK * hd + (t % BLOCK) * hd;
                data[at..at + hd].copy_from_slice(&c[(h * s.max_seq + t) * hd..(h * s.max_seq + t + 1) * hd]);
            }
        }
        (data, table, dims)
    }

    /// GQA and MHA, on the serial and the parallel path; positions after `pos` hold NaN so
    /// any read past the causal limit shows.
    #[test]
    fn attention_matches_naive_reference() {
        for (n_heads, n_kv_heads, head_dim, pos) in [(4, 2, 8, 5), (4, 4, 16, 0), (8, 2, 64, 299), (6, 6, 128, 200), (32, 4, 64, 999), (6, 2, 128, 700), (9, 3, 64, 2047)] {
            let s = AttnShape { n_heads, n_kv_heads, head_dim, max_seq: pos + 3 };
            let kv_dim = n_kv_heads * head_dim;
            let val = |i: usize, salt: usize| (((i * 7919 + salt) % 1009) as f32 / 1009.0 - 0.5) * 2.0;
            let q: Vec<f32> = (0..n_heads * head_dim).map(|i| val(i, 1)).collect();
            let mut k: Vec<f32> = (0..s.max_seq * kv_dim).map(|i| val(i, 2)).collect();
            let mut v: Vec<f32> = (0..s.max_seq * kv_dim).map(|i| val(i, 3)).collect();
            poison_after(&mut k, &s, pos + 1);
            poison_after(&mut v, &s, pos + 1);
            let mut scores = vec![0.0; attention_scratch_len(&s)];
            let mut out = vec![0.0; n_heads * head_dim];
            let ((kd, table, dims), (vd, _, _)) = (paged(&k, &s), paged(&v, &s));
            let (kl, vl) = views(&kd, &vd, &table, dims);
            attention(&s, &q, &kl, &vl, pos, &mut scores, &mut out);
            let want = attention_naive(&s, &q, &k, &v, pos);
            for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-5, "heads {n_heads}/{n_kv_heads} hd {head_dim} pos {pos} [{i}]: {a} vs {b}");
            }
        }
    }

    /// The prompt-pass attention: each row equals the one-position attention at its position.
    #[test]
    fn attention_rows_match_one_position_attention() {
        let (n_heads, n_kv_heads, head_dim, pos0, m) = (8, 2, 64, 5, 7);
        let s = AttnShape { n_heads, n_kv_heads, head_dim, max_seq: pos0 + m + 2 };
        let kv_dim = n_kv_heads * head_dim;
        let (q_dim, stride) = (n_heads * head_dim, n_heads * head_dim + 2 * kv_dim);
        let val = |i: usize, salt: usize| (((i * 7919 + salt) % 1009) as f32 / 1009.0 - 0.5) * 2.0;
        let q: Vec<f32> = (0..m * stride).map(|i| val(i, 1)).collect();
        let mut k: Vec<f32> = (0..s.max_seq * kv_dim).map(|i| val(i, 2)).collect();
        let mut v: Vec<f32> = (0..s.max_seq * kv_dim).map(|i| val(i, 3)).collect();
        poison_after(&mut k, &s, pos0 + m);
        poison_after(&mut v, &s, pos0 + m);
        let mut out = vec![0.0; m * q_dim];
        let ((kd, table, dims), (vd, _, _)) = (paged(&k, &s), paged(&v, &s));
        let (kl, vl) = views(&kd, &vd, &table, dims);
        attention_rows(&s, &q, stride, &kl, &vl, pos0, &mut out);
        let mut scores = vec![0.0; attention_scratch_len(&s)];
        for row in 0..m {
            let mut want = vec![0.0; q_dim];
            attention(&s, &q[row * stride..row * stride + q_dim], &kl, &vl, pos0 + row, &mut scores, &mut want);
            assert_eq!(&out[row * q_dim..(row + 1) * q_dim], &want[..], "row {row}");
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, 1000.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] > 0.999);
    }

}
