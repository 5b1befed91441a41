%% @doc Property-style fuzzing of every NIF's argument decoders with arbitrary terms: atoms,
%% integers (bignums included), floats, binaries, proper and improper lists, maps, tuples,
%% refs, live and dead pids, funs and every resource type, thrown at each argument position
%% of each NIF (the other arguments stay plausible, so the decoders past the first one are
%% reached too). Every call must return `{ok, _}' (or `ok') or `{error, Reason}' with a
%% Reason other than `{internal, _}', and never raise.
%%
%% The loop runs in a `peer' node so a VM abort is reported (with its seed) rather than
%% ending the test run. `VIVA_NIF_FUZZ_ITERS' sets the number of calls (default 2000),
%% `VIVA_NIF_FUZZ_SEED' the seed (default: random, printed); `VIVA_NIF_FUZZ_TRACE=1' prints
%% each call before making it (to find the one that took a VM down), `VIVA_NIF_FUZZ_STATS=1'
%% the outcomes per NIF. A long run outside
%% EUnit: `erl -noshell -pa _build/eunit -eval 'viva_tensor_nif_fuzz_tests:main()'`.
-module(viva_tensor_nif_fuzz_tests).
-include_lib("eunit/include/eunit.hrl").

-export([main/0, fuzz/2]).

-define(S, viva_tensor_test_support).
-define(N, viva_tensor_nif).

nif_fuzz_test_() ->
    {Iters, Seed} = settings(),
    {timeout, 60 + Iters div 20,
     fun() ->
             ?debugFmt("NIF fuzz: ~b calls, seed ~p", [Iters, Seed]),
             ?assertEqual({ok, Iters}, in_peer(Iters, Seed))
     end}.

%% @doc Runs the configured fuzz in a peer node and halts 0 (no failure) or 1.
main() ->
    {Iters, Seed} = settings(),
    io:format("NIF fuzz: ~b calls, seed ~p~n", [Iters, Seed]),
    Result = in_peer(Iters, Seed),
    io:format("~p~n", [Result]),
    halt(case Result of {ok, _} -> 0; _ -> 1 end).

settings() ->
    Iters = case os:getenv("VIVA_NIF_FUZZ_ITERS") of
                false -> 2000;
                N -> list_to_integer(N)
            end,
    Seed = case os:getenv("VIVA_NIF_FUZZ_SEED") of
               false -> erlang:unique_integer([positive]) + erlang:system_time();
               S -> list_to_integer(S)
           end,
    {Iters, Seed}.

in_peer(Iters, Seed) ->
    Paths = lists:usort([filename:dirname(code:which(M)) || M <- [?MODULE, ?S, ?N, viva_tensor_llm]]),
    {ok, Peer, _} = peer:start(#{connection => standard_io,
                                 args => lists:append([["-pa", P] || P <- Paths])}),
    try peer:call(Peer, ?MODULE, fuzz, [Iters, Seed], infinity)
    catch Class:Why -> {peer_call_failed, {seed, Seed}, {Class, Why}}  % an exception there, or the node died
    after catch peer:stop(Peer)
    end.

%% @doc `{ok, Calls}', or `{failed, [{Nif, Args, Outcome}]}' (the first few).
fuzz(Iters, Seed) ->
    rand:seed(exsss, Seed),
    Tmp = ?S:tmp_dir(),
    try
        Ctx = context(Tmp),
        Trace = os:getenv("VIVA_NIF_FUZZ_TRACE") =:= "1",
        Nifs = nifs(Ctx),
        %% the argument-less NIFs once
        Fixed = [{F, [], catch apply(?N, F, [])} || F <- [backend_info, reason_tags]],
        Bad0 = [X || {_, _, R} = X <- Fixed, not acceptable(R)],
        loop(Iters, Nifs, Ctx, Trace, Bad0, 0)
    after
        ?S:rm_rf(Tmp)
    end.

loop(0, _Nifs, _Ctx, _Trace, [], Done) -> stats(), {ok, Done};
loop(_, _Nifs, _Ctx, _Trace, Bad, _Done) when length(Bad) >= 5 -> {failed, lists:reverse(Bad)};
loop(0, _Nifs, _Ctx, _Trace, Bad, _Done) -> {failed, lists:reverse(Bad)};
loop(N, Nifs, Ctx, Trace, Bad, Done) ->
    {F, Plausible} = pick(Nifs),
    Args = mutate(Plausible, Ctx),
    Trace andalso io:format(standard_error, "~p~P~n", [F, Args, 30]),
    Result = try apply(?N, F, Args) catch C:W -> {raised, C, W} end,
    flush(),
    count(F, Result),
    Bad1 = case acceptable(Result) of
               true -> Bad;
               false -> [{F, Args, Result} | Bad]
           end,
    loop(N - 1, Nifs, Ctx, Trace, Bad1, Done + 1).

