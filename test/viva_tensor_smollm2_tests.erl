%% @doc The real SmolLM2-135M-Instruct GGUF through the Erlang API: transformers' greedy
%% tokens on three prompts (test/fixtures/gguf/smollm2_expected.json) and a chat answer.
%% Needs $VIVA_SMOLLM2_GGUF (scripts/test.sh fetches the file and sets it).
-module(viva_tensor_smollm2_tests).
-include_lib("eunit/include/eunit.hrl").

smollm2_test_() ->
    case os:getenv("VIVA_SMOLLM2_GGUF") of
        false ->
            io:format(user, "VIVA_SMOLLM2_GGUF unset: SmolLM2 tests not run~n", []),
            [];
        Path ->
            {setup, fun() -> {ok, M} = viva_tensor_llm:load(Path, #{weights => native}), M end,
             fun(M) -> [{timeout, 120, fun() -> greedy(M) end}, {timeout, 120, fun() -> chat(M) end}] end}
    end.

greedy(M) ->
    Exp = viva_tensor_test_json:read_file("test/fixtures/gguf/smollm2_expected.json"),
    [begin
         {ok, R} = viva_tensor_llm:generate(M, maps:get(<<"prompt">>, C), #{max_new_tokens => 20, stop_on_eos => false}),
         ?assertEqual(maps:get(<<"greedy_tokens">>, C), maps:get(tokens, R)),
         ?assertEqual(maps:get(<<"greedy_text">>, C), maps:get(text, R))
     end || C <- maps:get(<<"cases">>, Exp)].

chat(M) ->
    {ok, #{text := Text}} =
        viva_tensor_llm:chat(M, [#{role => user, content => <<"What is the capital of France?">>}], #{max_new_tokens => 30}),
    ?assertNotEqual(nomatch, binary:match(Text, <<"Paris">>)),
    ?assertEqual({error, {invalid_option, messages, nope}}, viva_tensor_llm:chat(M, nope, #{})),
    ?assertEqual({error, {invalid_option, messages, [#{role => user}]}}, viva_tensor_llm:chat(M, [#{role => user}], #{})).
