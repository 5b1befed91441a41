// Decode-step kernels (batch 1), captured once per session into a CUDA graph.
// Activations are f32 end to end (the CPU path's numerics); weights are fp8 E4M3 with blocked f32
// scales, bf16, f16 or f32, rows padded to 16 bytes. `io` is the session's device int array:
// io[0] = token id, io[1] = position, io[2] = greedy argmax out (the graph reads its inputs there).

// ---- GEMV --------------------------------------------------------------------------------
// Layout: w (n, row_stride) elements, row_stride*elem_size a multiple of 16 bytes, zero padded;
// fp8 scales (n, bpr), one per `block` columns. Grid: ceil(units / upb) blocks of 256 threads;
// warp w of block b handles units b*upb + w, +8, ... Each unit is a pair of rows (r0, r1) whose dot
// products one warp computes together (16-byte loads, lane-strided chunks), then an epilogue:
//   GEMV_STORE  rows (2u, 2u+1)           out[r] = w_r · x
//   GEMV_RESID  rows (2u, 2u+1)           out[r] += w_r · x            (o_proj / down_proj + residual)
//   GEMV_SWIGLU rows (u, inter + u)       out[u] = silu(gate) * up      (fused gate·up)
//   GEMV_QKV    rows (h*hd + j, +hd/2)    RoPE on q and k (rope_tab), q -> out, k/v -> cache at io[1]
// Prologue (norm_w != 0): x is RMS-normalized with weight norm_w while it is staged in shared
// memory, so no separate rmsnorm launch. Shared x is stored transposed by chunk lane:
// element t of chunk c at xs[t * nchunks + c], so lane-consecutive chunks read consecutive banks.
#define GEMV_STORE 0
#define GEMV_RESID 1
#define GEMV_SWIGLU 2
#define GEMV_QKV 3
#define GEMV_THREADS 256
// fp8 GEMV: x is staged times 2^64 and each block scale applied times 2^56 (see chunk_dot).
#define FP8_X_SCALE 18446744073709551616.0f
// E4M3 decode in the fp8 GEMV: integer bit moves by default (the path the GPU tests ran on), or
// with VIVA_FP8_HW_CVT=1 the hardware cvt (e4m3x2 -> f16x2, sm_89+). Both are exact and give the
// same products; on the H100 the cvt path measured ~5% faster per token (bench/results/gpu_decode.md)
// and becomes the default once the GPU tests have run on it.
#ifndef FP8_HW_CVT
#define FP8_HW_CVT 0
#endif
#define FP8_S_SCALE 72057594037927936.0f
#define GEMV_BATCH 4

template <int WT> struct ChunkElems { enum { E = WT == WT_FP8 ? 16 : (WT == WT_F32 ? 4 : 8) }; };

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
#if __CUDA_ARCH__ >= 800
    uint4 v;
    // not volatile: the compiler must be free to issue a whole batch of these before using any
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
#else
    return __ldg(p);
#endif
}

// Σ_t decode(v)[t] * x[t] over one 16-byte chunk c (unscaled for fp8).
template <int WT>
__device__ __forceinline__ float chunk_dot(uint4 v, const float* xs, int nchunks, int c) {
    u32 wd[4] = {v.x, v.y, v.z, v.w};
    const float* xc = xs + c;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (WT == WT_FP8 && FP8_HW_CVT) {
            float a, b, d, e;  // hardware e4m3x2 -> f16x2 (sm_89+), then f16 -> f32
            e4m3x2_to_f32(wd[i], a, b);
            e4m3x2_to_f32(wd[i] >> 16, d, e);
            const float u = 1.0f / 1.329227995784916e36f;  // 2^-120 on x (normal there): same products
            s = fmaf(a, xc[(4 * i + 0) * nchunks] * u, s);
            s = fmaf(b, xc[(4 * i + 1) * nchunks] * u, s);
            s = fmaf(d, xc[(4 * i + 2) * nchunks] * u, s);
            s = fmaf(e, xc[(4 * i + 3) * nchunks] * u, s);
        } else if (WT == WT_FP8) {
            // each code's sign to bit 31 and its 7 exponent+mantissa bits to bits 26..20: the f32
            // with those bits is exactly code × 2^-120 (subnormal codes become f32 denormals,
            // zero stays zero); FP8_X_SCALE · FP8_S_SCALE = 2^120 is folded into the staged x
            // and the block scale.
            u32 a = wd[i];
            s = fmaf(__uint_as_float(((a << 24) & 0x80000000u) | ((a << 20) & 0x07f00000u)), xc[(4 * i + 0) * nchunks], s);
            s = fmaf(__uint_as_float(((a << 16) & 0x80000000u) | ((a << 12) & 0x07f00000u)), xc[(4 * i + 1) * nchunks], s);
            s = fmaf(__uint_as_float(((a << 8) & 0x80000000u) | ((a << 4) & 0x07f00000u)), xc[(4 * i + 2) * nchunks], s);
            s = fmaf(__uint_as_float((a & 0x80000000u) | ((a >> 4) & 0x07f00000u)), xc[(4 * i + 3) * nchunks], s);
        } else if (WT == WT_BF16) {
            s = fmaf(__uint_as_float(wd[i] << 16), xc[(2 * i) * nchunks], s);
            s = fmaf(__uint_as_float(wd[i] & 0xffff0000u), xc[(2 * i + 1) * nchunks], s);
        } else if (WT == WT_F16) {
            s = fmaf(f16_to_f32(wd[i] & 0xffffu), xc[(2 * i) * nchunks], s);
            s = fmaf(f16_to_f32(wd[i] >> 16), xc[(2 * i + 1) * nchunks], s);
        } else {
            s = fmaf(__uint_as_float(wd[i]), xc[i * nchunks], s);
        }
    }
    return s;
}

