// Shared device helpers, included by every kernel file. NVRTC gets no include path (no CUDA
// headers are needed on the machine): the loader (backend/cuda/kernels.rs, and
// scripts/check_kernels.py) expands `#include "common.cuh"` / `"params.cuh"` itself, once each.
// Conversions are bit-exact and branch-free.
#pragma once
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

// +inf without <math.h> (NVRTC has no standard headers here).
#define VIVA_INF __int_as_float(0x7f800000)

// Weight element kinds (Rust: formats::WeightKind, formats/format.rs).
#define WT_FP8 0
#define WT_BF16 1
#define WT_F16 2
#define WT_F32 3

// Programmatic dependent launch (sm_90+; the host sets the launch attribute there): a kernel lets
// the next one start launching at once (trigger), and waits for the previous one's results
// (wait) only right before it reads them. Every kernel calls pdl_wait() before touching data an
// earlier kernel wrote; older GPUs serialize launches as usual and these are no-ops.
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ float bf16_to_f32(u32 bits16) { return __uint_as_float(bits16 << 16); }

__device__ __forceinline__ float f16_to_f32(u32 bits16) {
    float f;
    unsigned short h = (unsigned short)bits16;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 -> bf16 bits, round to nearest even (finite inputs).
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 b = __float_as_uint(f);
    return (u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// f32 -> bf16 bits exactly as the host's `half::bf16::from_f32` (formats/bf16.rs): round to nearest
// even, infinities kept, NaN kept quiet (bit 6 set). For weight conversion at load.
__device__ __forceinline__ u16 f32_to_bf16_nan(float f) {
    u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (u16)((b >> 16) | 0x40u);
    return f32_to_bf16(f);
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Two E4M3 codes (low byte = first) -> two floats. sm_89+: the hardware cvt; older: the code's
// bits shifted into an f16 (same sign/mantissa layout, exponent bias 15 vs 7) times 2^8, exact for
// every code our encoder emits (it never emits NaN).
__device__ __forceinline__ void e4m3x2_to_f32(u32 two, float& a, float& b) {
#if __CUDA_ARCH__ >= 890
    u32 h2;
    unsigned short in = (unsigned short)two;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(in));
    a = f16_to_f32(h2 & 0xffffu);
    b = f16_to_f32(h2 >> 16);
#else
    u32 c0 = two & 0xffu, c1 = (two >> 8) & 0xffu;
    a = f16_to_f32(((c0 & 0x80u) << 8) | ((c0 & 0x7fu) << 7)) * 256.0f;
    b = f16_to_f32(((c1 & 0x80u) << 8) | ((c1 & 0x7fu) << 7)) * 256.0f;
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
__device__ float block_sum(float v, float* red /* (32) shared */) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    return warp_sum(t);
}

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// One weight element of a row as f32 (reference paths and prefill dequant).
template <int WT>
__device__ __forceinline__ float weight_at(const u8* w, const float* scales, int row, int col, int row_stride, int bpr, int block) {
    if (WT == WT_FP8) {
        float a, b;
        e4m3x2_to_f32(w[(size_t)row * row_stride + col], a, b);
        return a * scales[(size_t)row * bpr + col / block];
    } else if (WT == WT_BF16) {
        return bf16_to_f32(((const u16*)w)[(size_t)row * row_stride + col]);
    } else if (WT == WT_F16) {
        return f16_to_f32(((const u16*)w)[(size_t)row * row_stride + col]);
    } else {
        return ((const float*)w)[(size_t)row * row_stride + col];
    }
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
// Shared by the decode GEMV (gemv.cu) and the prefill rows (prefill.cu).
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
