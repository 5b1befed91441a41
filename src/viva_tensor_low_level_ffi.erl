%% @doc Term conversion for the Gleam modules viva_tensor/low_level, viva_tensor/safetensors
%% and viva_tensor/tokenizer: Gleam records in, Erlang terms to the Erlang API, results and
%% Reasons back as Gleam values (errors through viva_tensor_ffi:reason/1).
-module(viva_tensor_low_level_ffi).
-export([prepack/3, packed_info/1, linear/4, embedding_table_new/4, embedding_row/2,
         kv_cache_new/2, decode_step/4, decode_step_topk/5,
         open_header/1, read_tensor_bf16/2, bf16_to_fp32/1, transpose_fp32/3,
         tokenizer_load/1, tokenizer_encode/2, tokenizer_decode/2]).

-define(L, viva_tensor_lowlevel).
r(Result) -> viva_tensor_ffi:reason(Result).

%% {block, B} | per_channel
prepack(W, Shape, per_channel) -> r(?L:prepack_fp8_weight(W, Shape));
prepack(W, Shape, {block, B}) -> r(?L:prepack_fp8_weight_blocked(W, Shape, B)).

packed_info(P) ->
    case ?L:packed_info(P) of
        {ok, #{n := N, k := K, block := B, bytes := Bytes}} ->
            {ok, {packed_info, N, K, case B of per_channel -> per_channel; _ -> {block, B} end, Bytes}};
        Other -> r(Other)
    end.

%% Kind: w8a16 | w8a8 | gelu | swiglu; tensors {tensor, Data, Shape, Dtype}; bias no_bias | {bias, Bin}
linear(Kind, {tensor, Data, Shape, Dtype}, P, Bias) ->
    B = case Bias of no_bias -> nil; {bias, Bin} -> Bin end,
    F = case Kind of
            w8a16 -> linear_fp8_w8a16;
            w8a8 -> linear_fp8;
            gelu -> linear_gelu_fp8;
            swiglu -> linear_swiglu_fp8
        end,
    case ?L:F({Data, Shape, Dtype}, P, B) of
        {ok, {Out, OutShape}} -> {ok, {tensor, Out, OutShape, f32}};
        Other -> r(Other)
    end.

embedding_table_new(Bin, Rows, Cols, Dtype) -> r(?L:embedding_table_new(Bin, Rows, Cols, Dtype)).
embedding_row(T, Id) -> r(?L:embedding_row(T, Id)).

%% {some, N} | none
kv_cache_new(M, none) -> r(?L:kv_cache_new(M));
kv_cache_new(M, {some, N}) -> r(?L:kv_cache_new(M, N)).

decode_step(M, Tok, C, Pos) -> r(?L:decode_step(M, Tok, C, Pos)).
decode_step_topk(M, Tok, C, Pos, K) -> r(?L:decode_step_topk(M, Tok, C, Pos, K)).

%% {header_entry, Name, Dtype, Shape, DataOffsets, Offset, Size}; unsupported dtypes have shape [] and -1s
open_header(Path) ->
    case viva_tensor_safetensors_ffi:open_header(Path) of
        {ok, H} ->
            {ok, [{header_entry, N, maps:get(dtype, E), maps:get(shape, E, []),
                   maps:get(data_offsets, E, {-1, -1}), maps:get(offset, E, -1), maps:get(size, E, -1)}
                  || {N, E} <- lists:sort(maps:to_list(H))]};
        Other -> r(Other)
    end.

read_tensor_bf16(Path, Name) -> r(viva_tensor_safetensors_ffi:read_tensor_bf16(Path, Name)).
bf16_to_fp32(Bin) -> r(viva_tensor_safetensors_ffi:bf16_to_fp32_binary(Bin)).
transpose_fp32(Bin, Rows, Cols) -> r(viva_tensor_safetensors_ffi:transpose_fp32(Bin, Rows, Cols)).

tokenizer_load(Path) -> r(viva_tensor_tokenizer_ffi:load(Path)).
tokenizer_encode(T, Text) -> r(viva_tensor_tokenizer_ffi:encode(T, Text)).
tokenizer_decode(T, Ids) -> r(viva_tensor_tokenizer_ffi:decode(T, Ids)).
