%% @doc Many callers, one model: every generate/chat/stream call of a model joins its scheduler's
%% batch, and each caller gets exactly what it gets alone (greedy and seeded sampling); a full
%% queue says `overloaded'; `info/1' reports the scheduler.
-module(viva_tensor_batch_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, viva_tensor_test_support).
-define(L, viva_tensor_llm).

prompts() ->
    [<<"Once upon a time">>, <<"The capital of France is">>, <<"1, 2, 3,">>, <<"hello">>,
     <<"A long time ago in a galaxy far, far away">>, <<"def main():">>, <<"Q: why? A:">>, <<"x">>].

opts(I) when I rem 3 =:= 2 ->
    #{max_new_tokens => 10, temperature => 0.9, top_k => 20, top_p => 0.95, seed => I, stop_on_eos => false};
opts(I) ->
    #{max_new_tokens => 8 + I rem 5, stop_on_eos => I rem 2 =:= 0}.

crowd_gets_what_each_gets_alone_test_() ->
    {timeout, 300, fun() ->
        {ok, M} = ?L:load(?S:fixture("tiny_gqa"), #{weights => native, max_batch => 8, prefill_chunk => 5}),
        Jobs = lists:zip(lists:seq(1, 16), [lists:nth(1 + I rem 8, prompts()) || I <- lists:seq(1, 16)]),
        Alone = [{I, ?L:generate(M, P, opts(I))} || {I, P} <- Jobs],
        Parent = self(),
        [spawn_link(fun() -> Parent ! {I, ?L:generate(M, P, opts(I))} end) || {I, P} <- Jobs],
        Crowd = [receive {I, R} -> {I, R} after 120000 -> error(timeout) end || {I, _} <- Jobs],
        [begin
             {ok, #{tokens := T, text := X}} = A,
             ?assertMatch({I, {ok, #{tokens := T, text := X}}}, {I, C})
         end || {{I, A}, {I, C}} <- lists:zip(Alone, Crowd)],
        {ok, #{scheduler := S}} = ?L:info(M),
        ?assertMatch(#{running := 0, waiting := 0, max_batch := 8, prefill_chunk := 5}, S),
        ?assert(maps:get(max_batch_seen, S) > 1),
        %% every KV block is back in the pool
        #{kv_blocks := Blocks, kv_blocks_free := Free, kv_block_tokens := 16} = S,
        ?assert(is_integer(Blocks) andalso Blocks > 0),
        ?assertEqual(Blocks, Free)
    end}.

%% A pool with room for two sequences: eight callers still all get their solo tokens; a request
%% larger than the whole pool is refused with context_overflow.
small_pool_test_() ->
    {timeout, 120, fun() ->
        Dir = ?S:fixture("tiny_gqa"),
        {ok, Big} = ?L:load(Dir, #{weights => native}),
        {ok, #{scheduler := #{kv_blocks := B}}} = ?L:info(Big),
        %% the block's bytes from the default pool: the budget is a whole number of blocks
        {ok, M} = ?L:load(Dir, #{weights => native, kv_cache_bytes => 8 * block_bytes(Dir)}),
        ?assertMatch({ok, #{scheduler := #{kv_blocks := 8, kv_blocks_free := 8}}}, ?L:info(M)),
        ?assert(B > 8),
        O = #{max_new_tokens => 40, stop_on_eos => false},
        Ps = [<<"a">>, <<"b">>, <<"c">>, <<"d">>, <<"e">>, <<"f">>, <<"g">>, <<"h">>],
        Toks = fun(P) -> {ok, #{tokens := T}} = ?L:generate(M, P, O), T end,
        Alone = [Toks(P) || P <- Ps],
        Parent = self(),
        [spawn_link(fun() -> Parent ! {P, Toks(P)} end) || P <- Ps],
        [?assertEqual(A, receive {P, R} -> R after 60000 -> timeout end) || {P, A} <- lists:zip(Ps, Alone)],
        {ok, #{scheduler := #{max_batch_seen := Seen}}} = ?L:info(M),
        ?assert(Seen =< 2),
        ?assertMatch({error, {context_overflow, _, 128}}, ?L:generate(M, <<"hi">>, #{max_new_tokens => 126})),
        %% a long shared start is found in the cache the second time
        Sys = binary:copy(<<"You are a helpful assistant. ">>, 3),
        {ok, #{tokens := T1}} = ?L:generate(Big, <<Sys/binary, "Hi">>, #{max_new_tokens => 5}),
        {ok, #{scheduler := #{kv_prefix_reused_tokens := R0}}} = ?L:info(Big),
        {ok, #{tokens := T2}} = ?L:generate(Big, <<Sys/binary, "Hello">>, #{max_new_tokens => 5}),
        {ok, #{scheduler := #{kv_prefix_reused_tokens := R1, kv_blocks_cached := C}}} = ?L:info(Big),
        ?assert(R1 - R0 >= 16 andalso C > 0),
        {ok, Fresh} = ?L:load(Dir, #{weights => native}),
        ?assertMatch({ok, #{tokens := T1}}, ?L:generate(Fresh, <<Sys/binary, "Hi">>, #{max_new_tokens => 5})),
        {ok, Fresh2} = ?L:load(Dir, #{weights => native}),
        ?assertMatch({ok, #{tokens := T2}}, ?L:generate(Fresh2, <<Sys/binary, "Hello">>, #{max_new_tokens => 5})),
        {ok, Tiny} = ?L:load(Dir, #{kv_cache_bytes => 2 * block_bytes(Dir)}),
        ?assertMatch({error, {context_overflow, _, 32}}, ?L:generate(Tiny, <<"hi">>, O))
    end}.

%% Bytes of one KV block of the fixture: 2 (K, V) · 4 bytes · layers · kv heads · 16 · head_dim.
block_bytes(Dir) ->
    {ok, M} = ?L:load(Dir, #{}),
    {ok, #{num_hidden_layers := L, num_key_value_heads := H, head_dim := D}} = ?L:info(M),
    8 * L * H * 16 * D.

%% A stream in the batch sends the chunks of the text generate/3 returns.
stream_in_a_crowd_test_() ->
    {timeout, 120, fun() ->
        {ok, M} = ?L:load(?S:fixture("tiny_gqa"), #{weights => native}),
        O = #{max_new_tokens => 12, stop_on_eos => false},
        {ok, #{text := Text}} = ?L:generate(M, <<"hello">>, O),
        Parent = self(),
        [spawn_link(fun() -> Parent ! {bg, ?L:generate(M, <<"other">>, O)} end) || _ <- lists:seq(1, 4)],
        {ok, Ref} = ?L:stream(M, <<"hello">>, O, self()),
        ?assertEqual(Text, collect(Ref, <<>>)),
        [receive {bg, {ok, _}} -> ok after 60000 -> error(timeout) end || _ <- lists:seq(1, 4)]
    end}.

collect(Ref, Acc) ->
    receive
        {viva_token, Ref, C} -> collect(Ref, <<Acc/binary, C/binary>>);
        {viva_done, Ref, #{text := T}} -> ?assertEqual(T, Acc), T;
        {viva_error, Ref, R} -> error(R)
    after 60000 -> error(timeout)
    end.

%% At most one runs and one waits (one more if the engine took the first from the queue in
%% time); the rest are refused with `overloaded'; the model keeps serving.
overloaded_past_the_queue_test_() ->
    {timeout, 120, fun() ->
        {ok, M} = ?L:load(?S:fixture("tiny_gqa"), #{max_batch => 1, max_queue => 1}),
        O = #{max_new_tokens => 100, stop_on_eos => false},
        Parent = self(),
        [spawn_link(fun() -> Parent ! {r, ?L:generate(M, <<"hi">>, O)} end) || _ <- lists:seq(1, 6)],
        Rs = [receive {r, R} -> R after 60000 -> error(timeout) end || _ <- lists:seq(1, 6)],
        Ok = [R || {ok, _} = R <- Rs],
        ?assert(length(Ok) >= 1 andalso length(Ok) =< 3),
        ?assertEqual(6 - length(Ok), length([R || {error, overloaded} = R <- Rs])),
        ?assertMatch({ok, #{tokens := [_ | _]}}, ?L:generate(M, <<"hi">>, #{max_new_tokens => 3}))
    end}.
