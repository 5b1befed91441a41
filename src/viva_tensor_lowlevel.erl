%% @doc Low-level building blocks as BEAM resources: FP8 prepacked weights and the linears
%% that read them, embedding tables, KV caches, and the fused decode step of a loaded model.
%% The high-level {@link viva_tensor_llm:generate/3} runs on the same Rust pieces, so a
%% `decode_step/4' loop gives exactly its greedy tokens.
%%
%% Tensors cross as little-endian binaries plus a shape: `{Bin, [M, K]}' (f32) or
%% `{Bin, [M, K], Dtype}' with Dtype `f32 | f16 | bf16'. Weights are `[out, in]' — the
%% layout Hugging Face stores (`nn.Linear.weight'), not the `[in, out]' some references use;
%% a size that does not match the shape is `{error, {shape_mismatch, Name, Expected, Got}}'.
%%
%% ```
%% {ok, W} = viva_tensor_lowlevel:prepack_fp8_weight_blocked(WeightF32, [N, K], 16),
%% {ok, {Out, [1, N]}} = viva_tensor_lowlevel:linear_fp8_w8a16({XF32, [1, K]}, W, nil),
%% {ok, Model} = viva_tensor_llm:load("test/fixtures/tiny_gqa"),
%% {ok, Cache} = viva_tensor_lowlevel:kv_cache_new(Model),
%% {ok, Next} = viva_tensor_lowlevel:decode_step(Model, 1, Cache, 0).
%% '''
%%
%% FP8 layout (see native/viva_core/src/quant/fp8.rs): E4M3 codes row-major with each row
%% padded to 16 bytes, f32 scales in a separate (N, K / Block) array; a block's scale is
%% absmax / 448.
-module(viva_tensor_lowlevel).

-export([prepack_fp8_weight/2, prepack_fp8_weight_blocked/3, packed_info/1,
         linear_fp8_w8a16/3, linear_fp8/3, linear_gelu_fp8/3, linear_swiglu_fp8/3,
         embedding_table_new/4, embedding_row/2,
         kv_cache_new/1, kv_cache_new/2, decode_step/4, decode_step_topk/5]).

-export_type([tensor/0, packed/0, table/0, kv_cache/0]).

-type tensor() :: {binary(), [pos_integer()]} | {binary(), [pos_integer()], f32 | f16 | bf16}.
-type packed() :: reference().
-type table() :: reference().
-type kv_cache() :: reference().
-type bias() :: binary() | nil.
-type reason() :: viva_tensor_llm:reason().

%% @doc FP8 E4M3 prepack with one scale per output row. `Weight' is `[N, K]' f32 LE.
-spec prepack_fp8_weight(binary(), [pos_integer()]) -> {ok, packed()} | {error, reason()}.
prepack_fp8_weight(Weight, Shape) ->
    viva_tensor_nif:prepack_fp8_weight(Weight, Shape).

%% @doc FP8 E4M3 prepack with one scale per `Block' (16, 32, 64, 128) values along K.
-spec prepack_fp8_weight_blocked(binary(), [pos_integer()], 16 | 32 | 64 | 128) ->
    {ok, packed()} | {error, reason()}.
prepack_fp8_weight_blocked(Weight, Shape, Block) ->
    viva_tensor_nif:prepack_fp8_weight_blocked(Weight, Shape, Block).

%% @doc `#{n, k, block, bytes}' of a packed weight (`block' is `per_channel' or an integer).
-spec packed_info(packed()) -> {ok, map()} | {error, reason()}.
packed_info(Packed) -> viva_tensor_nif:packed_info(Packed).

%% @doc `Input · Wᵀ + Bias' with activations kept in their dtype and weights dequantized in
%% the inner loop (f32 accumulation). Returns `{ok, {F32Bin, [M, N]}}'.
-spec linear_fp8_w8a16(tensor(), packed(), bias()) -> {ok, tensor()} | {error, reason()}.
linear_fp8_w8a16(Input, Packed, Bias) -> viva_tensor_nif:linear_fp8_w8a16(Input, Packed, Bias).

%% @doc W8A8: each input row is quantized to E4M3 with its own absmax scale first.
-spec linear_fp8(tensor(), packed(), bias()) -> {ok, tensor()} | {error, reason()}.
linear_fp8(Input, Packed, Bias) -> viva_tensor_nif:linear_fp8(Input, Packed, Bias).

%% @doc `gelu(Input · Wᵀ + Bias)', GELU in its erf form (HF's "gelu").
-spec linear_gelu_fp8(tensor(), packed(), bias()) -> {ok, tensor()} | {error, reason()}.
linear_gelu_fp8(Input, Packed, Bias) -> viva_tensor_nif:linear_gelu_fp8(Input, Packed, Bias).

%% @doc SwiGLU: `Packed' holds gate rows then up rows (2·I rows); returns `[M, I]' of
%% `silu(x·gateᵀ + b_gate) · (x·upᵀ + b_up)'.
-spec linear_swiglu_fp8(tensor(), packed(), bias()) -> {ok, tensor()} | {error, reason()}.
linear_swiglu_fp8(Input, Packed, Bias) -> viva_tensor_nif:linear_swiglu_fp8(Input, Packed, Bias).

%% @doc A `(Rows, Cols)' embedding table from a little-endian binary of `Dtype' values
%% (copied once; kept in its dtype).
-spec embedding_table_new(binary(), pos_integer(), pos_integer(), f32 | f16 | bf16) ->
    {ok, table()} | {error, reason()}.
embedding_table_new(Bin, Rows, Cols, Dtype) ->
    viva_tensor_nif:embedding_table_new(Bin, Rows, Cols, Dtype).

%% @doc Row `Id' as an f32 binary; `{error, {token_out_of_range, Id, Rows}}' past the end.
-spec embedding_row(table(), non_neg_integer()) -> {ok, binary()} | {error, reason()}.
embedding_row(Table, Id) -> viva_tensor_nif:embedding_row(Table, Id).

%% @doc A KV cache for one sequence on `Model' with room for its whole context.
-spec kv_cache_new(viva_tensor_llm:model()) -> {ok, kv_cache()} | {error, reason()}.
kv_cache_new(Model) -> viva_tensor_nif:kv_cache_new(Model, nil).

%% @doc A KV cache with room for `MaxSeq' positions (1..max_position_embeddings).
-spec kv_cache_new(viva_tensor_llm:model(), pos_integer()) -> {ok, kv_cache()} | {error, reason()}.
kv_cache_new(Model, MaxSeq) -> viva_tensor_nif:kv_cache_new(Model, MaxSeq).

%% @doc Runs `Token' at position `Pos' (0-based; at most the number of positions already
%% filled — a smaller one rewinds), appends its K/V to `KvCache' and returns the greedy next id.
%% `Token' may be a non-empty list of ids, fed at `Pos', `Pos + 1', … as one batched pass (the
%% path generate takes for a prompt: a loop that feeds its prompt so and then one id per step
%% gives exactly generate's greedy tokens; feeding the prompt one id at a time agrees up to
%% summation order).
-spec decode_step(viva_tensor_llm:model(), non_neg_integer() | [non_neg_integer(), ...], kv_cache(),
                  non_neg_integer()) ->
    {ok, non_neg_integer()} | {error, reason()}.
decode_step(Model, Token, KvCache, Pos) -> viva_tensor_nif:decode_step(Model, Token, KvCache, Pos).

%% @doc Like {@link decode_step/4} but returns the `K' (1..256) best `{Id, Logit}' pairs,
%% highest logit first (lower id first on ties).
-spec decode_step_topk(viva_tensor_llm:model(), non_neg_integer() | [non_neg_integer(), ...], kv_cache(), non_neg_integer(),
                       1..256) -> {ok, [{non_neg_integer(), float()}]} | {error, reason()}.
decode_step_topk(Model, Token, KvCache, Pos, K) ->
    viva_tensor_nif:decode_step_topk(Model, Token, KvCache, Pos, K).
