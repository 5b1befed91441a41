// FP8 E4M3 prepack on the device at load (the load then maps the checkpoint's own bytes on the
// host and packs here: no host-side quantization pass). Bit-identical to quant/fp8.rs
// `PackedFp8::prepack`: scale = absmax/448 over the block's finite values (1 when that is 0),
// codes = e4m3_encode(w / scale) with the same round-to-nearest-even bit arithmetic, saturation
// to ±448 and NaN -> 0. Layout: codes (n, row_stride) zero padded, scales (n, bpr).
// Grid ceil(n·bpr / 8) blocks of 256 threads: one warp per (row, scale block).

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
__device__ void quant_fp8(const u8* w, int n, int k, int src_stride, int block, int row_stride, int bpr, u8* codes, float* scales) {
    pdl_trigger();
    pdl_wait();
    int lane = threadIdx.x & 31;
    long gw = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (gw >= (long)n * bpr) return;
    int r = (int)(gw / bpr), b = (int)(gw % bpr);
    int c0 = b * block, c1 = min(k, c0 + block);
    float m = 0.0f;
    for (int c = c0 + lane; c < c1; c += 32) {
        float v = weight_at<WT>(w, 0, r, c, src_stride, 1, 1);
        if (isfinite(v)) m = fmaxf(m, fabsf(v));
    }
    m = warp_max(m);
    float s = m / 448.0f;
    if (!(s > 0.0f)) s = 1.0f;
    for (int c = c0 + lane; c < c1; c += 32) codes[(size_t)r * row_stride + c] = e4m3_encode(weight_at<WT>(w, 0, r, c, src_stride, 1, 1) / s);
    if (lane == 0) scales[(size_t)r * bpr + b] = s;
}

#define QUANT_ENTRY(WT, SUFFIX)                                                                                     \
    extern "C" __global__ void quant_fp8_##SUFFIX(const u8* w, int n, int k, int src_stride, int block, int row_stride, \
                                                  int bpr, u8* codes, float* scales) {                              \
        quant_fp8<WT>(w, n, k, src_stride, block, row_stride, bpr, codes, scales);                                 \
    }
QUANT_ENTRY(WT_BF16, bf16)
QUANT_ENTRY(WT_F16, f16)
QUANT_ENTRY(WT_F32, f32)
