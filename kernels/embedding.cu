// Embedding family: token rows of the embedding table as f32 activations. Params: EmbedParams.
// x (rows, hidden) = table[ids[row]] (table (vocab, hidden) in the checkpoint's dtype, or bf16);
// grid (ceil(hidden/256), rows), 256 threads. Decode passes ids = &io->token and rope_tab (hd/2
// cos then hd/2 sin, for position io->pos): the step's RoPE angles, computed once here instead of
// once per warp of the QKV GEMV; prefill passes rope_tab = null.
#include "common.cuh"
#include "params.cuh"

template <int WT>
__device__ __forceinline__ void embed(const EmbedParams& p) {
    pdl_trigger();
    pdl_wait();
    if (p.rope_tab && blockIdx.x == 0 && blockIdx.y == 0) {
        for (int j = threadIdx.x; j < p.half; j += blockDim.x)
            rope_angle(p.io->pos, p.inv_freq[j], p.rope_tab[j], p.rope_tab[p.half + j]);
    }
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.hidden) return;
    size_t id = (size_t)p.ids[blockIdx.y];
    p.x[(size_t)blockIdx.y * p.hidden + i] = weight_at<WT>(p.table, 0, (int)id, i, p.hidden, 1, 1);
}
#define EMBED_ENTRY(WT, SUFFIX) \
    extern "C" __global__ void embed_##SUFFIX(const __grid_constant__ EmbedParams p) { embed<WT>(p); }
EMBED_ENTRY(WT_BF16, bf16)
EMBED_ENTRY(WT_F16, f16)
EMBED_ENTRY(WT_F32, f32)
