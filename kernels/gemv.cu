// GEMV family: one decode-step linear (batch 1) with its fused prologue and epilogue. Weights
// are fp8 E4M3 with blocked f32 scales, bf16, f16 or f32, rows padded to 16 bytes; activations
// f32 end to end (the CPU path's numerics). Params: GemvParams (params.cuh).
#include "common.cuh"
#include "params.cuh"

// Layout: w (n, row_stride) elements, row_stride*elem_size a multiple of 16 bytes, zero padded;
// fp8 scales (n, bpr), one per `block` columns. Grid: ceil(units / upb) blocks of 256 threads;
// warp w of block b handles units b*upb + w, +8, ... Each unit is a pair of rows (r0, r1) whose dot
// products one warp computes together (16-byte loads, lane-strided chunks), then an epilogue:
//   GEMV_STORE  rows (2u, 2u+1)           out[r] = w_r · x
//   GEMV_RESID  rows (2u, 2u+1)           out[r] += w_r · x            (o_proj / down_proj + residual)
//   GEMV_SWIGLU rows (u, inter + u)       out[u] = silu(gate) * up      (fused gate·up)
//   GEMV_QKV    rows (h*hd + j, +hd/2)    RoPE on q and k (rope_tab), q -> out, k/v -> cache at io->pos
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
__device__ __forceinline__ void gemv(const GemvParams& p) {
    const u8* w = p.w.data;
    const float* scales = p.w.scales;
    const int n = p.w.n, k = p.w.k, row_stride = p.w.row_stride, bpr = p.w.bpr, block = p.w.block;
    const int units = p.units, upb = p.upb, hd = p.hd, inter = p.inter;
    const float* x = p.x;
    const float* norm_w = p.norm_w;
    float* out = p.out;
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
        float inv = 1.0f / sqrtf(ss / (float)k + p.eps);
#pragma unroll 4
        for (int i = tid; i < k; i += blockDim.x) {
            float* xi = &xs[(i % E) * nchunks + i / E];
            *xi = norm_w[i] * (*xi * inv) * xmul;
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
                qkv_store(r0, a0, a1, p.io->pos, p.rope_tab[j], p.rope_tab[(hd >> 1) + j], hd, p.q_dim, p.kv_dim, out, p.kc, p.vc);
            }
        }
        unit_rows<MODE>(u + GEMV_THREADS / 32, n, hd, inter, r0, r1);
    }
}

#define GEMV_ENTRY(NAME, WT, MODE)                                                               \
    extern "C" __global__ void __launch_bounds__(GEMV_THREADS) NAME(const __grid_constant__ GemvParams p) { \
        gemv<WT, MODE>(p);                                                                               \
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
