//! CPU attention kernel for long contexts: one KV head's group of query heads over a range of
//! cached positions, as an unnormalised softmax partial (max, Σe, Σe·v) — the flash-decoding
//! split. Decode splits the sequence into `CHUNK`-position pieces × KV groups (every core busy
//! even with 3 KV heads) and merges the partials; the prompt pass runs one piece per (row, group).
//!
//! Why grouped: with GQA the G query heads of a KV head read the same K and V rows; loading each
//! row once for the whole group (≤ 4 heads at a time for head_dim 64, 2 for 128, so q·k and the
//! P·V accumulators stay in registers) cuts the cache traffic G-fold. AVX-512 only, head_dim 64 or
//! 128; elsewhere `ops::attend_head` (the plain per-head path, also the tests' twin) runs.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::kv::rows::KvRows;
use crate::kv::BLOCK;

/// Positions per decode task.
pub const CHUNK: usize = 256;

/// Floats of one task's partial for a group of `g` heads: acc (g × hd), then max (g), Σe (g).
pub fn partial_len(g: usize, hd: usize) -> usize {
    g * (hd + 2)
}

/// Whether [`group_chunk`] runs here for this head_dim.
pub fn available(hd: usize) -> bool {
    crate::backend::cpu::simd::avx512() && (hd == 64 || hd == 128)
}

