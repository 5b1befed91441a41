%% @doc Load Llama-family Hugging Face checkpoints and generate text.
%%
%% ```
%% {ok, Model} = viva_tensor_llm:load("test/fixtures/tiny_gqa"),
%% {ok, #{text := Text, tokens := Ids, ms_per_token := Ms, total_tokens := N}} =
%%     viva_tensor_llm:generate(Model, <<"Once upon a time">>, #{max_new_tokens => 20}).
%% '''
%%
%% A model handle is reusable across prompts and safe to share between processes: each
%% generate call has its own KV cache. Loading runs on a dirty IO scheduler, generation on
%% a dirty CPU scheduler.
%%
%% Options are validated here, once, against the declared lists {@link load_options/0}
%% and {@link generate_options/0}; an unknown key, a wrong type or an out-of-range value
%% gives `{error, {invalid_option, Key, Value}}', and an option argument that is not a
%% map gives `{error, {invalid_option, opts, Opts}}'. Every function returns
%% `{ok, _}' or `{error, Reason}'; README.md lists the Reasons.
-module(viva_tensor_llm).

-export([load/1, load/2, generate/2, generate/3, chat/2, chat/3, stream/4, cancel/1, info/1,
         backend_info/0]).
-export([load_options/0, generate_options/0, defaults/1]).

-export_type([model/0, reason/0, load_opts/0, generate_opts/0, result/0, option_spec/0]).

-type model() :: reference().
%% An opaque handle to a loaded model (a NIF resource).

-type load_opts() :: #{num_layers => pos_integer() | all,
                       tokenizer_path => file:filename_all() | auto,
                       device => auto | cpu | cuda,
                       weights => fp8 | bf16 | native,
                       block_size => 16 | 32 | 64 | 128 | per_channel,
                       activations => f32 | bf16,
                       max_batch => pos_integer(),
                       max_queue => pos_integer(),
                       prefill_chunk => pos_integer(),
                       kv_cache_bytes => pos_integer() | auto}.

-type generate_opts() :: #{max_new_tokens => non_neg_integer(),
                           temperature => number(),
                           top_k => infinity | 1..256,
                           top_p => number(),
                           seed => non_neg_integer(),
                           stop_on_eos => boolean()}.

-type result() :: #{tokens := [non_neg_integer()],
                    text := binary(),
                    ms_per_token := float(),
                    total_tokens := non_neg_integer()}.

-type reason() :: {file_not_found, binary()}
                | {bad_format, File :: binary(), Detail :: binary()}
                | {missing_tensor, binary()}
                | {shape_mismatch, Name :: binary(), Expected :: [non_neg_integer()], Got :: [non_neg_integer()]}
                | {unsupported_dtype, Name :: binary(), Dtype :: binary()}
                | {invalid_option, Key :: term(), Value :: term()}
                | {context_overflow, Needed :: non_neg_integer(), Max :: non_neg_integer()}
                | invalid_utf8
                | empty_prompt
                | {token_out_of_range, Id :: non_neg_integer(), Vocab :: non_neg_integer()}
                | {no_tokenizer, binary()}
                | {no_chat_template, binary()}
                | {io_error, Path :: binary(), Detail :: binary()}
                | cuda_unavailable
                | {cuda_error, Detail :: binary()}
                | out_of_memory
                | cancelled
                | overloaded
                | {internal, binary()}.

-type option_spec() :: {Name :: atom(), Default :: term(),
                        Validator :: fun((term()) -> {ok, term()} | error),
                        Doc :: binary()}.
%% One declared option: its name, default, a validator that normalises an accepted value
%% (e.g. an integer temperature to a float), and its documentation.

