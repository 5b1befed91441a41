// Sampling family: what the host needs from the logits to pick a token, so that only 4 bytes
// (greedy) or K candidates (sampling) cross to the host. Params: ArgmaxParams, TopkParams.
#include "common.cuh"
#include "params.cuh"

// ---- greedy: argmax
// One block of 1024: io->argmax = the index of the largest logit, the lowest index on ties (as
// torch.argmax); NaN never wins.
extern "C" __global__ void __launch_bounds__(1024) argmax(const __grid_constant__ ArgmaxParams p) {
    const float* logits = p.logits;
    const int n = p.n;
    pdl_trigger();
    pdl_wait();
    __shared__ float bv[1024];
    __shared__ int bi[1024];
    int tid = threadIdx.x;
    float best = -VIVA_INF;
    int idx = 0x7fffffff;
    for (int i = tid; i < n; i += 1024) {
        float v = logits[i];
        if (v > best || (v == best && i < idx)) {
            best = v;
            idx = i;
        }
    }
    bv[tid] = best;
    bi[tid] = idx;
    __syncthreads();
    for (int s = 512; s > 0; s >>= 1) {
        if (tid < s) {
            float v = bv[tid + s];
            int j = bi[tid + s];
            if (v > bv[tid] || (v == bv[tid] && j < bi[tid])) {
                bv[tid] = v;
                bi[tid] = j;
            }
        }
        __syncthreads();
    }
    if (tid == 0) p.io->argmax = bi[0] == 0x7fffffff ? 0 : bi[0];
}

// ---- sampling: top-k candidates
// One block of 1024: the K largest logits (K ≤ n), lowest indices first among equals at the
// threshold, as (value, index) pairs in index order; the host sorts them (K ≤ 256). Radix select
// on order-preserving keys, 8 bits per pass; NaN maps to key 0 and is dropped by the host.
__device__ __forceinline__ u32 float_key(float f) {
    u32 b = __float_as_uint(f);
    if (f != f) return 0u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Exclusive prefix sum over the block's 1024 threads; *total gets the sum.
__device__ u32 block_scan_1024(u32 v, u32* warp_tot, u32* total) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u32 inc = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        u32 t = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += t;
    }
    __syncthreads();
    if (lane == 31) warp_tot[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        u32 t = warp_tot[lane], it = t;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            u32 y = __shfl_up_sync(0xffffffffu, it, o);
            if (lane >= o) it += y;
        }
        warp_tot[lane] = it - t;  // exclusive warp offsets
        if (lane == 31) *total = it;
    }
    __syncthreads();
    return warp_tot[warp] + inc - v;
}

extern "C" __global__ void __launch_bounds__(1024) topk(const __grid_constant__ TopkParams p) {
    const float* logits = p.logits;
    float* out_val = p.out_val;
    int* out_idx = p.out_idx;
    const int n = p.n, K = p.k;
    pdl_trigger();
    pdl_wait();
    __shared__ u32 hist[256];
    __shared__ u32 s_prefix, s_need, s_mask;
    __shared__ u32 warp_tot[32], tot_gt, tot_eq;
    int tid = threadIdx.x;
    if (tid == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_need = (u32)K;
    }
    for (int pass = 0; pass < 4; pass++) {
        int shift = 24 - 8 * pass;
        if (tid < 256) hist[tid] = 0;
        __syncthreads();
        u32 prefix = s_prefix, mask = s_mask;
        for (int i = tid; i < n; i += 1024) {
            u32 key = float_key(logits[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (tid == 0) {
            u32 cum = 0, need = s_need;
            for (int b = 255; b >= 0; b--) {
                if (cum + hist[b] >= need || b == 0) {
                    s_prefix = prefix | ((u32)b << shift);
                    s_need = need - cum;
                    break;
                }
                cum += hist[b];
            }
            s_mask = mask | (255u << shift);
        }
        __syncthreads();
    }
    // s_prefix is the K-th largest key; take every key above it and the first s_need equal to it
    u32 thr = s_prefix, need = s_need;
    int per = (n + 1023) / 1024, lo = min(n, tid * per), hi = min(n, lo + per);
    u32 gt = 0, eq = 0;
    for (int i = lo; i < hi; i++) {
        u32 key = float_key(logits[i]);
        gt += key > thr;
        eq += key == thr;
    }
    u32 gt_off = block_scan_1024(gt, warp_tot, &tot_gt);
    u32 eq_off = block_scan_1024(eq, warp_tot, &tot_eq);
    for (int i = lo; i < hi; i++) {
        float v = logits[i];
        u32 key = float_key(v);
        if (key > thr) {
            out_val[gt_off] = v;
            out_idx[gt_off] = i;
            gt_off++;
        } else if (key == thr) {
            if (eq_off < need) {
                out_val[tot_gt + eq_off] = v;
                out_idx[tot_gt + eq_off] = i;
            }
            eq_off++;
        }
    }
}
