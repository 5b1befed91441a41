%% @doc Safetensors access and bulk conversions for code that builds its own layers (the
%% seed-compatible helper module). A checkpoint is a `.safetensors' file, a
%% `model.safetensors.index.json' or a folder holding either. Paths are strings or binaries
%% (a binary is taken as raw path bytes). Tensors are little-endian binaries, row-major.
%% Every function returns `{ok, _}' or `{error, Reason}' (Reasons as in `viva_tensor_llm').
-module(viva_tensor_safetensors_ffi).
-export([open_header/1, read_tensor_bf16/2, bf16_to_fp32_binary/1, transpose_fp32/3]).
-export([text/1, path/1]).

-type entry() :: #{dtype := binary(),
                   file := binary(),
                   data_start := non_neg_integer(),
                   shape => [non_neg_integer()],
                   data_offsets => {non_neg_integer(), non_neg_integer()},
                   offset => non_neg_integer(),
                   size => non_neg_integer()}.
-export_type([entry/0]).

%% @doc `{ok, #{Name => Entry}}': every tensor of the checkpoint (all shards of a sharded one).
%% Entry: `dtype' as the header spells it (`<<"BF16">>', `<<"F16">>', `<<"F32">>', ...),
%% `shape', `data_offsets => {Begin, End}' exactly as in the header (relative to the data
%% section), `file' (the shard holding it), `data_start' (where that file's data section
%% begins: 8 + the header length), `offset' (= data_start + Begin, absolute in `file') and
%% `size' (= End - Begin, bytes). Tensors of dtypes the engine cannot read (I64, ...) carry
%% only `dtype', `file' and `data_start'.
-spec open_header(file:filename_all()) -> {ok, #{binary() => entry()}} | {error, viva_tensor_llm:reason()}.
open_header(Path) ->
    with_path(Path, fun viva_tensor_nif:safetensors_open_header/1).

%% @doc `{ok, {Shape, Bf16Binary}}': the tensor as little-endian bf16, 2 bytes per value. BF16
%% tensors are returned verbatim; F16 and F32 tensors are converted with round-to-nearest-even
%% (F16 → bf16 is a single rounding; ±Inf and NaN are kept, F32 values beyond bf16's range
%% become ±Inf). Other dtypes are `{error, {unsupported_dtype, Name, Dtype}}'.
-spec read_tensor_bf16(file:filename_all(), unicode:chardata()) ->
    {ok, {[non_neg_integer()], binary()}} | {error, viva_tensor_llm:reason()}.
read_tensor_bf16(Path, Name) ->
    case text(Name) of
        {ok, N} -> with_path(Path, fun(P) -> viva_tensor_nif:safetensors_read_tensor_bf16(P, N) end);
        error -> {error, {invalid_option, name, Name}}
    end.

%% @doc bf16 → f32, exact: `{ok, F32Binary}' of twice the size. An odd byte count is
%% `{error, {shape_mismatch, _, [Expected], [Got]}}'.
-spec bf16_to_fp32_binary(binary()) -> {ok, binary()} | {error, viva_tensor_llm:reason()}.
bf16_to_fp32_binary(Bin) -> viva_tensor_nif:bf16_to_fp32_binary(Bin).

%% @doc A `(Rows, Cols)' row-major f32 matrix → `(Cols, Rows)', cache-tiled and
%% multi-threaded (the 32000×2048 Llama LM head: ~40 ms on 16 cores, ~155 ms on 2; see
%% bench/results/transpose.md). `Rows * Cols * 4 =/= byte_size(Bin)' is
%% `{error, {shape_mismatch, <<"transpose_fp32 bytes">>, [Expected], [Got]}}'; a dimension
%% that is not a positive integer is `{error, {invalid_option, rows | cols, Value}}'.
-spec transpose_fp32(binary(), pos_integer(), pos_integer()) -> {ok, binary()} | {error, viva_tensor_llm:reason()}.
transpose_fp32(Bin, Rows, Cols) -> viva_tensor_nif:transpose_fp32(Bin, Rows, Cols).

with_path(Path, Fun) ->
    case path(Path) of
        {ok, P} -> Fun(P);
        error -> {error, {invalid_option, path, Path}}
    end.

%% @private A path as the bytes the NIF opens: a binary as it is, a string as UTF-8;
%% empty or anything else is `error'.
path(P) when is_binary(P), byte_size(P) > 0 -> {ok, P};
path(P) when is_binary(P) -> error;
path(P) ->
    case text(P) of
        {ok, B} when byte_size(B) > 0 -> {ok, B};
        _ -> error
    end.

%% @private Chardata as a UTF-8 binary; anything else is `error'.
text(T) ->
    try unicode:characters_to_binary(T) of
        B when is_binary(B) -> {ok, B};
        _ -> error
    catch
        error:badarg -> error
    end.
