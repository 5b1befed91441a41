// Prefill kernels: the whole prompt (M rows) per layer, around cuBLAS GEMMs.
// GEMM inputs are split so that tensor-core GEMMs keep all 24 bits of the f32 activations:
// x = hi + mid + lo, each the rounding of what is left in the weights' 16-bit type, and
// W·x = W·hi + W·mid + W·lo (GEMMs accumulating into one f32 output). f32 weights take x as is.
// Output kinds (template SPLIT): 0 = f32 copy, 1 = bf16 hi/mid/lo, 2 = f16 hi/mid/lo.
// Params: SplitParams, RopeRowsParams, DequantParams (params.cuh).
#include "common.cuh"
#include "params.cuh"

#define SPLIT_F32 0
#define SPLIT_BF16 1
#define SPLIT_F16 2

// hi and lo point at (rows, k) arrays; mid sits right after hi's rows·k elements (`plane`) for
// the 16-bit splits (the host sizes that buffer for both).
template <int SPLIT>
__device__ __forceinline__ void store_split(float v, size_t i, void* hi, void* lo, size_t plane) {
    if (SPLIT == SPLIT_F32) {
        ((float*)hi)[i] = v;
    } else if (SPLIT == SPLIT_BF16) {
        u16 h = f32_to_bf16(v);
        float r = v - bf16_to_f32(h);
        u16 m = f32_to_bf16(r);
        ((u16*)hi)[i] = h;
        ((u16*)hi)[plane + i] = m;
        ((u16*)lo)[i] = f32_to_bf16(r - bf16_to_f32(m));
    } else {
        u16 h = f32_to_f16(v);
        float r = v - f16_to_f32(h);
        u16 m = f32_to_f16(r);
        ((u16*)hi)[i] = h;
        ((u16*)hi)[plane + i] = m;
        ((u16*)lo)[i] = f32_to_f16(r - f16_to_f32(m));
    }
}

// Row m of x (M, k): RMSNorm with weight norm_w, split into hi/lo. Grid M, 256 threads.
template <int SPLIT>
__device__ __forceinline__ void rmsnorm_split(const SplitParams& p) {
    __shared__ float red[32];
    pdl_trigger();
    pdl_wait();
    const int k = p.k;
    const float* xr = p.x + (size_t)blockIdx.x * k;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < k; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)k + p.eps);
    for (int i = threadIdx.x; i < k; i += blockDim.x)
        store_split<SPLIT>(p.norm_w[i] * (xr[i] * inv), (size_t)blockIdx.x * k + i, p.hi, p.lo, (size_t)gridDim.x * k);
}

// Row m of gate_up (M, 2·k): silu(gate) * up (k = inter), split. Grid M, 256 threads.
template <int SPLIT>
__device__ __forceinline__ void swiglu_split(const SplitParams& p) {
    pdl_trigger();
    pdl_wait();
    const int inter = p.k;
    const float* r = p.x + (size_t)blockIdx.x * 2 * inter;
    for (int i = threadIdx.x; i < inter; i += blockDim.x)
        store_split<SPLIT>(silu(r[i]) * r[inter + i], (size_t)blockIdx.x * inter + i, p.hi, p.lo, (size_t)gridDim.x * inter);
}

// x (rows, k) split as is (the attention output before o_proj). Grid rows, 256 threads.
template <int SPLIT>
__device__ __forceinline__ void copy_split(const SplitParams& p) {
    pdl_trigger();
    pdl_wait();
    const int k = p.k;
    for (int i = threadIdx.x; i < k; i += blockDim.x)
        store_split<SPLIT>(p.x[(size_t)blockIdx.x * k + i], (size_t)blockIdx.x * k + i, p.hi, p.lo, (size_t)gridDim.x * k);
}

#define SPLIT_FAMILY(SPLIT, SUFFIX)                                                                                  \
    extern "C" __global__ void rmsnorm_split_##SUFFIX(const __grid_constant__ SplitParams p) { rmsnorm_split<SPLIT>(p); } \
    extern "C" __global__ void swiglu_split_##SUFFIX(const __grid_constant__ SplitParams p) { swiglu_split<SPLIT>(p); }   \
    extern "C" __global__ void copy_split_##SUFFIX(const __grid_constant__ SplitParams p) { copy_split<SPLIT>(p); }
SPLIT_FAMILY(SPLIT_F32, f32)
SPLIT_FAMILY(SPLIT_BF16, bf16)
SPLIT_FAMILY(SPLIT_F16, f16)

// qkv (M, q_dim + 2·kv_dim) of positions io->pos + m: RoPE on q and k; q -> q_out (M, q_dim),
// k/v -> the layer's cache rows. Grid M, 256 threads; thread i handles the pair (j, j + hd/2).
extern "C" __global__ void rope_qkv_rows(const __grid_constant__ RopeRowsParams p) {
    pdl_trigger();
    pdl_wait();
    const int hd = p.hd, q_dim = p.q_dim, kv_dim = p.kv_dim;
    int m = blockIdx.x, pos = p.io->pos + m, half = hd >> 1;
    int n = q_dim + 2 * kv_dim;
    const float* r = p.qkv + (size_t)m * n;
    for (int u = threadIdx.x; u < n / 2; u += blockDim.x) {
        int r0 = (u / half) * hd + (u % half);
        float c, s;
        rope_angle(pos, p.inv_freq[r0 % hd], c, s);
        qkv_store(r0, r[r0], r[r0 + half], pos, c, s, hd, q_dim, kv_dim, p.q_out + (size_t)m * q_dim, p.kc, p.vc);
    }
}

// fp8 (n, row_stride) codes + (n, bpr) scales -> w = hi + lo as two bf16 (n, k) row-major arrays
// for the prefill GEMMs (code × scale has up to 27 significant bits; hi + lo keep 16 of them).
// Grid (ceil(k/256), n).
extern "C" __global__ void dequant_fp8_bf16(const __grid_constant__ DequantParams p) {
    pdl_trigger();
    pdl_wait();
    const int k = p.w.k;
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= k) return;
    int r = blockIdx.y;
    float v = weight_at<WT_FP8>(p.w.data, p.w.scales, r, c, p.w.row_stride, p.w.bpr, p.w.block);
    u16 h = f32_to_bf16(v);
    p.hi[(size_t)r * k + c] = h;
    p.lo[(size_t)r * k + c] = f32_to_bf16(v - bf16_to_f32(h));
}
