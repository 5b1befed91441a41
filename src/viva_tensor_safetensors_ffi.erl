%% @doc Safetensors access and bulk conversions for code that builds its own layers (the
%% seed-compatible helper module). Paths are strings or binaries; a checkpoint may be a
%% `.safetensors' file, a `model.safetensors.index.json' or a folder. Matrices are
%% little-endian f32 binaries, row-major.
-module(viva_tensor_safetensors_ffi).
-export([open_header/1, read_tensor_bf16/2, bf16_to_fp32_binary/1, transpose_fp32/3]).
-export([text/1]).

%% @doc `{ok, #{Name => #{dtype, shape, offset, size}}}': every tensor of the checkpoint,
%% `offset' being its byte offset in its file (entries of dtypes the engine cannot read have
%% only `dtype').
-spec open_header(file:filename_all()) -> {ok, #{binary() => map()}} | {error, viva_tensor_llm:reason()}.
open_header(Path) ->
    with_path(Path, fun viva_tensor_nif:safetensors_open_header/1).

%% @doc `{ok, {Shape, Bf16Binary}}': the tensor as little-endian bf16 (F16 and F32 tensors are
%% rounded to nearest even).
-spec read_tensor_bf16(file:filename_all(), unicode:chardata()) ->
    {ok, {[non_neg_integer()], binary()}} | {error, viva_tensor_llm:reason()}.
read_tensor_bf16(Path, Name) ->
    case text(Name) of
        {ok, N} -> with_path(Path, fun(P) -> viva_tensor_nif:safetensors_read_tensor_bf16(P, N) end);
        error -> {error, {invalid_option, name, Name}}
    end.

%% @doc bf16 → f32, exact: `{ok, F32Binary}' of twice the size.
-spec bf16_to_fp32_binary(binary()) -> {ok, binary()} | {error, viva_tensor_llm:reason()}.
bf16_to_fp32_binary(Bin) -> viva_tensor_nif:bf16_to_fp32_binary(Bin).

%% @doc `(Rows, Cols)' f32 matrix → `(Cols, Rows)', cache-tiled and multi-threaded (the
%% 32000×2048 TinyLlama LM head takes a fraction of a second).
-spec transpose_fp32(binary(), pos_integer(), pos_integer()) -> {ok, binary()} | {error, viva_tensor_llm:reason()}.
transpose_fp32(Bin, Rows, Cols) -> viva_tensor_nif:transpose_fp32(Bin, Rows, Cols).

with_path(Path, Fun) ->
    case text(Path) of
        {ok, P} when byte_size(P) > 0 -> Fun(P);
        _ -> {error, {invalid_option, path, Path}}
    end.

%% @private Chardata as a UTF-8 binary; anything else is `error'.
text(T) ->
    try unicode:characters_to_binary(T) of
        B when is_binary(B) -> {ok, B};
        _ -> error
    catch
        error:badarg -> error
    end.
