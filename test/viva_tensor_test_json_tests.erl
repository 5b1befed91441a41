%% EUnit tests of the tests' own JSON reader, so a fixture mismatch is never a reader bug.
-module(viva_tensor_test_json_tests).

-include_lib("eunit/include/eunit.hrl").

-define(D(Bin), viva_tensor_test_json:decode(Bin)).

scalars_test() ->
    ?assertEqual(0, ?D(<<"0">>)),
    ?assertEqual(-17, ?D(<<" -17 ">>)),
    ?assertEqual(3.5, ?D(<<"3.5">>)),
    ?assertEqual(-1.25e-3, ?D(<<"-1.25e-3">>)),
    ?assertEqual(1.0e5, ?D(<<"1E5">>)),
    ?assertEqual(2.0e-2, ?D(<<"2e-2">>)),
    ?assertEqual(123456789012345678901234567890, ?D(<<"123456789012345678901234567890">>)),
    ?assertEqual([true, false, null], ?D(<<"[true,false,null]">>)).

containers_test() ->
    ?assertEqual(#{}, ?D(<<"{}">>)),
    ?assertEqual([], ?D(<<"[ ]">>)),
    ?assertEqual(#{<<"a">> => [1, #{<<"b">> => []}], <<"c">> => <<"d">>},
                 ?D(<<"{\n  \"a\": [1, {\"b\": []}],\n  \"c\": \"d\"\n}">>)).

strings_test() ->
    ?assertEqual(<<"q\"b\\s/\n\t">>, ?D(<<"\"q\\\"b\\\\s\\/\\n\\t\"">>)),
    ?assertEqual(<<"é"/utf8>>, ?D(<<"\"\\u00e9\"">>)),
    ?assertEqual(<<"é"/utf8>>, ?D(<<"\"é\""/utf8>>)),
    %% A non-BMP code point as a UTF-16 surrogate pair (Python's ensure_ascii output).
    ?assertEqual(<<16#1F600/utf8>>, ?D(<<"\"\\ud83d\\ude00\"">>)),
    ?assertEqual(<<"▁x"/utf8>>, ?D(<<"\"\\u2581x\"">>)).

errors_test() ->
    [?assertError({json, _, _}, ?D(Bad))
     || Bad <- [<<"{">>, <<"[1,]">>, <<"{\"a\" 1}">>, <<"1 2">>, <<"-">>, <<"\"\\ud800\"">>,
                <<"\"abc">>, <<"tru">>, <<"{\"a\":1,}">>, <<"\"\\x\"">>, <<"\"a\nb\"">>]].
