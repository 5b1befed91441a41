// FP8 E4M3 prepack on the device at load (the load then maps the checkpoint's own bytes on the
// host and packs here: no host-side quantization pass). Bit-identical to formats/fp8/pack.rs
// `PackedFp8::prepack`: scale = absmax/448 over the block's finite values (1 when that is 0),
// codes = e4m3_encode(w / scale) with the same round-to-nearest-even bit arithmetic, saturation
// to ±448 and NaN -> 0. Layout: codes (n, row_stride) zero padded, scales (n, bpr).
// Grid ceil(n·bpr / 8) blocks of 256 threads: one warp per (row, scale block).
// Also the bf16 conversion at load (to_bf16_*): a checkpoint-dtype weight rounded to bf16 on the
// device, bit-identical to the host's `half::bf16::from_f32`. Params: QuantParams (params.cuh).
#include "common.cuh"
#include "params.cuh"

__device__ __forceinline__ u8 e4m3_encode(float v) {
    if (v != v) return 0;
    u32 sign = (__float_as_uint(v) >> 24) & 0x80u;
    float x = fabsf(v);
    if (x >= 448.0f) return (u8)(sign | 0x7Eu);
    if (x < 0.015625f) return (u8)(sign | (u32)rintf(x / 0.001953125f));  // subnormal: steps of 2^-9
    u32 bits = __float_as_uint(x);
    u32 rounded = bits + 0x7FFFFu + ((bits >> 20) & 1u);
    return (u8)(sign | ((rounded >> 20) - (120u << 3)));
}

template <int WT>
__device__ __forceinline__ void quant_fp8(const QuantParams& p) {
    pdl_trigger();
    pdl_wait();
    const int k = p.k, block = p.block, bpr = p.bpr, src_stride = p.src_stride;
    int lane = threadIdx.x & 31;
    long gw = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (gw >= (long)p.n * bpr) return;
    int r = (int)(gw / bpr), b = (int)(gw % bpr);
    int c0 = b * block, c1 = min(k, c0 + block);
    float m = 0.0f;
    for (int c = c0 + lane; c < c1; c += 32) {
        float v = weight_at<WT>(p.src, 0, r, c, src_stride, 1, 1);
        if (isfinite(v)) m = fmaxf(m, fabsf(v));
    }
    m = warp_max(m);
    float s = m / 448.0f;
    if (!(s > 0.0f)) s = 1.0f;
    for (int c = c0 + lane; c < c1; c += 32)
        p.codes[(size_t)r * p.row_stride + c] = e4m3_encode(weight_at<WT>(p.src, 0, r, c, src_stride, 1, 1) / s);
    if (lane == 0) p.scales[(size_t)r * bpr + b] = s;
}

// (n, k) -> bf16 rows (n, row_stride); the padding is left as allocated (zeros). Grid
// (ceil(k/256), n), 256 threads.
template <int WT>
__device__ __forceinline__ void to_bf16(const QuantParams& p) {
    pdl_trigger();
    pdl_wait();
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= p.k) return;
    int r = blockIdx.y;
    ((u16*)p.codes)[(size_t)r * p.row_stride + c] = f32_to_bf16_nan(weight_at<WT>(p.src, 0, r, c, p.src_stride, 1, 1));
}

#define QUANT_ENTRY(WT, SUFFIX)                                                                         \
    extern "C" __global__ void quant_fp8_##SUFFIX(const __grid_constant__ QuantParams p) { quant_fp8<WT>(p); } \
    extern "C" __global__ void to_bf16_##SUFFIX(const __grid_constant__ QuantParams p) { to_bf16<WT>(p); }
QUANT_ENTRY(WT_BF16, bf16)
QUANT_ENTRY(WT_F16, f16)
QUANT_ENTRY(WT_F32, f32)