// cos/sin of RoPE's angle for position pos and inverse frequency f, as the CPU path: the angle
// an f32 product, cos/sin in f64.
__device__ __forceinline__ void rope_angle(int pos, float f, float& c, float& s) {
    double ang = (double)((float)pos * f);
    c = (float)cos(ang);
    s = (float)sin(ang);
}

// The QKV epilogue for rows (r0, r0 + hd/2) of the fused [q; k; v] weight at position pos:
// rotate-half RoPE on q and k with (c, s) of dim r0 % hd, then q -> q_out, k/v -> cache.
__device__ __forceinline__ void qkv_store(int r0, float a0, float a1, int pos, float c, float s, int hd, int q_dim,
                                          int kv_dim, float* q_out, float* kc, float* vc) {
    int half = hd >> 1;
    if (r0 < q_dim + kv_dim) {
        float x = a0, y = a1;
        a0 = x * c - y * s;
        a1 = y * c + x * s;
    }
    if (r0 < q_dim) {
        q_out[r0] = a0;
        q_out[r0 + half] = a1;
    } else if (r0 < q_dim + kv_dim) {
        size_t o = (size_t)pos * kv_dim + (r0 - q_dim);
        kc[o] = a0;
        kc[o + half] = a1;
    } else {
        size_t o = (size_t)pos * kv_dim + (r0 - q_dim - kv_dim);
        vc[o] = a0;
        vc[o + half] = a1;
    }
}

// GEMV_BATCH chunks per lane per row: loaded together, then used.
template <int WT>
struct Batch {
    uint4 v0[GEMV_BATCH], v1[GEMV_BATCH];
    float s0[GEMV_BATCH], s1[GEMV_BATCH];
};

template <int MODE>
__device__ __forceinline__ void unit_rows(int u, int n, int hd, int inter, int& r0, int& r1) {
    if (MODE == GEMV_SWIGLU) {
        r0 = u;
        r1 = inter + u;
    } else if (MODE == GEMV_QKV) {
        int half = hd >> 1;
        r0 = (u / half) * hd + (u % half);
        r1 = r0 + half;
    } else {
        r0 = 2 * u;
        r1 = 2 * u + 1;
    }
}

template <int WT>
__device__ __forceinline__ void load_batch(Batch<WT>& b, const u8* w, const float* scales, size_t row_bytes, int nchunks, int bpr,
                                           int block, int r0, int r1s, int c0) {
    const uint4* p0 = (const uint4*)(w + r0 * row_bytes);
    const uint4* p1 = (const uint4*)(w + r1s * row_bytes);
#pragma unroll
    for (int j = 0; j < GEMV_BATCH; j++) {
        int c = c0 + 32 * j;
        if (c < nchunks) {
            b.v0[j] = load_stream(p0 + c);
            b.v1[j] = load_stream(p1 + c);
            if (WT == WT_FP8) {
                int k = min(c * 16 / block, bpr - 1);
                b.s0[j] = scales[(size_t)r0 * bpr + k];
                b.s1[j] = scales[(size_t)r1s * bpr + k];
            }
        }
    }
}

