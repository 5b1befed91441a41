%% @doc Streaming: chunks concatenate to generate's text, cancel stops the work, a dead
%% receiver frees its stream, and bad arguments are errors.
-module(viva_tensor_stream_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, viva_tensor_test_support).

collect(Ref, Acc) ->
    receive
        {viva_token, Ref, Chunk} -> collect(Ref, [Chunk | Acc]);
        {viva_done, Ref, Result} -> {done, iolist_to_binary(lists:reverse(Acc)), Result};
        {viva_error, Ref, Reason} -> {error, Reason, lists:reverse(Acc)}
    after 60000 -> timeout
    end.

chunks_equal_generate_test_() ->
    {timeout, 60, fun() ->
        [begin
             {ok, M} = viva_tensor_llm:load(?S:fixture(Name), #{weights => native}),
             Exp = ?S:expected(Name),
             Opts = #{max_new_tokens => 20, stop_on_eos => false},
             {ok, Want} = viva_tensor_llm:generate(M, maps:get(<<"prompt">>, Exp), Opts),
             {ok, Ref} = viva_tensor_llm:stream(M, maps:get(<<"prompt">>, Exp), Opts, self()),
             ?assert(is_reference(Ref)),
             {done, Text, Result} = collect(Ref, []),
             ?assertEqual(maps:get(text, Want), Text),
             ?assertEqual(maps:get(tokens, Want), maps:get(tokens, Result)),
             ?assertEqual(maps:get(greedy_tokens_key(), Exp), maps:get(tokens, Result))
         end || Name <- ?S:fixture_names()]
    end}.

greedy_tokens_key() -> <<"greedy_tokens">>.

%% a generation long enough to cancel: SmolLM2 when available, else the largest fixture
long_model() ->
    case os:getenv("VIVA_SMOLLM2_GGUF") of
        false -> {ok, M} = viva_tensor_llm:load(?S:fixture("tiny_tied_llama3"), #{weights => native}), {M, 200};
        Path -> {ok, M} = viva_tensor_llm:load(Path), {M, 400}
    end.

wait_idle(0) -> viva_tensor_nif:request_active_count();
wait_idle(N) ->
    case viva_tensor_nif:request_active_count() of
        0 -> 0;
        _ -> timer:sleep(20), wait_idle(N - 1)
    end.

cancel_stops_the_work_test_() ->
    {timeout, 120, fun() ->
        {M, Max} = long_model(),
        {ok, Ref} = viva_tensor_llm:stream(M, <<"Once upon a time">>, #{max_new_tokens => Max, stop_on_eos => false}, self()),
        receive {viva_token, Ref, _} -> ok after 30000 -> error(no_first_chunk) end,
        ok = viva_tensor_llm:cancel(Ref),
        {error, cancelled, _} = collect(Ref, []),
        ?assertEqual(0, wait_idle(250)),
        ?assertEqual(ok, viva_tensor_llm:cancel(Ref))  % cancelling an ended stream is harmless
    end}.

dead_receiver_frees_the_stream_test_() ->
    {timeout, 120, fun() ->
        {M, Max} = long_model(),
        Parent = self(),
        Receiver = spawn(fun() -> receive stop -> ok end end),
        {ok, _Ref} = viva_tensor_llm:stream(M, <<"Once upon a time">>, #{max_new_tokens => Max, stop_on_eos => false}, Receiver),
        ?assertEqual(1, viva_tensor_nif:request_active_count()),
        exit(Receiver, kill),
        ?assertEqual(0, wait_idle(250)),
        %% the model still works
        ?assertMatch({ok, _}, viva_tensor_llm:generate(M, <<"Hi">>, #{max_new_tokens => 2})),
        Parent ! done
    end}.

bad_arguments_test() ->
    {ok, M} = viva_tensor_llm:load(?S:fixture("tiny_gqa")),
    ?assertEqual({error, {invalid_option, pid, nobody}}, viva_tensor_llm:stream(M, <<"hi">>, #{}, nobody)),
    ?assertEqual({error, {invalid_option, top_k, 0}}, viva_tensor_llm:stream(M, <<"hi">>, #{top_k => 0}, self())),
    ?assertEqual({error, invalid_utf8}, viva_tensor_llm:stream(M, <<255>>, #{}, self())),
    ?assertMatch({error, {invalid_option, request, _}}, viva_tensor_llm:cancel(make_ref())),
    %% a request that can never fit the context is refused at once (nothing is queued)
    ?assertMatch({error, {context_overflow, _, 128}}, viva_tensor_llm:stream(M, <<"hi">>, #{max_new_tokens => 1000}, self())),
    ?assertEqual(0, viva_tensor_nif:request_active_count()).
