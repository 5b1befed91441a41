// Attention family: flash-decoding of M query rows (decode: 1; prefill: the chunk's rows)
// against one layer's f32 KV cache. Params: AttnParams (params.cuh).
#include "common.cuh"
#include "params.cuh"

// Query m (of M, positions io->pos + m) of KV head g's q-heads attends to cache positions
// [split*chunk, split*chunk + chunk) ∩ [0, pos]. Grid (n_kv_heads, max_splits, M), ATT_THREADS
// threads; chunk ≤ ATT_MAX_CHUNK is fixed per session (the host sizes it so that short contexts
// still spread over the SMs). A warp scores one position for all of the group's q heads at once
// (per-lane partial dots in registers, then independent butterfly reductions).
// q (M, n_heads*hd); kc, vc (max_seq, kv_dim) of one layer;
// part (M, n_heads, max_splits, hd + 2): per split the running max, the sum of exp, Σ p·v.
// The last block to finish for a (query, KV head) merges the splits (log-sum-exp) into
// out (M, n_heads*hd): counters (M, n_kv) count finished splits and are reset to 0 by that block,
// so the graph replays with them zeroed (no separate combine launch).
#define ATT_MAX_CHUNK 64
#define ATT_THREADS 256
#define ATT_MAX_GROUP 16
#define ATT_MAX_HD 256

extern "C" __global__ void __launch_bounds__(ATT_THREADS) attn_decode(const __grid_constant__ AttnParams p) {
    const float* q = p.q;
    const float* kc = p.kc;
    const float* vc = p.vc;
    float* part = p.part;
    float* out = p.out;
    const int n_heads = p.n_heads, n_kv = p.n_kv, hd = p.hd, max_splits = p.max_splits, chunk = p.chunk;
    __shared__ float qs[ATT_MAX_GROUP * ATT_MAX_HD];     // (group, hd)
    __shared__ float sc[ATT_MAX_GROUP * ATT_MAX_CHUNK];  // (group, chunk)
    pdl_trigger();
    pdl_wait();
    int kvh = blockIdx.x, split = blockIdx.y, m = blockIdx.z;
    int pos = p.io->pos + m;
    int t0 = split * chunk;
    if (t0 > pos) return;
    int t1 = min(t0 + chunk, pos + 1), nt = t1 - t0;
    int group = n_heads / n_kv, kv_dim = n_kv * hd, q_dim = n_heads * hd;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = ATT_THREADS / 32;
    float scale = 1.0f / sqrtf((float)hd);
    const float* qm = q + (size_t)m * q_dim + (size_t)kvh * group * hd;
    for (int i = tid; i < group * hd; i += ATT_THREADS) qs[i] = qm[i];
    __syncthreads();
    for (int t = t0 + warp; t < t1; t += nw) {
        const float* kt = kc + (size_t)t * kv_dim + kvh * hd;
        float kr[ATT_MAX_HD / 32];
#pragma unroll
        for (int i = 0; i < ATT_MAX_HD / 32; i++) kr[i] = (lane + 32 * i < hd) ? kt[lane + 32 * i] : 0.0f;
        float dot[ATT_MAX_GROUP];
#pragma unroll
        for (int g = 0; g < ATT_MAX_GROUP; g++) {
            float s = 0.0f;
            if (g < group) {
#pragma unroll
                for (int i = 0; i < ATT_MAX_HD / 32; i++)
                    if (lane + 32 * i < hd) s = fmaf(qs[g * hd + lane + 32 * i], kr[i], s);
            }
            dot[g] = s;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
#pragma unroll
            for (int g = 0; g < ATT_MAX_GROUP; g++) dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], o);
        if (lane == 0) {
#pragma unroll
            for (int g = 0; g < ATT_MAX_GROUP; g++)
                if (g < group) sc[g * ATT_MAX_CHUNK + (t - t0)] = dot[g] * scale;
        }
    }
    __syncthreads();
    float* pbase = part + ((size_t)m * n_heads + (size_t)kvh * group) * max_splits * (hd + 2);
    for (int g = warp; g < group; g += nw) {
        float mx = -VIVA_INF;
        for (int t = lane; t < nt; t += 32) mx = fmaxf(mx, sc[g * ATT_MAX_CHUNK + t]);
        mx = warp_max(mx);
        float l = 0.0f;
        for (int t = lane; t < nt; t += 32) {
            float p = expf(sc[g * ATT_MAX_CHUNK + t] - mx);
            sc[g * ATT_MAX_CHUNK + t] = p;
            l += p;
        }
        l = warp_sum(l);
        if (lane == 0) {
            float* pg = pbase + ((size_t)g * max_splits + split) * (hd + 2);
            pg[0] = mx;
            pg[1] = l;
        }
    }
    __syncthreads();
    for (int i = tid; i < group * hd; i += ATT_THREADS) {
        int g = i / hd, d = i % hd;
        const float* vt = vc + (size_t)t0 * kv_dim + kvh * hd + d;
        float acc = 0.0f;
#pragma unroll 8
        for (int t = 0; t < nt; t++) acc = fmaf(sc[g * ATT_MAX_CHUNK + t], vt[(size_t)t * kv_dim], acc);
        pbase[((size_t)g * max_splits + split) * (hd + 2) + 2 + d] = acc;
    }

    // publish this split; the last one to arrive merges them all
    __shared__ int last;
    __threadfence();
    __syncthreads();
    int ns = pos / chunk + 1;
    if (tid == 0) {
        int* ctr = p.counters + (size_t)m * n_kv + kvh;
        last = atomicAdd(ctr, 1) == ns - 1;
        if (last) *ctr = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = tid; i < group * hd; i += ATT_THREADS) {
        int g = i / hd, d = i % hd;
        const float* pg = pbase + (size_t)g * max_splits * (hd + 2);
        float mx = -VIVA_INF;
        for (int sp = 0; sp < ns; sp++) mx = fmaxf(mx, __ldcg(pg + sp * (hd + 2)));
        float l = 0.0f, acc = 0.0f;
        for (int sp = 0; sp < ns; sp++) {
            float f = expf(__ldcg(pg + sp * (hd + 2)) - mx);
            l += __ldcg(pg + sp * (hd + 2) + 1) * f;
            acc += __ldcg(pg + sp * (hd + 2) + 2 + d) * f;
        }
        out[(size_t)m * q_dim + (size_t)(kvh * group + g) * hd + d] = acc / l;
    }
}