%% With VIVA_NIF_FUZZ_STATS=1: how often each NIF returned ok or each Reason tag, so a run
%% shows that the fuzz gets past the first decoder.
count(F, Result) ->
    Tag = case Result of
              {error, R} when is_tuple(R) -> element(1, R);
              {error, R} -> R;
              {ok, _} -> ok;
              _ -> other
          end,
    put({F, Tag}, case get({F, Tag}) of undefined -> 1; K -> K + 1 end).

stats() ->
    os:getenv("VIVA_NIF_FUZZ_STATS") =:= "1" andalso
        io:format(standard_error, "~p~n", [lists:sort([{K, V} || {{_, _} = K, V} <- get()])]).

acceptable({ok, _}) -> true;
acceptable(ok) -> true;
acceptable(N) when is_integer(N) -> true;  % request_active_count
acceptable(L) when is_list(L) -> true;  % reason_tags
acceptable({error, {internal, _}}) -> false;
acceptable({error, _}) -> true;
acceptable(_) -> false.

%% Stream tokens and load progress sent to this process.
flush() ->
    receive _ -> flush() after 0 -> ok end.

%% Real resources of every type, and the paths the plausible arguments use.
context(Tmp) ->
    Gqa = ?S:fixture("tiny_gqa"),
    Chat = ?S:copy_fixture("tiny_gqa", filename:join(Tmp, "chat")),
    ok = file:write_file(filename:join(Chat, "tokenizer_config.json"),
                         <<"{\"chat_template\": \"{% for m in messages %}{{ m.content }}{% endfor %}\"}">>),
    {ok, M} = viva_tensor_llm:load(Chat, #{weights => native}),
    W = f32s(64),
    {ok, P} = ?N:prepack_fp8_weight(W, [4, 16]),
    {ok, T} = ?N:embedding_table_new(f32s(8), 2, 4, f32),
    {ok, C} = ?N:kv_cache_new(M, 16),
    {ok, Tok} = ?N:tokenizer_load(list_to_binary(filename:join(Gqa, "tokenizer.json"))),
    {ok, St} = ?N:model_submit(M, <<"hi">>, #{max_new_tokens => 1}, self(), true),
    Dead = spawn(fun() -> ok end),
    Ref = monitor(process, Dead),
    receive {'DOWN', Ref, process, Dead, _} -> ok end,
    #{model => M, packed => P, table => T, cache => C, tokenizer => Tok, stream => St, dead => Dead,
      w => W, dir => list_to_binary(Chat), gqa => list_to_binary(Gqa),
      weights => list_to_binary(filename:join(Gqa, "model.safetensors")),
      tok_path => list_to_binary(filename:join(Gqa, "tokenizer.json"))}.

%% {Nif, PlausibleArgs}: arguments that usually succeed, so a fuzzed one is the only bad one.
nifs(#{model := M, packed := P, table := T, cache := C, tokenizer := Tok, stream := St,
       w := W, dir := Dir, weights := Weights, tok_path := TokPath}) ->
    X = {f32s(16), [1, 16]},
    Small = #{max_new_tokens => 2},
    [{model_load, [Dir, #{weights => native}]},
     {model_submit, [M, <<"hi">>, Small, self(), false]},
     {model_submit, [M, [{<<"user">>, <<"hi">>}], Small, self(), false]},
     {model_info, [M]},
     {model_submit, [M, <<"hi">>, Small, self(), true]},
     {request_cancel, [St]},
     {request_active_count, []},
     {prepack_fp8_weight, [W, [4, 16]]},
     {prepack_fp8_weight_blocked, [W, [4, 16], 16]},
     {packed_info, [P]},
     {linear_fp8_w8a16, [X, P, nil]},
     {linear_fp8, [X, P, nil]},
     {linear_gelu_fp8, [X, P, f32s(4)]},
     {linear_swiglu_fp8, [X, P, nil]},
     {embedding_table_new, [f32s(8), 2, 4, f32]},
     {embedding_row, [T, 1]},
     {kv_cache_new, [M, 8]},
     {decode_step, [M, 1, C, 0]},
     {decode_step_topk, [M, 1, C, 0, 5]},
     {safetensors_open_header, [Weights]},
     {safetensors_read_tensor_bf16, [Dir, <<"model.norm.weight">>]},
     {bf16_to_fp32_binary, [<<1, 2, 3, 4>>]},
     {transpose_fp32, [f32s(8), 2, 4]},
     {tokenizer_load, [TokPath]},
     {tokenizer_encode, [Tok, <<"hi">>]},
     {tokenizer_decode, [Tok, [1, 2, 3]]}].

pick(L) -> lists:nth(rand:uniform(length(L)), L).

%% Replaces one argument (mostly), a few, or all of them by arbitrary terms; an options map
%% often keeps its shape with one key or value fuzzed.
mutate([], _Ctx) -> [];
mutate(Args, Ctx) ->
    case rand:uniform(10) of
        1 -> [term(3, Ctx) || _ <- Args];
        2 -> [case rand:uniform(2) of 1 -> term(2, Ctx); 2 -> A end || A <- Args];
        _ ->
            I = rand:uniform(length(Args)),
            {Pre, [A | Post]} = lists:split(I - 1, Args),
            Pre ++ [fuzz_one(A, Ctx) | Post]
    end.

fuzz_one(A, Ctx) when is_map(A) ->
    case rand:uniform(3) of
        1 -> term(3, Ctx);
        _ -> A#{option_key() => term(1, Ctx)}
    end;
%% Half the time a value of the same kind (past the type check, into the range checks).
fuzz_one(A, Ctx) when is_integer(A) -> pick([integer(), term(3, Ctx)]);
fuzz_one(A, Ctx) when is_binary(A) -> pick([bytes(), leaf(Ctx), term(3, Ctx)]);
fuzz_one([N | _], Ctx) when is_integer(N) -> pick([shape(), [integer() || _ <- lists:seq(1, rand:uniform(4))], term(3, Ctx)]);
fuzz_one(A, Ctx) when is_tuple(A), tuple_size(A) =:= 2 -> pick([{bytes(), shape()}, term(3, Ctx)]);
fuzz_one(_, Ctx) -> term(3, Ctx).

option_key() ->
    pick([max_new_tokens, temperature, top_k, top_p, seed, stop_on_eos, num_layers, tokenizer_path,
          device, weights, block_size, activations, progress, bogus, <<"top_k">>, "seed", 1]).

%% An arbitrary term, at most Depth levels of nesting.
term(0, Ctx) -> leaf(Ctx);
term(D, Ctx) ->
    case rand:uniform(12) of
        1 -> [term(D - 1, Ctx) || _ <- lists:seq(1, rand:uniform(5) - 1)];
        2 -> list_to_tuple([term(D - 1, Ctx) || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        3 -> maps:from_list([{pick([option_key(), term(0, Ctx)]), term(D - 1, Ctx)} || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        4 -> [term(D - 1, Ctx) | term(0, Ctx)];  % improper when the tail is not a list
        5 -> {bytes(), shape()};
        6 -> {bytes(), shape(), pick([f32, f16, bf16, f64, nil])};
        7 -> [{bytes(), bytes()} || _ <- lists:seq(1, rand:uniform(3))];
        _ -> leaf(Ctx)
    end.

leaf(Ctx) ->
    case rand:uniform(9) of
        1 -> pick([nil, undefined, ok, error, true, false, f32, f16, bf16, f64, infinity, auto, all,
                   cpu, cuda, fp8, native, per_channel, none, '', 'ünïcödé', list_to_atom(lists:duplicate(255, $a))]);
        2 -> integer();
        3 -> integer();
        4 -> pick([0.0, -0.0, 0.5, 1.0, -1.5, 2.0, 1.0e-45, 3.4028234663852886e38, 3.5e38, 1.0e300, -1.0e300]);
        5 -> bytes();
        6 -> pick([make_ref(), self(), maps:get(dead, Ctx), fun() -> ok end, fun erlang:abs/1, [], <<>>]);
        7 -> pick([maps:get(K, Ctx) || K <- [model, packed, table, cache, tokenizer, stream]]);
        8 -> pick([maps:get(K, Ctx) || K <- [dir, gqa, weights, tok_path]] ++ [<<"/">>, <<"/dev/null">>, <<"/no/such">>]);
        9 -> shape()
    end.

integer() ->
    case rand:uniform(3) of
        1 -> rand:uniform(300) - 4;
        _ -> pick([0, -1, 1, 2, 16, 255, 256, 257, 1 bsl 31 - 1, 1 bsl 32, 1 bsl 63 - 1, 1 bsl 63,
                   1 bsl 64 - 1, 1 bsl 64, -(1 bsl 63), 1 bsl 100, -(1 bsl 100), 1 bsl 40, 1 bsl 62])
    end.

shape() ->
    [pick([0, 1, 2, 4, 8, 16, -1, 1 bsl 32, 1 bsl 62, 1 bsl 64, x]) || _ <- lists:seq(1, rand:uniform(4) - 1)].

bytes() ->
    case rand:uniform(5) of
        1 -> <<"hi there">>;
        2 -> <<255, 254, 0>>;
        3 -> f32s(pick([1, 4, 8, 16, 64]));
        _ -> rand:bytes(rand:uniform(70) - 1)
    end.

f32s(N) -> << <<(float(I)):32/little-float>> || I <- lists:seq(1, N) >>.