-define(MAX_U64, 16#FFFFFFFFFFFFFFFF).
-define(MAX_F32, 3.4028234663852886e38).
%% The sampler keeps at most this many candidates (top_k => infinity means this many).
-define(MAX_TOP_K, 256).

%%--------------------------------------------------------------------------------------
%% Declared options: the single source of names, defaults, validation and docs
%% (lib/viva.ex builds its documentation from these lists).
%%--------------------------------------------------------------------------------------

%% @doc The load options: `{Name, Default, Validator, Doc}'.
-spec load_options() -> [option_spec()].
load_options() ->
    [{num_layers, all, fun v_num_layers/1,
      <<"Load only the first N transformer blocks (a positive integer), or `all`.">>},
     {tokenizer_path, auto, fun v_path/1,
      <<"The tokenizer.json to use (string or binary); `auto` looks for <name>_tokenizer.json "
        "beside a weights file, then tokenizer.json in the checkpoint folder.">>},
     {device, auto, fun v_device/1,
      <<"`auto`, `cpu` or `cuda`. `auto` takes the GPU when a usable one is found (see "
        "`backend_info/0`), else the CPU; `cuda` without one is `{error, cuda_unavailable}`. "
        "On the GPU, generate/chat/stream run there; the low-level decode_step API stays on the CPU.">>},
     {progress, none, fun v_progress/1,
      <<"A pid that receives `{viva_load_progress, Stage, Done, Total, Detail}` messages "
        "(Stage `file`, `layer`, `tokenizer`, `device` (the upload to the GPU), `ready`), or `none`. Every load also logs one line "
        "per file and per transformer block (debug) through OTP logger.">>},
     {weights, fp8, fun v_weights/1,
      <<"Weight format: `fp8` (E4M3 weight-only with blocked scales, half of bf16's bytes), "
        "`bf16`, or `native` (the checkpoint's own dtype, memory-mapped; the path whose greedy "
        "output equals Hugging Face transformers).">>},
     {block_size, 16, fun v_block_size/1,
      <<"FP8 scale block along K: 16, 32, 64, 128, or `per_channel` (ignored unless weights is fp8).">>},
     {activations, f32, fun v_activations/1,
      <<"What the CPU linears multiply. `f32` (exact): f32 activations times the exact weights; "
        "with `weights => native` greedy output equals Hugging Face transformers. `bf16`: every "
        "linear rounds its input and its weights to bf16 and sums in f32 (`vdpbf16ps`, as "
        "llama.cpp's BF16 path): about 2x the prompt rate and faster bf16 decode on AVX512_BF16 "
        "CPUs, but logits move by ~2^-9 relative per rounding, so a greedy token can change at a "
        "near-tie. Prompt and decode steps make the same products either way. The GPU path "
        "keeps its own kernels (ignored there).">>},
     {max_batch, 64, fun v_max_batch/1,
      <<"Sequences the model's scheduler decodes together in one step (1..4096). Every "
        "generate/chat/stream call of this model joins one batch: prompts are fed in chunks "
        "between decode steps, and each caller's tokens are the ones it gets alone.">>},
     {max_queue, 1024, fun v_max_queue/1,
      <<"Requests that may wait for a place in the batch (1..1048576); past it a call returns "
        "`{error, overloaded}`.">>},
     {kv_cache_bytes, auto, fun v_kv_cache_bytes/1,
      <<"Bytes of the model's KV cache pool on the CPU (blocks of 16 positions shared by all its "
        "sequences; a sequence reserves prompt + max_new_tokens positions when it joins the "
        "batch and waits while they are not free). `auto`: a quarter of the memory available at "
        "load, at most 16 GiB; pages are committed as they are first written. A request larger "
        "than the whole pool: `{error, {context_overflow, Needed, Max}}`.">>},
     {prefill_chunk, 512, fun v_prefill_chunk/1,
      <<"Prompt tokens fed per scheduler step, over all waiting prompts (1..65536): smaller keeps "
        "other callers' tokens flowing during a long prompt, larger finishes prompts sooner.">>}].

%% @doc The generate options: `{Name, Default, Validator, Doc}'.
-spec generate_options() -> [option_spec()].
generate_options() ->
    [{max_new_tokens, 50, fun v_max_new_tokens/1,
      <<"The most tokens to generate (a non-negative integer).">>},
     {temperature, 0.0, fun v_temperature/1,
      <<"Sampling temperature (a number >= 0); 0.0 is greedy argmax.">>},
     {top_k, infinity, fun v_top_k/1,
      <<"Keep the K most likely tokens (1..256), or `infinity` (up to 256 candidates).">>},
     {top_p, 1.0, fun v_top_p/1,
      <<"Nucleus sampling: keep the smallest set of tokens whose probability reaches P "
        "(a number in (0, 1]).">>},
     {seed, 42, fun v_seed/1,
      <<"Seed of the ChaCha sampler (a non-negative integer < 2^64): the same seed, prompt, "
        "model and options give the same tokens on any machine.">>},
     {stop_on_eos, true, fun v_boolean/1,
      <<"Stop at the model's end-of-sequence token (a boolean).">>}].

%% @doc The defaults of `load' or `generate' options as a map.
-spec defaults(load | generate) -> map().
defaults(load) -> defaults_of(load_options());
defaults(generate) -> defaults_of(generate_options()).

%%--------------------------------------------------------------------------------------
%% API
%%--------------------------------------------------------------------------------------

%% @equiv load(Path, #{})
-spec load(file:filename_all()) -> {ok, model()} | {error, reason()}.
load(Path) ->
    load(Path, #{}).

%% @doc Load a checkpoint: a `.safetensors' file, a `model.safetensors.index.json', or a
%% folder holding either (with config.json, generation_config.json and tokenizer.json
%% beside it). `Path' is a string or a binary.
-spec load(file:filename_all(), load_opts()) -> {ok, model()} | {error, reason()}.
load(Path, Opts) ->
    maybe_call([fun() -> path_binary(Path) end,
                fun() -> validate(Opts, load_options()) end],
               fun([PathBin, FullOpts]) -> load_reporting(PathBin, FullOpts) end).

%% The NIF sends one message per mapped file, per transformer block and for the tokenizer;
%% a helper process turns them into logger lines (info for files and the finished load,
%% debug per block) and forwards them to the caller's `progress' pid, if any.
load_reporting(PathBin, #{progress := Forward} = FullOpts) ->
    Reporter = spawn(fun() -> report_progress(PathBin, Forward) end),
    Result = viva_tensor_nif:model_load(PathBin, FullOpts#{progress => Reporter}),
    Ref = monitor(process, Reporter),
    Reporter ! stop,  % after every progress message: one sender, ordered delivery
    receive {'DOWN', Ref, process, Reporter, _} -> ok end,
    Result.

report_progress(Path, Forward) ->
    receive
        {viva_load_progress, Stage, Done, Total, Detail} = Msg ->
            Level = case Stage of layer -> debug; _ -> info end,
            %% no domain metadata: the default handler drops domains other than otp/sasl
            logger:log(Level, "viva_tensor: loading ~ts: ~ts ~b/~b ~ts", [Path, Stage, Done, Total, Detail]),
            is_pid(Forward) andalso (Forward ! Msg),
            report_progress(Path, Forward);
        stop ->
            ok
    end.

%% @equiv generate(Model, Prompt, #{})
-spec generate(model(), unicode:chardata()) -> {ok, result()} | {error, reason()}.
generate(Model, Prompt) ->
    generate(Model, Prompt, #{}).

%% @doc Generate a continuation of `Prompt' (a UTF-8 binary, or a unicode string/iolist).
%% The result holds the generated token ids, their text (a binary, special tokens
%% skipped), the milliseconds per generated token, and the prompt + generated token count.
%% The work follows its caller: if the calling process dies (a supervisor shutdown, a killed
%% `gen_server:call' client), generation stops within one decode step and frees its KV cache.
-spec generate(model(), unicode:chardata(), generate_opts()) -> {ok, result()} | {error, reason()}.
generate(Model, Prompt, Opts) ->
    maybe_call([fun() -> validate(Opts, generate_options()) end,
                fun() -> prompt_binary(Prompt) end],
               fun([FullOpts, PromptBin]) -> run(Model, PromptBin, FullOpts) end).

%% @doc Chat with the model's own template (tokenizer_config.json or GGUF
%% `chat_template'), the assistant turn opened; generation stops at the model's EOS ids
%% (ChatML `<|im_end|>', Llama-3 `<|eot_id|>', generation_config.json lists).
%% `Messages' is a list of `#{role => R, content => C}' maps (atom or binary keys; atoms,
%% strings or binaries as values). A checkpoint without a template gives
%% `{error, {no_chat_template, Path}}'; a malformed list `{error, {invalid_option, messages, M}}'.
%% Like {@link generate/3}, it stops within one decode step when the caller dies.
-spec chat(model(), [map()]) -> {ok, result()} | {error, reason()}.
chat(Model, Messages) ->
    chat(Model, Messages, #{}).

-spec chat(model(), [map()], generate_opts()) -> {ok, result()} | {error, reason()}.
chat(Model, Messages, Opts) ->
    maybe_call([fun() -> validate(Opts, generate_options()) end,
                fun() -> messages(Messages) end],
               fun([FullOpts, Pairs]) -> run(Model, Pairs, FullOpts) end).

%% Submits to the model's scheduler and waits for the result: the request monitors this
%% process, so if it dies the sequence leaves the batch at the next step.
run(Model, Input, Opts) ->
    case viva_tensor_nif:model_submit(Model, Input, Opts, self(), false) of
        {ok, Ref} ->
            receive
                {viva_done, Ref, Result} -> {ok, Result};
                {viva_error, Ref, Reason} -> {error, Reason}
            end;
        {error, _} = E ->
            E
    end.

%% [{RoleBin, ContentBin}] from a list of message maps.
messages(Messages) when is_list(Messages) ->
    try {ok, [message(M) || M <- Messages]}
    catch throw:bad -> {error, {invalid_option, messages, Messages}}
    end;
messages(Messages) ->
    {error, {invalid_option, messages, Messages}}.

message(M) when is_map(M) -> {field(M, role), field(M, content)};
message(_) -> throw(bad).

field(M, Key) ->
    V = case M of
            #{Key := X} -> X;
            #{} -> maps:get(atom_to_binary(Key), M, undefined)
        end,
    case V of
        undefined -> throw(bad);
        A when is_atom(A) -> atom_to_binary(A);
        _ ->
            case prompt_binary(V) of
                {ok, B} -> B;
                _ -> throw(bad)
            end
    end.

%% @doc Streams a generation to `Pid': `{ok, Ref}' at once, then messages
%% `{viva_token, Ref, TextChunk}' (valid UTF-8 chunks that concatenate to `generate/3''s
%% text), and finally `{viva_done, Ref, Result}' (the map `generate/3' returns) or
%% `{viva_error, Ref, Reason}'. It runs in the model's batch (see `max_batch'); it stops and frees
%% its memory on {@link cancel/1} (then `{viva_error, Ref, cancelled}') or as soon as `Pid'
%% is dead.
-spec stream(model(), unicode:chardata(), generate_opts(), pid()) -> {ok, reference()} | {error, reason()}.
stream(Model, Prompt, Opts, Pid) when is_pid(Pid) ->
    maybe_call([fun() -> validate(Opts, generate_options()) end,
                fun() -> prompt_binary(Prompt) end],
               fun([FullOpts, PromptBin]) ->
                       viva_tensor_nif:model_submit(Model, PromptBin, FullOpts, Pid, true)
               end);
stream(_Model, _Prompt, _Opts, Pid) ->
    {error, {invalid_option, pid, Pid}}.

%% @doc Stops a stream started by {@link stream/4}.
-spec cancel(reference()) -> ok | {error, reason()}.
cancel(Ref) ->
    viva_tensor_nif:request_cancel(Ref).

%% @doc The loaded model's configuration (config.json fields after defaults and
%% generation_config.json), plus `tokenizer_vocab_size' and `backend' (`cpu' or `cuda').
-spec info(model()) -> {ok, map()} | {error, reason()}.
info(Model) ->
    viva_tensor_nif:model_info(Model).

%% @doc What this machine offers and what `device => auto' picks:
%% `#{cuda_available => boolean(), cuda_reason => binary() (<<"ok">> or why not: no driver,
%% no device, NVRTC missing, VIVA_DISABLE_CUDA set...), gpu_name, compute_capability => {Major, Minor},
%% gpu_memory (bytes), sm_count (`undefined' without a GPU), cpu_threads, auto => cpu | cuda}'.
%% Probing never crashes the VM; the first call initialises CUDA (dirty IO scheduler).
-spec backend_info() -> {ok, map()} | {error, reason()}.
backend_info() ->
    viva_tensor_nif:backend_info().

%%--------------------------------------------------------------------------------------
%% Validation
%%--------------------------------------------------------------------------------------

%% Runs each check in order; the first error wins, else Call gets the checked values.
maybe_call(Checks, Call) ->
    maybe_call(Checks, Call, []).

maybe_call([], Call, Acc) ->
    Call(lists:reverse(Acc));
maybe_call([Check | Rest], Call, Acc) ->
    case Check() of
        {ok, Value} -> maybe_call(Rest, Call, [Value | Acc]);
        {error, _} = Error -> Error
    end.

%% Checks every given option against its spec and fills in the defaults. Keys are checked
%% in sorted order so the reported error does not depend on map internals.
validate(Opts, Specs) when is_map(Opts) ->
    check_each(lists:sort(maps:to_list(Opts)), Specs, defaults_of(Specs));
validate(Opts, _Specs) ->
    {error, {invalid_option, opts, Opts}}.

check_each([], _Specs, Acc) ->
    {ok, Acc};
check_each([{Key, Value} | Rest], Specs, Acc) ->
    case lists:keyfind(Key, 1, Specs) of
        {Key, _Default, Validator, _Doc} ->
            case Validator(Value) of
                {ok, Normal} -> check_each(Rest, Specs, Acc#{Key => Normal});
                error -> {error, {invalid_option, Key, Value}}
            end;
        false ->
            {error, {invalid_option, Key, Value}}
    end.

defaults_of(Specs) ->
    maps:from_list([{Name, Default} || {Name, Default, _, _} <- Specs]).

path_binary(Path) ->
    case v_path(Path) of
        {ok, Bin} when is_binary(Bin) -> {ok, Bin};
        _ -> {error, {invalid_option, path, Path}}
    end.

prompt_binary(Prompt) when is_binary(Prompt) ->
    {ok, Prompt};  % UTF-8 is checked by the NIF, without a copy
prompt_binary(Prompt) when is_list(Prompt) ->
    try unicode:characters_to_binary(Prompt) of
        Bin when is_binary(Bin) -> {ok, Bin};
        _ -> {error, invalid_utf8}  % {error, ...} or {incomplete, ...}: bad bytes inside
    catch
        error:badarg -> {error, {invalid_option, prompt, Prompt}}
    end;
prompt_binary(Prompt) ->
    {error, {invalid_option, prompt, Prompt}}.

v_num_layers(all) -> {ok, all};
v_num_layers(N) when is_integer(N), N >= 1, N =< ?MAX_U64 -> {ok, N};
v_num_layers(_) -> error.

%% A file name: a non-empty binary, or a string (unicode allowed) made a UTF-8 binary.
v_path(auto) -> {ok, auto};
v_path(P) when is_binary(P), byte_size(P) > 0 -> {ok, P};
v_path([_ | _] = P) ->
    try unicode:characters_to_binary(P) of
        Bin when is_binary(Bin) -> {ok, Bin};
        _ -> error
    catch
        error:badarg -> error
    end;
v_path(_) -> error.

v_device(D) when D =:= auto; D =:= cpu; D =:= cuda -> {ok, D};
v_device(_) -> error.

v_max_batch(N) when is_integer(N), N >= 1, N =< 4096 -> {ok, N};
v_max_batch(_) -> error.

v_max_queue(N) when is_integer(N), N >= 1, N =< 1048576 -> {ok, N};
v_max_queue(_) -> error.

v_kv_cache_bytes(auto) -> {ok, auto};
v_kv_cache_bytes(N) when is_integer(N), N >= 1, N =< ?MAX_U64 -> {ok, N};
v_kv_cache_bytes(_) -> error.

v_prefill_chunk(N) when is_integer(N), N >= 1, N =< 65536 -> {ok, N};
v_prefill_chunk(_) -> error.

v_progress(none) -> {ok, none};
v_progress(P) when is_pid(P) -> {ok, P};
v_progress(_) -> error.

v_weights(W) when W =:= fp8; W =:= bf16; W =:= native -> {ok, W};
v_weights(_) -> error.

v_block_size(per_channel) -> {ok, per_channel};
v_block_size(B) when B =:= 16; B =:= 32; B =:= 64; B =:= 128 -> {ok, B};
v_block_size(_) -> error.

v_activations(A) when A =:= f32; A =:= bf16 -> {ok, A};
v_activations(_) -> error.

v_max_new_tokens(N) when is_integer(N), N >= 0, N =< ?MAX_U64 -> {ok, N};
v_max_new_tokens(_) -> error.

v_temperature(T) when is_number(T), T >= 0, T =< ?MAX_F32 -> {ok, float(T)};
v_temperature(_) -> error.

v_top_k(infinity) -> {ok, infinity};
v_top_k(K) when is_integer(K), K >= 1, K =< ?MAX_TOP_K -> {ok, K};
v_top_k(_) -> error.

v_top_p(P) when is_number(P), P > 0, P =< 1 -> {ok, float(P)};
v_top_p(_) -> error.

v_seed(S) when is_integer(S), S >= 0, S =< ?MAX_U64 -> {ok, S};
v_seed(_) -> error.

v_boolean(B) when is_boolean(B) -> {ok, B};
v_boolean(_) -> error.
