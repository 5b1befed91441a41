%% @doc Support for test/viva_tensor_test.gleam (no gleeunit: hex.pm is unreachable here):
%% fixture paths, expected.json values, and a tiny runner that halts non-zero on failure.
-module(viva_tensor_gleam_test_ffi).
-export([fixture/1, expected_ids/1, expected_greedy/1, expected_text/1, expected_prompt/1, run/1, invalid_utf8/0]).

fixture(Name) ->
    unicode:characters_to_binary(viva_tensor_test_support:fixture(binary_to_list(Name))).

expected(Name, Key) ->
    maps:get(Key, viva_tensor_test_support:expected(binary_to_list(Name))).

expected_greedy(Name) -> expected(Name, <<"greedy_tokens">>).
expected_ids(Name) -> expected(Name, <<"input_ids">>).
expected_text(Name) -> expected(Name, <<"greedy_text">>).
expected_prompt(Name) -> expected(Name, <<"prompt">>).

%% A binary that is not UTF-8, typed as a Gleam String to test the boundary.
invalid_utf8() -> <<255, 254, 253>>.

%% Tests: [{Name, fun() -> {ok, nil} | {error, Why}}].
run(Tests) ->
    Results = [run_one(Name, Fun) || {Name, Fun} <- Tests],
    Failed = length([x || false <- Results]),
    io:format("~B passed, ~B failed~n", [length(Results) - Failed, Failed]),
    case Failed of
        0 -> nil;
        _ -> erlang:halt(1)
    end.

run_one(Name, Fun) ->
    try Fun() of
        {ok, _} -> io:format("  ok    ~ts~n", [Name]), true;
        {error, Why} -> io:format("  FAIL  ~ts: ~tp~n", [Name, Why]), false
    catch
        Class:Reason -> io:format("  FAIL  ~ts: ~p:~tp~n", [Name, Class, Reason]), false
    end.
