%% EUnit suite of the Erlang API (viva_tensor_llm) against the HF reference fixtures.
%% Run by scripts/test.sh; the fixtures folder is $VIVA_FIXTURES (default test/fixtures).
-module(viva_tensor_llm_tests).

-include_lib("eunit/include/eunit.hrl").

-define(T, 300).  % seconds per test: generous, the CPU path is not fast yet
-define(S, viva_tensor_test_support).

%% One setup loads the three fixtures once; every test shares the handles.
api_test_() ->
    {setup, fun setup/0, fun cleanup/1,
     fun(Ctx) ->
             [{Title, {timeout, ?T, fun() -> Test(Ctx) end}} || {Title, Test} <- tests()]
     end}.

setup() ->
    Models = maps:from_list(
               [begin
                    {ok, M} = load(?S:fixture(Name)),
                    {Name, M}
                end || Name <- ?S:fixture_names()]),
    Expected = maps:from_list([{Name, ?S:expected(Name)} || Name <- ?S:fixture_names()]),
    #{models => Models, expected => Expected, tmp => ?S:tmp_dir()}.

cleanup(#{tmp := Tmp}) ->
    ?S:rm_rf(Tmp).

tests() ->
    [{"greedy tokens and text equal HF: " ++ N, fun(C) -> greedy_parity(C, N) end}
     || N <- ?S:fixture_names()] ++
    [{"result map has exactly the contract keys", fun result_shape/1},
     {"a string prompt equals the binary prompt", fun string_prompt/1},
     {"a chardata prompt (iolist of binaries and code points) is accepted", fun chardata_prompt/1},
     {"a single .safetensors file path loads", fun load_single_file/1},
     {"an index.json path loads the sharded fixture", fun load_index/1},
     {"a string path and a binary path load the same model", fun load_string_and_binary_path/1},
     {"num_layers loads only the first blocks", fun load_num_layers/1},
     {"tokenizer_path overrides a missing tokenizer.json", fun load_tokenizer_path/1},
     {"device cpu works; device cuda works with a GPU and is cuda_unavailable without", fun load_device/1},
     {"weight formats: bf16 equals HF on a bf16 checkpoint, fp8 blocks load", fun weight_formats/1},
     {"info/1 returns the config.json fields", fun info_fields/1},
     {"max_new_tokens 0 generates nothing", fun zero_new_tokens/1},
     {"seeded sampling is reproducible and the seed matters", fun seeded_sampling/1},
     {"top_k 1 at temperature 1.0 equals greedy", fun top_k_one_is_greedy/1},
     {"8 processes on one handle get identical greedy results", fun concurrent_greedy/1},
     {"8 processes on one handle get identical sampled results", fun concurrent_sampled/1},
     {"missing file", fun bad_missing_file/1},
     {"truncated file", fun bad_truncated/1},
     {"corrupt header", fun bad_corrupt_header/1},
     {"missing tensor", fun bad_missing_tensor/1},
     {"wrong shape", fun bad_wrong_shape/1},
     {"unknown dtype", fun bad_unknown_dtype/1},
     {"bad config.json", fun bad_config_json/1},
     {"bad tokenizer.json", fun bad_tokenizer_json/1},
     {"bad model.safetensors.index.json", fun bad_index_json/1},
     {"no tokenizer", fun bad_no_tokenizer/1},
     {"bad generate options: every option, wrong type and out of range", fun bad_generate_options/1},
     {"bad load options and paths", fun bad_load_options/1},
     {"odd terms straight to the NIF give errors, not crashes", fun nif_defensive/1},
     {"invalid UTF-8 prompt", fun bad_utf8/1},
     {"a non-text prompt", fun bad_prompt_type/1},
     {"prompt longer than the context", fun context_overflow_prompt/1},
     {"prompt + max_new_tokens beyond the context", fun context_overflow_new_tokens/1},
     {"an empty prompt is an error or a generation, never a crash", fun empty_prompt/1}].

%%--------------------------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------------------------

model(#{models := Ms}, Name) -> maps:get(Name, Ms).
expected(#{expected := Es}, Name) -> maps:get(Name, Es).

greedy(Model, Prompt) ->
    viva_tensor_llm:generate(Model, Prompt, ?S:greedy_opts()).

%% The reference result of a fixture, through the given handle.
assert_greedy(Model, #{<<"prompt">> := Prompt, <<"greedy_tokens">> := Tokens,
                       <<"greedy_text">> := Text, <<"input_ids">> := Ids}) ->
    {ok, R} = greedy(Model, Prompt),
    ?assertEqual(Tokens, maps:get(tokens, R)),
    ?assertEqual(Text, maps:get(text, R)),
    ?assertEqual(length(Ids) + length(Tokens), maps:get(total_tokens, R)),
    R.

%% After a failure: the VM is up and an already loaded model still generates correctly.
assert_still_works(Ctx) ->
    ?assert(is_process_alive(self())),
    assert_greedy(model(Ctx, "tiny_gqa"), expected(Ctx, "tiny_gqa")),
    ok.

assert_load_error(Ctx, Path, Pattern) ->
    Result = load(Path),
    ?assertMatch({error, _}, Result),
    {error, Reason} = Result,
    ?assert(Pattern(Reason)),
    assert_still_works(Ctx),
    Reason.

ends_with(Bin, Suffix) when is_binary(Bin) ->
    S = byte_size(Suffix),
    byte_size(Bin) >= S andalso binary:part(Bin, byte_size(Bin) - S, S) =:= Suffix;
ends_with(_, _) -> false.

parallel(N, Fun) ->
    Parent = self(),
    Pids = [spawn_link(fun() -> Parent ! {self(), Fun()} end) || _ <- lists:seq(1, N)],
    [receive {Pid, R} -> R after ?T * 1000 -> error(timeout) end || Pid <- Pids].

%%--------------------------------------------------------------------------------------
%% Parity and API shape
%%--------------------------------------------------------------------------------------

greedy_parity(Ctx, Name) ->
    R = assert_greedy(model(Ctx, Name), expected(Ctx, Name)),
    ?assertEqual(20, length(maps:get(tokens, R))).

result_shape(Ctx) ->
    #{<<"prompt">> := P} = expected(Ctx, "tiny_gqa"),
    {ok, R} = viva_tensor_llm:generate(model(Ctx, "tiny_gqa"), P, #{max_new_tokens => 3}),
    ?assertEqual([ms_per_token, text, tokens, total_tokens], lists:sort(maps:keys(R))),
    ?assert(is_float(maps:get(ms_per_token, R))),
    ?assert(maps:get(ms_per_token, R) >= 0.0),
    ?assert(is_binary(maps:get(text, R))),
    ?assert(lists:all(fun is_integer/1, maps:get(tokens, R))),
    ?assert(length(maps:get(tokens, R)) =< 3).

string_prompt(Ctx) ->
    #{<<"prompt">> := P} = E = expected(Ctx, "tiny_gqa"),
    assert_greedy(model(Ctx, "tiny_gqa"), E#{<<"prompt">> := unicode:characters_to_list(P)}).

chardata_prompt(Ctx) ->
    #{<<"prompt">> := P} = E = expected(Ctx, "tiny_gqa"),
    [First | Rest] = unicode:characters_to_list(P),
    assert_greedy(model(Ctx, "tiny_gqa"), E#{<<"prompt">> := [First, [unicode:characters_to_binary(Rest)]]}).

load_single_file(Ctx) ->
    {ok, M} = load(filename:join(?S:fixture("tiny_gqa"), "model.safetensors")),
    assert_greedy(M, expected(Ctx, "tiny_gqa")).

load_index(Ctx) ->
    Index = filename:join(?S:fixture("tiny_mha_sharded"), "model.safetensors.index.json"),
    {ok, M} = load(list_to_binary(Index)),
    assert_greedy(M, expected(Ctx, "tiny_mha_sharded")).

load_string_and_binary_path(Ctx) ->
    Dir = ?S:fixture("tiny_tied_llama3"),
    {ok, A} = load(Dir, #{}),
    {ok, B} = load(unicode:characters_to_binary(Dir), #{device => auto}),
    E = expected(Ctx, "tiny_tied_llama3"),
    assert_greedy(A, E),
    assert_greedy(B, E).

load_num_layers(Ctx) ->
    {ok, Full} = viva_tensor_llm:info(model(Ctx, "tiny_gqa")),
    ?assert(maps:get(num_hidden_layers, Full) >= 2),
    {ok, M} = load(?S:fixture("tiny_gqa"), #{num_layers => 1}),
    {ok, Info} = viva_tensor_llm:info(M),
    ?assertEqual(1, maps:get(num_hidden_layers, Info)),
    #{<<"prompt">> := P} = expected(Ctx, "tiny_gqa"),
    {ok, #{tokens := Tokens}} = greedy(M, P),
    ?assertEqual(20, length(Tokens)).

load_tokenizer_path(Ctx) ->
    Dir = ?S:break(no_tokenizer, maps:get(tmp, Ctx)),
    Tok = filename:join(?S:fixture("tiny_gqa"), "tokenizer.json"),
    {ok, M} = load(Dir, #{tokenizer_path => Tok}),
    assert_greedy(M, expected(Ctx, "tiny_gqa")),
    {ok, M2} = load(Dir, #{tokenizer_path => list_to_binary(Tok)}),
    assert_greedy(M2, expected(Ctx, "tiny_gqa")).

load_device(Ctx) ->
    {ok, M} = load(?S:fixture("tiny_gqa"), #{device => cpu}),
    assert_greedy(M, expected(Ctx, "tiny_gqa")),
    {ok, #{cuda_available := Cuda, cuda_reason := Why, auto := Auto, cpu_threads := T}} =
        viva_tensor_llm:backend_info(),
    ?assert(is_binary(Why) andalso is_integer(T) andalso T > 0),
    case Cuda of
        false ->
            ?assertEqual(cpu, Auto),
            ?assertNotEqual(<<"ok">>, Why),
            ?assertEqual({error, cuda_unavailable}, load(?S:fixture("tiny_gqa"), #{device => cuda}));
        true ->
            ?assertEqual(cuda, Auto),
            {ok, G} = load(?S:fixture("tiny_gqa"), #{device => cuda}),
            ?assertMatch({ok, #{backend := cuda}}, viva_tensor_llm:info(G)),
            assert_greedy(G, expected(Ctx, "tiny_gqa"))
    end,
    ?assertMatch({ok, #{backend := cpu}}, viva_tensor_llm:info(M)),
    assert_still_works(Ctx).

info_fields(Ctx) ->
    lists:foreach(
      fun(Name) ->
              Config = viva_tensor_test_json:read_file(filename:join(?S:fixture(Name), "config.json")),
              {ok, Info} = viva_tensor_llm:info(model(Ctx, Name)),
              [?assertEqual({K, maps:get(atom_to_binary(K), Config)}, {K, maps:get(K, Info)})
               || K <- [hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
                        intermediate_size, vocab_size, max_position_embeddings]],
              ?assertEqual(maps:get(<<"tie_word_embeddings">>, Config, false),
                           maps:get(tie_word_embeddings, Info)),
              ?assert(is_list(maps:get(eos_token_ids, Info))),
              ?assert(is_integer(maps:get(tokenizer_vocab_size, Info)))
      end, ?S:fixture_names()),
    {ok, #{rope_scaling := Rope}} = viva_tensor_llm:info(model(Ctx, "tiny_tied_llama3")),
    ?assertMatch(#{rope_type := llama3}, Rope),
    ?assertMatch({ok, #{rope_scaling := default}}, viva_tensor_llm:info(model(Ctx, "tiny_gqa"))).

zero_new_tokens(Ctx) ->
    #{<<"prompt">> := P, <<"input_ids">> := Ids} = expected(Ctx, "tiny_gqa"),
    {ok, R} = viva_tensor_llm:generate(model(Ctx, "tiny_gqa"), P, #{max_new_tokens => 0}),
    ?assertMatch(#{tokens := [], text := <<>>}, R),
    ?assertEqual(length(Ids), maps:get(total_tokens, R)).

sampling_opts(Seed) ->
    #{max_new_tokens => 20, stop_on_eos => false, temperature => 1.0, top_k => 50,
      top_p => 0.95, seed => Seed}.

seeded_sampling(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    #{<<"prompt">> := P} = expected(Ctx, "tiny_gqa"),
    {ok, #{tokens := A}} = viva_tensor_llm:generate(M, P, sampling_opts(7)),
    {ok, #{tokens := B}} = viva_tensor_llm:generate(M, P, sampling_opts(7)),
    {ok, #{tokens := C}} = viva_tensor_llm:generate(M, P, sampling_opts(8)),
    ?assertEqual(A, B),
    ?assertEqual(20, length(A)),
    ?assertNotEqual(A, C),
    %% The largest seed is accepted.
    ?assertMatch({ok, _}, viva_tensor_llm:generate(M, P, (sampling_opts(16#FFFFFFFFFFFFFFFF))#{max_new_tokens => 2})).

top_k_one_is_greedy(Ctx) ->
    #{<<"prompt">> := P, <<"greedy_tokens">> := Greedy} = expected(Ctx, "tiny_gqa"),
    {ok, #{tokens := T}} = viva_tensor_llm:generate(
                             model(Ctx, "tiny_gqa"), P,
                             #{max_new_tokens => 20, stop_on_eos => false, temperature => 1.0,
                               top_k => 1, seed => 123}),
    ?assertEqual(Greedy, T).

concurrent_greedy(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    #{<<"prompt">> := P, <<"greedy_tokens">> := Greedy} = expected(Ctx, "tiny_gqa"),
    Results = parallel(8, fun() -> greedy(M, P) end),
    [?assertMatch({ok, #{tokens := Greedy}}, R) || R <- Results],
    ?assertEqual(1, length(lists:usort([{T, X} || {ok, #{tokens := T, text := X}} <- Results]))).

concurrent_sampled(Ctx) ->
    M = model(Ctx, "tiny_mha_sharded"),
    #{<<"prompt">> := P} = expected(Ctx, "tiny_mha_sharded"),
    Results = parallel(8, fun() -> viva_tensor_llm:generate(M, P, sampling_opts(99)) end),
    [?assertMatch({ok, _}, R) || R <- Results],
    ?assertEqual(1, length(lists:usort([{T, X} || {ok, #{tokens := T, text := X}} <- Results]))).

%%--------------------------------------------------------------------------------------
%% Bad input: each a clear {error, Reason}; the VM and the loaded models keep working
%%--------------------------------------------------------------------------------------

bad_missing_file(Ctx) ->
    Path = filename:join(maps:get(tmp, Ctx), "no_such_model"),
    ?assertEqual({file_not_found, list_to_binary(Path)},
                 assert_load_error(Ctx, Path, fun(R) -> element(1, R) =:= file_not_found end)),
    assert_load_error(Ctx, filename:join(Path, "model.safetensors"),
                      fun(R) -> element(1, R) =:= file_not_found end).

bad_truncated(Ctx) ->
    assert_load_error(Ctx, ?S:break(truncated, maps:get(tmp, Ctx)),
                      fun({bad_format, File, Detail}) ->
                              ends_with(File, <<"model.safetensors">>) andalso is_binary(Detail);
                         (_) -> false
                      end).

bad_corrupt_header(Ctx) ->
    assert_load_error(Ctx, ?S:break(corrupt_header, maps:get(tmp, Ctx)),
                      fun({bad_format, File, Detail}) ->
                              ends_with(File, <<"model.safetensors">>) andalso is_binary(Detail);
                         (_) -> false
                      end).

bad_missing_tensor(Ctx) ->
    ?assertEqual({missing_tensor, <<"model.norm.weight">>},
                 assert_load_error(Ctx, ?S:break(missing_tensor, maps:get(tmp, Ctx)),
                                   fun(R) -> element(1, R) =:= missing_tensor end)).

bad_wrong_shape(Ctx) ->
    assert_load_error(Ctx, ?S:break(wrong_shape, maps:get(tmp, Ctx)),
                      fun({shape_mismatch, Name, Expected, Got}) ->
                              is_binary(Name) andalso is_list(Expected) andalso is_list(Got)
                                  andalso Expected =/= Got;
                         (_) -> false
                      end).

bad_unknown_dtype(Ctx) ->
    assert_load_error(Ctx, ?S:break(unknown_dtype, maps:get(tmp, Ctx)),
                      fun({unsupported_dtype, Name, <<"XXX", _/binary>>}) -> is_binary(Name);
                         (_) -> false
                      end).

bad_config_json(Ctx) ->
    assert_load_error(Ctx, ?S:break(bad_config_json, maps:get(tmp, Ctx)),
                      fun({bad_format, File, _}) -> ends_with(File, <<"config.json">>);
                         (_) -> false
                      end).

bad_tokenizer_json(Ctx) ->
    assert_load_error(Ctx, ?S:break(bad_tokenizer_json, maps:get(tmp, Ctx)),
                      fun({bad_format, File, _}) -> ends_with(File, <<"tokenizer.json">>);
                         (_) -> false
                      end).

bad_index_json(Ctx) ->
    assert_load_error(Ctx, ?S:break(bad_index_json, maps:get(tmp, Ctx)),
                      fun({bad_format, File, _}) -> ends_with(File, <<"model.safetensors.index.json">>);
                         (_) -> false
                      end).

bad_no_tokenizer(Ctx) ->
    assert_load_error(Ctx, ?S:break(no_tokenizer, maps:get(tmp, Ctx)),
                      fun({no_tokenizer, Path}) -> is_binary(Path);
                         (_) -> false
                      end).

bad_generate_options(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    Bad = [{max_new_tokens, [-1, 1.5, "10", ten, 1 bsl 64]},
           {temperature, [-0.1, -1, "hot", hot, 1.0e39]},
           {top_k, [0, 257, -1, 2.0, inf, "5"]},
           {top_p, [0, 0.0, -0.5, 1.5, 2, "0.9"]},
           {seed, [-1, 1 bsl 64, 1.0, "42"]},
           {stop_on_eos, [1, "true", yes, nil]}],
    [?assertEqual({error, {invalid_option, K, V}}, viva_tensor_llm:generate(M, <<"hi">>, #{K => V}))
     || {K, Vs} <- Bad, V <- Vs],
    ?assertEqual({error, {invalid_option, bogus, 1}}, viva_tensor_llm:generate(M, <<"hi">>, #{bogus => 1})),
    ?assertEqual({error, {invalid_option, <<"seed">>, 1}}, viva_tensor_llm:generate(M, <<"hi">>, #{<<"seed">> => 1})),
    ?assertEqual({error, {invalid_option, opts, [{seed, 1}]}}, viva_tensor_llm:generate(M, <<"hi">>, [{seed, 1}])),
    ?assertEqual({error, {invalid_option, opts, nil}}, viva_tensor_llm:generate(M, <<"hi">>, nil)),
    %% Boundaries and integer forms of float options are accepted.
    Ok = [#{temperature => 0}, #{top_p => 1}, #{top_k => 256}, #{top_k => 1}, #{top_p => 1.0e-6},
          #{temperature => 2}, #{seed => 0}, #{stop_on_eos => true}],
    [?assertMatch({ok, _}, viva_tensor_llm:generate(M, <<"hi">>, O#{max_new_tokens => 2})) || O <- Ok],
    assert_still_works(Ctx).

weight_formats(_Ctx) ->
    Exp = ?S:expected("tiny_gqa"),
    Want = maps:get(<<"greedy_tokens">>, Exp),
    Prompt = maps:get(<<"prompt">>, Exp),
    Greedy = #{max_new_tokens => 20, stop_on_eos => false},
    {ok, Bf16} = viva_tensor_llm:load(?S:fixture("tiny_gqa"), #{weights => bf16}),
    ?assertMatch({ok, #{tokens := Want}}, viva_tensor_llm:generate(Bf16, Prompt, Greedy)),
    First = hd(Want),
    [begin
         {ok, M} = viva_tensor_llm:load(?S:fixture("tiny_gqa"), O),
         ?assertMatch({ok, #{tokens := [First]}}, viva_tensor_llm:generate(M, Prompt, Greedy#{max_new_tokens => 1}))
     end || O <- [#{}, #{weights => fp8}, #{block_size => 32}, #{weights => fp8, block_size => 128},
                  #{block_size => per_channel, weights => fp8}, #{activations => f32},
                  #{activations => bf16}, #{weights => bf16, activations => bf16},
                  #{weights => native, activations => bf16}]].

bad_load_options(Ctx) ->
    Dir = ?S:fixture("tiny_gqa"),
    Bad = [{num_layers, [0, -2, 1.5, "1", many]},
           {tokenizer_path, [42, <<>>, "", [foo], true]},
           {device, [gpu, "cpu", <<"cpu">>, 0]},
           {weights, [fp16, "fp8", int8, 8]},
           {block_size, [0, 8, 48, 256, "16", per_row]},
           {activations, [f16, fp32, "bf16", <<"f32">>, 16]}],
    [?assertEqual({error, {invalid_option, K, V}}, load(Dir, #{K => V}))
     || {K, Vs} <- Bad, V <- Vs],
    ?assertEqual({error, {invalid_option, bogus, 1}}, load(Dir, #{bogus => 1})),
    ?assertEqual({error, {invalid_option, opts, [{device, cpu}]}}, load(Dir, [{device, cpu}])),
    [?assertEqual({error, {invalid_option, path, P}}, load(P)) || P <- [42, <<>>, "", auto, [foo]]],
    assert_still_works(Ctx).

nif_defensive(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    Defaults = viva_tensor_llm:defaults(generate),
    Submit = fun(Model, Input, Opts) -> viva_tensor_nif:model_submit(Model, Input, Opts, self(), false) end,
    ?assertEqual({error, {invalid_option, bogus, 1}}, Submit(M, <<"hi">>, #{bogus => 1})),
    ?assertEqual({error, {invalid_option, top_p, 2.0}}, Submit(M, <<"hi">>, Defaults#{top_p => 2.0})),
    ?assertEqual({error, {invalid_option, seed, -1}}, Submit(M, <<"hi">>, Defaults#{seed => -1})),
    ?assertMatch({error, {invalid_option, _, _}}, Submit(M, <<"hi">>, Defaults#{top_k => 0})),
    ?assertEqual({error, {invalid_option, opts, nope}}, Submit(M, <<"hi">>, nope)),
    ?assertEqual({error, {invalid_option, model, nope}}, Submit(nope, <<"hi">>, #{})),
    %% a list is chat messages; a charlist is not a list of {Role, Content}
    ?assertEqual({error, {invalid_option, messages, "hi"}}, Submit(M, "hi", #{})),
    ?assertEqual({error, {invalid_option, prompt, hi}}, Submit(M, hi, #{})),
    ?assertEqual({error, {invalid_option, path, 42}}, viva_tensor_nif:model_load(42, #{})),
    ?assertEqual({error, {invalid_option, opts, x}}, viva_tensor_nif:model_load(<<"x">>, x)),
    ?assertEqual({error, {invalid_option, device, gpu}}, viva_tensor_nif:model_load(<<"x">>, #{device => gpu})),
    ?assertMatch({error, {invalid_option, model, _}}, viva_tensor_nif:model_info(make_ref())),
    ?assertMatch({error, {invalid_option, model, _}}, viva_tensor_llm:generate(self(), <<"hi">>, #{})),
    assert_still_works(Ctx).

bad_utf8(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    ?assertEqual({error, invalid_utf8}, viva_tensor_llm:generate(M, <<255, 254>>, #{})),
    ?assertEqual({error, invalid_utf8}, viva_tensor_llm:generate(M, <<"ok", 16#C3>>, #{})),
    ?assertEqual({error, invalid_utf8}, viva_tensor_llm:generate(M, [$a, <<255>>], #{})),
    assert_still_works(Ctx).

bad_prompt_type(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    [?assertEqual({error, {invalid_option, prompt, P}}, viva_tensor_llm:generate(M, P, #{}))
     || P <- [hello, 42, {<<"hi">>}, [foo]]],
    assert_still_works(Ctx).

context_overflow_prompt(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    {ok, #{max_position_embeddings := Max}} = viva_tensor_llm:info(M),
    Result = viva_tensor_llm:generate(M, ?S:long_prompt(Max), #{max_new_tokens => 1}),
    ?assertMatch({error, {context_overflow, _, Max}}, Result),
    {error, {context_overflow, Needed, Max}} = Result,
    ?assert(Needed > Max),
    assert_still_works(Ctx).

context_overflow_new_tokens(Ctx) ->
    M = model(Ctx, "tiny_gqa"),
    #{<<"prompt">> := P, <<"input_ids">> := Ids} = expected(Ctx, "tiny_gqa"),
    {ok, #{max_position_embeddings := Max}} = viva_tensor_llm:info(M),
    ?assertEqual({error, {context_overflow, length(Ids) + Max, Max}},
                 viva_tensor_llm:generate(M, P, #{max_new_tokens => Max})),
    assert_still_works(Ctx).

empty_prompt(Ctx) ->
    case viva_tensor_llm:generate(model(Ctx, "tiny_gqa"), <<>>, #{max_new_tokens => 2}) of
        {ok, #{tokens := T}} -> ?assert(length(T) =< 2);
        Other -> ?assertEqual({error, empty_prompt}, Other)
    end,
    assert_still_works(Ctx).

%% The HF-parity path: weights in the checkpoint's own dtype (the default is fp8).
load(Path) -> load(Path, #{}).
load(Path, Opts) when is_map(Opts) -> viva_tensor_llm:load(Path, maps:merge(#{weights => native}, Opts));
load(Path, Opts) -> viva_tensor_llm:load(Path, Opts).

load_progress_test() ->
    Dir = viva_tensor_test_support:fixture("tiny_mha_sharded"),
    {ok, Loaded} = viva_tensor_llm:load(Dir, #{progress => self()}),
    Msgs = fun F(Acc) -> receive {viva_load_progress, _, _, _, _} = P -> F([P | Acc]) after 0 -> lists:reverse(Acc) end end([]),
    Stages = [S || {viva_load_progress, S, _, _, _} <- Msgs],
    %% a model placed on the GPU reports the upload as stage `device'
    Device = case viva_tensor_llm:info(Loaded) of {ok, #{backend := cuda}} -> [device]; _ -> [] end,
    ?assertEqual([file, file, tokenizer, layer, layer, layer] ++ Device ++ [ready], Stages),
    ?assertMatch([{viva_load_progress, layer, 3, 3, <<"model.layers.2">>}],
                 [M || {viva_load_progress, layer, 3, _, _} = M <- Msgs]),
    ?assertEqual({error, {invalid_option, progress, 5}}, viva_tensor_llm:load(Dir, #{progress => 5})),
    %% a dead receiver does not stop the load
    Dead = spawn(fun() -> ok end),
    timer:sleep(10),
    ?assertMatch({ok, _}, viva_tensor_llm:load(Dir, #{progress => Dead})).