template <int WT>
__device__ __forceinline__ void use_batch(const Batch<WT>& b, const float* xs, int nchunks, int c0, float& a0, float& a1) {
#pragma unroll
    for (int j = 0; j < GEMV_BATCH; j++) {
        int c = c0 + 32 * j;
        if (c < nchunks) {
            float s0 = chunk_dot<WT>(b.v0[j], xs, nchunks, c);
            float s1 = chunk_dot<WT>(b.v1[j], xs, nchunks, c);
            if (WT == WT_FP8) {
                s0 *= b.s0[j] * FP8_S_SCALE;
                s1 *= b.s1[j] * FP8_S_SCALE;
            }
            a0 += s0;
            a1 += s1;
        }
    }
}

template <int WT, int MODE>
__device__ void gemv(const u8* w, const float* scales, int n, int k, int row_stride, int bpr, int block, int units, int upb,
                     const float* x, const float* norm_w, float eps, float* out, float* kc, float* vc, const int* io,
                     const float* rope_tab, int hd, int q_dim, int kv_dim, int inter) {
    extern __shared__ float xs[];  // (E, nchunks) transposed x
    __shared__ float red[32];
    const int E = ChunkElems<WT>::E;
    const int nchunks = row_stride / E;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const size_t row_bytes = (size_t)nchunks * 16;
    const int u_end = min(units, (int)(blockIdx.x + 1) * upb);
    pdl_trigger();
    // Weights never depend on the previous kernel: the first batch of this warp's first unit is
    // requested before waiting for it (overlapping its launch and tail), and every unit's last
    // batch is followed at once by the next unit's first (double buffer), so DRAM latency is
    // paid once per warp rather than once per unit.
    int u = blockIdx.x * upb + warp;
    int r0 = 0, r1 = 0;
    Batch<WT> cur, nxt;
    if (u < u_end) {
        unit_rows<MODE>(u, n, hd, inter, r0, r1);
        load_batch<WT>(cur, w, scales, row_bytes, nchunks, bpr, block, r0, r1 < n ? r1 : r0, lane);
    }
    pdl_wait();

    // stage x (transposed) while summing its squares; then scale in shared memory
    // (times FP8_X_SCALE for fp8 weights: a power of two, so exact)
    const float xmul = WT == WT_FP8 ? FP8_X_SCALE : 1.0f;
    float ss = 0.0f;
#pragma unroll 4
    for (int i = tid; i < nchunks * E; i += blockDim.x) {
        float v = i < k ? x[i] : 0.0f;
        ss += v * v;
        xs[(i % E) * nchunks + i / E] = norm_w ? v : v * xmul;
    }
    if (norm_w) {
        ss = block_sum(ss, red);  // (its first barrier also orders the stores above)
        float inv = 1.0f / sqrtf(ss / (float)k + eps);
#pragma unroll 4
        for (int i = tid; i < k; i += blockDim.x) {
            float* p = &xs[(i % E) * nchunks + i / E];
            *p = norm_w[i] * (*p * inv) * xmul;
        }
    }
    __syncthreads();

    for (; u < u_end; u += GEMV_THREADS / 32) {
        bool has1 = r1 < n;
        int r1s = has1 ? r1 : r0;
        float a0 = 0.0f, a1 = 0.0f;
        for (int c0 = lane; c0 < nchunks; c0 += 32 * GEMV_BATCH) {
            bool last = c0 + 32 * GEMV_BATCH >= nchunks;
            if (!last) {
                load_batch<WT>(nxt, w, scales, row_bytes, nchunks, bpr, block, r0, r1s, c0 + 32 * GEMV_BATCH);
            } else if (u + GEMV_THREADS / 32 < u_end) {
                int n0, n1;
                unit_rows<MODE>(u + GEMV_THREADS / 32, n, hd, inter, n0, n1);
                load_batch<WT>(nxt, w, scales, row_bytes, nchunks, bpr, block, n0, n1 < n ? n1 : n0, lane);
            }
            use_batch<WT>(cur, xs, nchunks, c0, a0, a1);
            cur = nxt;
        }
        a0 = warp_sum(a0);
        a1 = warp_sum(a1);
        if (lane == 0) {
            if (MODE == GEMV_STORE) {
                out[r0] = a0;
                if (has1) out[r1] = a1;
            } else if (MODE == GEMV_RESID) {
                out[r0] += a0;
                if (has1) out[r1] += a1;
            } else if (MODE == GEMV_SWIGLU) {
                out[u] = silu(a0) * a1;
            } else {
                // the step's RoPE table (cos then sin, hd/2 each), made by the embed kernel
                int j = r0 % hd;
                qkv_store(r0, a0, a1, io[1], rope_tab[j], rope_tab[(hd >> 1) + j], hd, q_dim, kv_dim, out, kc, vc);
            }
        }
        unit_rows<MODE>(u + GEMV_THREADS / 32, n, hd, inter, r0, r1);
    }
}

