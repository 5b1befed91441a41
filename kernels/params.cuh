// Kernel parameter structs: every kernel takes exactly one of these, by value, as its only
// argument. This header states each layout once; backend/cuda/params.rs mirrors it field for
// field (#[repr(C)]), and both sides assert the sizes and offsets below, so a field added on one
// side only fails to compile. Pointers first (8 bytes), then 4-byte fields; explicit `pad`
// fields make every size a multiple of 8 with no implicit padding.
#pragma once
#include "common.cuh"

#define VIVA_CHECK_LAYOUT(T, SIZE) static_assert(sizeof(T) == SIZE, #T " size: update backend/cuda/params.rs too")
// Field offsets are asserted where NVRTC has __builtin_offsetof (scripts/check_kernels.py defines
// VIVA_CHECK_OFFSETS); CUDA 13's NVRTC has no such builtin, so at load only the sizes are checked
// here and the offsets by params.rs's const asserts.
#ifdef VIVA_CHECK_OFFSETS
#define VIVA_CHECK_OFFSET(T, F, OFF) static_assert(__builtin_offsetof(T, F) == OFF, #T "." #F " offset")
#else
#define VIVA_CHECK_OFFSET(T, F, OFF) static_assert(sizeof(T) > 0, #T)
#endif

// A decode session's per-step inputs and greedy output, in device memory: the CUDA graph reads
// the token and position here, so one captured graph replays at every position.
struct DecodeIo {
    int token;   // in: the token fed at this step
    int pos;     // in: its position (prefill: the first row's)
    int argmax;  // out: the greedy next token (argmax kernel)
    int pad;
};
VIVA_CHECK_LAYOUT(DecodeIo, 16);
VIVA_CHECK_OFFSET(DecodeIo, argmax, 8);

// A linear weight (n, k) on the device (backend/cuda/weights.rs DevLinear): rows of row_stride
// elements (16-byte multiple, zero padded); fp8 scales (n, bpr), one per `block` columns.
struct WeightView {
    const u8* data;
    const float* scales;
    int n, k, row_stride, bpr, block, pad;
};
VIVA_CHECK_LAYOUT(WeightView, 40);
VIVA_CHECK_OFFSET(WeightView, block, 32);

// gemv.cu. units/upb: row pairs in all and per block (the launch computes them).
struct GemvParams {
    WeightView w;
    const float* x;         // (k)
    const float* norm_w;    // (k) RMSNorm weight, or null: x as is
    float* out;             // (n), (n/2) for SwiGLU, q (q_dim) for QKV
    float* kc;              // QKV: the layer's key cache (max_seq, kv_dim)
    float* vc;              // QKV: the layer's value cache (max_seq, kv_dim)
    const DecodeIo* io;     // QKV: the position
    const float* rope_tab;  // QKV: (2, hd/2) cos then sin of the step's position
    float eps;
    int units, upb, hd, q_dim, kv_dim, inter, pad;
};
VIVA_CHECK_LAYOUT(GemvParams, 128);
VIVA_CHECK_OFFSET(GemvParams, x, 40);
VIVA_CHECK_OFFSET(GemvParams, eps, 96);
VIVA_CHECK_OFFSET(GemvParams, inter, 120);

// embedding.cu. Decode: ids = &io->token and rope_tab set; prefill: ids (rows), rope_tab null.
struct EmbedParams {
    const u8* table;        // (vocab, hidden)
    const int* ids;         // (rows)
    float* x;               // (rows, hidden)
    const DecodeIo* io;
    const float* inv_freq;  // (half)
    float* rope_tab;        // (2, half) or null
    int hidden, half;
};
VIVA_CHECK_LAYOUT(EmbedParams, 56);
VIVA_CHECK_OFFSET(EmbedParams, hidden, 48);

// attention.cu
struct AttnParams {
    const float* q;   // (M, n_heads * hd)
    const float* kc;  // (max_seq, kv_dim) of one layer
    const float* vc;  // (max_seq, kv_dim)
    float* part;      // (M, n_heads, max_splits, hd + 2)
    int* counters;    // (M, n_kv) finished splits, 0 between launches
    float* out;       // (M, n_heads * hd)
    const DecodeIo* io;
    int n_heads, n_kv, hd, max_splits, chunk, pad;
};
VIVA_CHECK_LAYOUT(AttnParams, 80);
VIVA_CHECK_OFFSET(AttnParams, n_heads, 56);
VIVA_CHECK_OFFSET(AttnParams, chunk, 72);

// sampling.cu
struct ArgmaxParams {
    const float* logits;  // (n)
    DecodeIo* io;         // io->argmax written
    int n, pad;
};
VIVA_CHECK_LAYOUT(ArgmaxParams, 24);
VIVA_CHECK_OFFSET(ArgmaxParams, n, 16);

struct TopkParams {
    const float* logits;  // (n)
    float* out_val;       // (K)
    int* out_idx;         // (K)
    int n, k;
};
VIVA_CHECK_LAYOUT(TopkParams, 32);
VIVA_CHECK_OFFSET(TopkParams, k, 28);

// prefill.cu: rmsnorm_split (x, norm_w, eps, k), swiglu_split (x = gate_up rows, k = inter),
// copy_split (x, k).
struct SplitParams {
    const float* x;       // (rows, k), (rows, 2k) for SwiGLU
    const float* norm_w;  // (k)
    void* hi;             // (rows, k) high part; the middle part follows it (16-bit splits)
    void* lo;             // (rows, k) low part
    int k;
    float eps;
};
VIVA_CHECK_LAYOUT(SplitParams, 40);
VIVA_CHECK_OFFSET(SplitParams, eps, 36);

struct RopeRowsParams {
    const float* qkv;       // (M, q_dim + 2 kv_dim)
    float* q_out;           // (M, q_dim)
    float* kc;              // (max_seq, kv_dim) of one layer
    float* vc;
    const DecodeIo* io;     // io->pos: the first row's position
    const float* inv_freq;  // (hd/2)
    int hd, q_dim, kv_dim, pad;
};
VIVA_CHECK_LAYOUT(RopeRowsParams, 64);
VIVA_CHECK_OFFSET(RopeRowsParams, hd, 48);

struct DequantParams {
    WeightView w;  // fp8
    u16* hi;       // (n, k) bf16
    u16* lo;       // (n, k) bf16
};
VIVA_CHECK_LAYOUT(DequantParams, 56);
VIVA_CHECK_OFFSET(DequantParams, hi, 40);

// quant.cu: a checkpoint-dtype weight (n, k), rows src_stride apart, packed to fp8 (quant_fp8_*)
// or converted to bf16 rows dst_stride apart (to_bf16_*).
struct QuantParams {
    const u8* src;   // (n, src_stride) of the source kind
    u8* codes;       // fp8: (n, row_stride) codes; bf16: (n, row_stride) bf16
    float* scales;   // fp8: (n, bpr); unused for bf16
    int n, k, src_stride, block, row_stride, bpr;
};
VIVA_CHECK_LAYOUT(QuantParams, 48);
VIVA_CHECK_OFFSET(QuantParams, n, 24);
VIVA_CHECK_OFFSET(QuantParams, bpr, 44);
