%% @doc The only module that loads the native library `libviva_tensor_nif.so'.
%%
%% The library is looked up, in order:
%% <ol>
%%   <li>`$VIVA_TENSOR_NIF_PATH' (a path without the `.so' extension), when set;</li>
%%   <li>`code:priv_dir(viva_tensor)' (mix and gleam builds);</li>
%%   <li>a `priv/libviva_tensor_nif.so' in a folder above this module's `.beam'
%%       (plain `erlc' builds such as the EUnit run in scripts/test.sh).</li>
%% </ol>
%% If none loads, the module still loads and every function raises
%% `{nif_not_loaded, Why}', where Why says what was tried.
%%
%% These functions take already-validated arguments; call them through
%% {@link viva_tensor_llm}, which owns option validation and defaults.
-module(viva_tensor_nif).

-export([backend_info/0, reason_tags/0]).
-export([model_load/2, model_submit/5, model_info/1,
         request_cancel/1, request_active_count/0]).
%% Low-level resources (viva_tensor_lowlevel validates and documents them).
-export([prepack_fp8_weight/2, prepack_fp8_weight_blocked/3, packed_info/1,
         linear_fp8_w8a16/3, linear_fp8/3, linear_gelu_fp8/3, linear_swiglu_fp8/3,
         embedding_table_new/4, embedding_row/2, kv_cache_new/2,
         decode_step/4, decode_step_topk/5]).
%% Seed-compatible helpers (viva_tensor_safetensors_ffi, viva_tensor_tokenizer_ffi).
-export([safetensors_open_header/1, safetensors_read_tensor_bf16/2, bf16_to_fp32_binary/1,
         transpose_fp32/3, tokenizer_load/1, tokenizer_encode/2, tokenizer_decode/2]).

-on_load(init/0).

-define(LIB, "libviva_tensor_nif").

%% @private
-spec init() -> ok.
init() ->
    Candidates = candidates(),
    case load_first(Candidates, []) of
        ok ->
            ok;
        {error, Tried} ->
            %% Returning ok keeps the stubs callable, so a caller gets a readable
            %% `{nif_not_loaded, Why}' instead of `undef'.
            persistent_term:put({?MODULE, load_error}, lists:reverse(Tried)),
            ok
    end.

%% @doc Load a checkpoint. `Path' is a binary; `Opts' a fully defaulted map.
-spec model_load(binary(), map()) -> {ok, reference()} | {error, term()}.
model_load(_Path, _Opts) -> not_loaded().

%% @doc Submits a generation to the model's scheduler: `Input' a UTF-8 prompt binary or
%% `[{Role, Content}]' chat messages; `Pid' gets `{viva_done, Ref, Result}' or
%% `{viva_error, Ref, Reason}' (and `{viva_token, Ref, Chunk}' first when `Stream').
-spec model_submit(reference(), binary() | [{binary(), binary()}], map(), pid(), boolean()) ->
          {ok, reference()} | {error, term()}.
model_submit(_Model, _Input, _Opts, _Pid, _Stream) -> not_loaded().

%% @doc `[{Tag, Arity}]' of every Reason the NIF can return, one per engine error variant
%% (Arity 0: a bare atom); test/viva_tensor_reasons_tests.erl checks the mirrors against it.
-spec reason_tags() -> [{atom(), non_neg_integer()}].
reason_tags() -> not_loaded().

%% @doc What the machine offers (see viva_tensor_llm:backend_info/0).
-spec backend_info() -> {ok, map()} | {error, term()}.
backend_info() -> not_loaded().

-spec model_info(reference()) -> {ok, map()} | {error, term()}.
model_info(_Model) -> not_loaded().

%% @doc Asks a request to stop.
-spec request_cancel(reference()) -> ok | {error, term()}.
request_cancel(_Ref) -> not_loaded().

%% @doc Requests submitted and not yet finished, over all models.
-spec request_active_count() -> non_neg_integer().
request_active_count() -> not_loaded().

%% Low-level resources: see viva_tensor_lowlevel.
%% @private
prepack_fp8_weight(_Weight, _Shape) -> not_loaded().
%% @private
prepack_fp8_weight_blocked(_Weight, _Shape, _Block) -> not_loaded().
%% @private
packed_info(_Packed) -> not_loaded().
%% @private
linear_fp8_w8a16(_Input, _Packed, _Bias) -> not_loaded().
%% @private
linear_fp8(_Input, _Packed, _Bias) -> not_loaded().
%% @private
linear_gelu_fp8(_Input, _Packed, _Bias) -> not_loaded().
%% @private
linear_swiglu_fp8(_Input, _Packed, _Bias) -> not_loaded().
%% @private
embedding_table_new(_Bin, _Rows, _Cols, _Dtype) -> not_loaded().
%% @private
embedding_row(_Table, _Id) -> not_loaded().
%% @private
kv_cache_new(_Model, _MaxSeq) -> not_loaded().
%% @private
decode_step(_Model, _Token, _KvCache, _Pos) -> not_loaded().
%% @private
decode_step_topk(_Model, _Token, _KvCache, _Pos, _K) -> not_loaded().

%% Seed-compatible helpers: see viva_tensor_safetensors_ffi and viva_tensor_tokenizer_ffi.
%% @private
safetensors_open_header(_Path) -> not_loaded().
%% @private
safetensors_read_tensor_bf16(_Path, _Name) -> not_loaded().
%% @private
bf16_to_fp32_binary(_Bin) -> not_loaded().
%% @private
transpose_fp32(_Bin, _Rows, _Cols) -> not_loaded().
%% @private
tokenizer_load(_Path) -> not_loaded().
%% @private
tokenizer_encode(_Tokenizer, _Text) -> not_loaded().
%% @private
tokenizer_decode(_Tokenizer, _Ids) -> not_loaded().

not_loaded() ->
    erlang:nif_error({nif_not_loaded, persistent_term:get({?MODULE, load_error}, unknown)}).

load_first([], Tried) ->
    {error, Tried};
load_first([Path | Rest], Tried) ->
    case filelib:is_regular(Path ++ ".so") of
        false ->
            load_first(Rest, [{Path, not_found} | Tried]);
        true ->
            case erlang:load_nif(Path, 0) of
                ok -> ok;
                {error, Why} -> load_first(Rest, [{Path, Why} | Tried])
            end
    end.

%% Paths without the extension, in lookup order.
candidates() ->
    FromEnv = case os:getenv("VIVA_TENSOR_NIF_PATH") of
                  false -> [];
                  "" -> [];
                  P -> [P]
              end,
    FromApp = case code:priv_dir(viva_tensor) of
                  {error, _} -> [];
                  Dir -> [filename:join(Dir, ?LIB)]
              end,
    FromEnv ++ FromApp ++ walk_up().

walk_up() ->
    case code:which(?MODULE) of
        Beam when is_list(Beam) ->
            ancestors(filename:dirname(filename:absname(Beam)));
        _ ->
            []
    end.

ancestors(Dir) ->
    Here = filename:join([Dir, "priv", ?LIB]),
    case filename:dirname(Dir) of
        Dir -> [Here];
        Parent -> [Here | ancestors(Parent)]
    end.