/// Query heads `q` (g × hd, consecutive heads of one KV group) over positions t0..t1 of the
/// group's K/V rows (block tables, kv/rows.rs; t0 a multiple of `kv::BLOCK`): scores into `sc`
/// (≥ g·(t1−t0)), the partial into `part` (`partial_len(g, hd)`). `false` (nothing written)
/// when [`available`] is false, a slice is short or t1 is past the rows.
#[allow(clippy::too_many_arguments)]
pub fn group_chunk(q: &[f32], hd: usize, k: KvRows, v: KvRows, t0: usize, t1: usize, sc: &mut [f32], part: &mut [f32]) -> bool {
    let g = q.len() / hd.max(1);
    let n = t1.saturating_sub(t0);
    if !available(hd) || n == 0 || g == 0 || q.len() != g * hd || sc.len() < g * n || part.len() < partial_len(g, hd) || t1 > k.len() || t1 > v.len() || t0 % BLOCK != 0 {
        return false;
    }
    let scale = 1.0 / (hd as f32).sqrt();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (`available`); K/V reads are rows t0..t1 (< len, checked
    // above), each head_dim floats inside the pool (`KvRows::ptr`); q, sc and part accesses stay
    // inside their checked lengths.
    unsafe {
        let (acc, ms) = part.split_at_mut(g * hd);
        let mut h = 0;
        while h < g {
            let sg = (g - h).min(if hd == 64 { 4 } else { 2 });
            let (qs, scs, accs) = (&q[h * hd..(h + sg) * hd], &mut sc[h * n..(h + sg) * n], &mut acc[h * hd..(h + sg) * hd]);
            let ms = &mut ms[h..];
            macro_rules! run {
                ($v:literal, $sg:literal) => {
                    group_avx512::<$v, $sg>(qs, k, v, t0, t1, scale, scs, accs, ms, g)
                };
            }
            match (hd, sg) {
                (64, 4) => run!(4, 4),
                (64, 3) => run!(4, 3),
                (64, 2) => run!(4, 2),
                (64, _) => run!(4, 1),
                (_, 2) => run!(8, 2),
                _ => run!(8, 1),
            }
            h += sg;
        }
        return true;
    }
    #[allow(unreachable_code)]
    false
}

/// Merges one group's partials (`parts`: pieces × `partial_len(g, hd)`, in sequence order) into
/// `out` (g × hd): softmax over all pieces, P·V normalised once. No allocation.
pub fn merge(parts: &[f32], g: usize, hd: usize, out: &mut [f32]) {
    let plen = partial_len(g, hd);
    for h in 0..g {
        let m = parts.chunks_exact(plen).map(|p| p[g * hd + h]).fold(f32::NEG_INFINITY, f32::max);
        let o = &mut out[h * hd..(h + 1) * hd];
        o.fill(0.0);
        let mut s = 0.0f32;
        for p in parts.chunks_exact(plen) {
            let w = (p[g * hd + h] - m).exp();
            s += w * p[g * hd + g + h];
            for (oi, &a) in o.iter_mut().zip(&p[h * hd..(h + 1) * hd]) {
                *oi += w * a;
            }
        }
        let inv = 1.0 / s;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// SG heads (head_dim 16·V; SG·V ≤ 16 keeps q and the accumulators in registers) of a group of
/// `g`: scores, softmax partial, P·V. `ms`: the group's max array from this sub-group's first
/// head on (its Σe at ms[g..]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn group_avx512<const V: usize, const SG: usize>(q: &[f32], k: KvRows, v: KvRows, t0: usize, t1: usize, scale: f32, sc: &mut [f32], acc_out: &mut [f32], ms: &mut [f32], g: usize) {
    const MAXH: usize = 4;
    let sg = SG;
    let n = t1 - t0;
    let mut qv = [[_mm512_setzero_ps(); V]; MAXH];
    for h in 0..sg {
        for i in 0..V {
            qv[h][i] = _mm512_loadu_ps(q.as_ptr().add(h * V * 16 + 16 * i));
        }
    }
    // scores, 16 positions at a time: 16 partial-dot vectors reduced together by `sum16`
    // (~3 ops per score instead of a full horizontal sum each); the 16 K rows stay in L1 for the
    // sub-group's heads. The last < 16 positions take one horizontal sum each.
    let mut mx = [f32::NEG_INFINITY; MAXH];
    let sp = sc.as_mut_ptr();
    let hd = 16 * V;
    let (klen, vlen) = (k.len(), v.len());
    let mut t = t0;
    // 16 positions at a time: t stays a multiple of BLOCK (= 16), so they are one block's rows,
    // head_dim floats apart
    while t + 16 <= t1 {
        // K rows two steps ahead: the cache streams from DRAM (a layer's K/V is read once per
        // token, long evicted by the weights); measured 360 → 270 µs per TinyLlama layer at 2000
        // positions (cpu_gemm, noisy machine)
        if t + PREFETCH_ROWS < klen {
            let ahead = k.ptr(t + PREFETCH_ROWS);
            for j in 0..16 {
                prefetch_row::<V>(ahead.wrapping_add(j * hd));
            }
        }
        let kb = k.ptr(t);
        for h in 0..sg {
            let mut a = [_mm512_setzero_ps(); 16];
            for (j, aj) in a.iter_mut().enumerate() {
                let row = kb.add(j * hd);
                let mut x = _mm512_mul_ps(qv[h][0], _mm512_loadu_ps(row));
                for i in 1..V {
                    x = _mm512_fmadd_ps(qv[h][i], _mm512_loadu_ps(row.add(16 * i)), x);
                }
                *aj = x;
            }
            let s16 = _mm512_mul_ps(sum16(&a), _mm512_set1_ps(scale));
            _mm512_storeu_ps(sp.add(h * n + t - t0), s16);
            mx[h] = mx[h].max(_mm512_reduce_max_ps(s16));
        }
        t += 16;
    }
    while t < t1 {
        let row = k.ptr(t);
        for h in 0..sg {
            let mut a = _mm512_mul_ps(qv[h][0], _mm512_loadu_ps(row));
            for i in 1..V {
                a = _mm512_fmadd_ps(qv[h][i], _mm512_loadu_ps(row.add(16 * i)), a);
            }
            let s = _mm512_reduce_add_ps(a) * scale;
            *sp.add(h * n + t - t0) = s;
            mx[h] = mx[h].max(s);
        }
        t += 1;
    }
    // e = exp(s − max), Σe, per head
    for h in 0..sg {
        let (m, mut sum) = (_mm512_set1_ps(mx[h]), _mm512_setzero_ps());
        let base = sp.add(h * n);
        let mut t = 0;
        while t < n {
            let mask: __mmask16 = if n - t >= 16 { 0xFFFF } else { (1u16 << (n - t)) - 1 };
            let e = crate::backend::cpu::simd::exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, base.add(t)), m));
            _mm512_mask_storeu_ps(base.add(t), mask, e);
            sum = _mm512_mask_add_ps(sum, mask, sum, e);
            t += 16;
        }
        ms[h] = mx[h];
        ms[g + h] = _mm512_reduce_add_ps(sum);
    }
    // Σ e·v: each V row loaded once for the sub-group
    let mut acc = [[_mm512_setzero_ps(); V]; MAXH];
    for t in 0..n {
        if t0 + t + PREFETCH_ROWS < vlen {
            prefetch_row::<V>(v.ptr(t0 + t + PREFETCH_ROWS));
        }
        let row = v.ptr(t0 + t);
        let mut p = [_mm512_setzero_ps(); MAXH];
        for h in 0..sg {
            p[h] = _mm512_set1_ps(*sp.add(h * n + t));
        }
        for i in 0..V {
            let vr = _mm512_loadu_ps(row.add(16 * i));
            for h in 0..sg {
                acc[h][i] = _mm512_fmadd_ps(p[h], vr, acc[h][i]);
            }
        }
    }
    for h in 0..sg {
        for i in 0..V {
            _mm512_storeu_ps(acc_out.as_mut_ptr().add(h * V * 16 + 16 * i), acc[h][i]);
        }
    }
}