#define GEMV_ENTRY(NAME, WT, MODE)                                                                                       \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS)                                                           \
        NAME(const u8* w, const float* scales, int n, int k, int row_stride, int bpr, int block, int units, int upb,     \
             const float* x, const float* norm_w, float eps, float* out, float* kc, float* vc, const int* io,            \
             const float* rope_tab, int hd, int q_dim, int kv_dim, int inter) {                                          \
        gemv<WT, MODE>(w, scales, n, k, row_stride, bpr, block, units, upb, x, norm_w, eps, out, kc, vc, io, rope_tab,   \
                       hd, q_dim, kv_dim, inter);                                                                        \
    }
#define GEMV_FAMILY(WT, SUFFIX)                        \
    GEMV_ENTRY(gemv_store_##SUFFIX, WT, GEMV_STORE)    \
    GEMV_ENTRY(gemv_resid_##SUFFIX, WT, GEMV_RESID)    \
    GEMV_ENTRY(gemv_swiglu_##SUFFIX, WT, GEMV_SWIGLU)  \
    GEMV_ENTRY(gemv_qkv_##SUFFIX, WT, GEMV_QKV)
GEMV_FAMILY(WT_FP8, fp8)
GEMV_FAMILY(WT_BF16, bf16)
GEMV_FAMILY(WT_F16, f16)
GEMV_FAMILY(WT_F32, f32)

// ---- embedding ---------------------------------------------------------------------------
// x (rows, hidden) = table[ids[row]]; grid (ceil(hidden/256), rows). Decode passes ids = io and
// rope_tab (hd/2 cos then hd/2 sin, for position io[1]): the step's RoPE angles, computed once
// here instead of once per warp of the QKV GEMV; prefill passes rope_tab = 0.
template <int WT>
__device__ void embed(const u8* table, const int* ids, float* x, int hidden, const int* io, const float* inv_freq,
                      float* rope_tab, int half) {
    pdl_trigger();
    pdl_wait();
    if (rope_tab && blockIdx.x == 0 && blockIdx.y == 0) {
        for (int j = threadIdx.x; j < half; j += blockDim.x) rope_angle(io[1], inv_freq[j], rope_tab[j], rope_tab[half + j]);
    }
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= hidden) return;
    size_t id = (size_t)ids[blockIdx.y];
    x[(size_t)blockIdx.y * hidden + i] = weight_at<WT>(table, 0, (int)id, i, hidden, 1, 1);
}
#define EMBED_ENTRY(WT, SUFFIX)                                                                                    \
    extern "C" __global__ void embed_##SUFFIX(const u8* t, const int* ids, float* x, int h, const int* io,         \
                                              const float* inv_freq, float* rope_tab, int half) {                  \
        embed<WT>(t, ids, x, h, io, inv_freq, rope_tab, half);                                                     \
    }
EMBED_ENTRY(WT_BF16, bf16)
EMBED_ENTRY(WT_F16, f16)
EMBED_ENTRY(WT_F32, f32)

// ---- attention (flash-decoding) ----------------------------------------------------------
// Query m (of M, positions io[1] + m) of KV head g's q-heads attends to cache positions
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

extern "C" __global__ void __launch_bounds__(ATT_THREADS)
    attn_decode(const float* q, const float* kc, const float* vc, float* part, int* counters, float* out, const int* io,
                int n_heads, int n_kv, int hd, int max_splits, int chunk) {
    __shared__ float qs[ATT_MAX_GROUP * ATT_MAX_HD];     // (group, hd)
    __shared__ float sc[ATT_MAX_GROUP * ATT_MAX_CHUNK];  // (group, chunk)
    pdl_trigger();
    pdl_wait();
    int kvh = blockIdx.x, split = blockIdx.y, m = blockIdx.z;
    int pos = io[1] + m;
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
        int* ctr = counters + (size_t)m * n_kv + kvh;
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

// ---- greedy: argmax ----------------------------------------------------------------------
// One block of 1024: io[2] = the index of the largest logit, the lowest index on ties (as
// torch.argmax); NaN never wins.
extern "C" __global__ void __launch_bounds__(1024) argmax(const float* logits, int n, int* io) {
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
    if (tid == 0) io[2] = bi[0] == 0x7fffffff ? 0 : bi[0];
}

// ---- sampling: top-k candidates ----------------------------------------------------------
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

extern "C" __global__ void __launch_bounds__(1024) topk(const float* logits, int n, int K, float* out_val, int* out_idx) {
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