/// Cache rows ahead of the one in use that the kernel prefetches (two blocks: a multiple of
/// BLOCK, so the K prefetch of 16 rows stays in one block).
const PREFETCH_ROWS: usize = 2 * BLOCK;

/// Prefetches one cached row of head_dim 16·V floats (V 64-byte lines). A hint: addresses past
/// the cache are not dereferenced.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_row<const V: usize>(row: *const f32) {
    for i in 0..V {
        _mm_prefetch(row.wrapping_add(16 * i) as *const i8, _MM_HINT_T0);
    }
}

/// The 16 horizontal sums of v[0..16] as one vector (lane i = Σ v[i]): pairwise unpack-and-add
/// within 128-bit lanes, then across them (45 ops for 16 sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn sum16(v: &[__m512; 16]) -> __m512 {
    // a[j], per 128-bit lane: [v2j, v2j+1, v2j, v2j+1] partials
    let mut a = [_mm512_setzero_ps(); 8];
    for (j, aj) in a.iter_mut().enumerate() {
        *aj = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * j], v[2 * j + 1]), _mm512_unpackhi_ps(v[2 * j], v[2 * j + 1]));
    }
    // b[j], per 128-bit lane: [v4j, v4j+1, v4j+2, v4j+3] partials
    let mut b = [_mm512_setzero_ps(); 4];
    for (j, bj) in b.iter_mut().enumerate() {
        let (x, y) = (_mm512_castps_pd(a[2 * j]), _mm512_castps_pd(a[2 * j + 1]));
        *bj = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    // across the four 128-bit lanes: lane j of the result = b[j]'s lanes summed
    let u0 = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(b[0], b[1]), _mm512_shuffle_f32x4::<0b11_10_11_10>(b[0], b[1]));
    let u1 = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(b[2], b[3]), _mm512_shuffle_f32x4::<0b11_10_11_10>(b[2], b[3]));
    _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(u0, u1), _mm512_shuffle_f32x4::<0b11_01_11_01>(u0, u1))
}

#[cfg(test)]
mod tests {
    /// sum16 against plain sums.
    #[test]
    fn sum16_gives_each_vectors_sum_in_its_lane() {
        if !crate::backend::cpu::simd::avx512() {
            eprintln!("no AVX-512: skipped");
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F present (checked); registers and local arrays only.
        unsafe {
            use std::arch::x86_64::*;
            let vals: Vec<[f32; 16]> = (0..16).map(|i| std::array::from_fn(|l| (i * 16 + l) as f32 * 0.5 - 7.0)).collect();
            let v: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(vals[i].as_ptr()));
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), super::sum16(&v));
            for i in 0..16 {
                assert_eq!(out[i], vals[i].iter().sum::<f32>(), "lane {i}");
            }
        }
    }
}
