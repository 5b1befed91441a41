%% @doc EUnit tests of the seed-compatible helper modules viva_tensor_safetensors_ffi and
%% viva_tensor_tokenizer_ffi, on the HF fixtures.
-module(viva_tensor_helpers_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, viva_tensor_test_support).
-define(ST, viva_tensor_safetensors_ffi).
-define(TK, viva_tensor_tokenizer_ffi).

f32(L) -> << <<(float(X)):32/float-little>> || X <- L >>.
floats(B) -> [F || <<F:32/float-little>> <= B].

open_header_test() ->
    {ok, H} = ?ST:open_header(?S:fixture("tiny_gqa")),
    ?assertMatch(#{dtype := <<"BF16">>, shape := [512, 256], offset := _, size := 262144},
                 maps:get(<<"model.embed_tokens.weight">>, H)),
    %% sharded: the index gathers all shards; f16 tensors
    {ok, H3} = ?ST:open_header(filename:join(?S:fixture("tiny_mha_sharded"), "model.safetensors.index.json")),
    ?assertMatch(#{dtype := <<"F16">>}, maps:get(<<"model.layers.2.mlp.down_proj.weight">>, H3)),
    ?assertMatch({error, {file_not_found, _}}, ?ST:open_header("/nonexistent/model.safetensors")),
    ?assertMatch({error, {invalid_option, path, _}}, ?ST:open_header(42)).

read_tensor_bf16_test() ->
    %% the bf16 fixture's norm read back through bf16 → f32 equals the f32 fixture path's values
    {ok, {[256], Bf}} = ?ST:read_tensor_bf16(?S:fixture("tiny_gqa"), "model.norm.weight"),
    ?assertEqual(512, byte_size(Bf)),
    {ok, F} = ?ST:bf16_to_fp32_binary(Bf),
    ?assertEqual(256, length(floats(F))),
    ?assert(lists:all(fun(X) -> X > 0.0 andalso X < 3.0 end, floats(F))),
    %% an F32 tensor converted to bf16 stays within bf16's relative precision (2^-8)
    {ok, {[128], B32}} = ?ST:read_tensor_bf16(?S:fixture("tiny_tied_llama3"), <<"model.norm.weight">>),
    {ok, H} = ?ST:open_header(?S:fixture("tiny_tied_llama3")),
    #{offset := Off, size := 512} = maps:get(<<"model.norm.weight">>, H),
    {ok, Raw} = file:read_file(filename:join(?S:fixture("tiny_tied_llama3"), "model.safetensors")),
    Exact = floats(binary:part(Raw, Off, 512)),
    {ok, Back} = ?ST:bf16_to_fp32_binary(B32),
    ?assert(lists:all(fun({A, E}) -> abs(A - E) =< abs(E) / 256 end, lists:zip(floats(Back), Exact))),
    ?assertEqual({error, {missing_tensor, <<"nope">>}}, ?ST:read_tensor_bf16(?S:fixture("tiny_gqa"), "nope")),
    ?assertMatch({error, {shape_mismatch, _, _, _}}, ?ST:bf16_to_fp32_binary(<<1, 2, 3>>)),
    ?assertEqual({ok, f32([1.0, -2.0])}, ?ST:bf16_to_fp32_binary(<<16#80, 16#3F, 16#00, 16#C0>>)).

transpose_test() ->
    M = f32([1, 2, 3, 4, 5, 6]),            % 2 x 3
    ?assertEqual({ok, f32([1, 4, 2, 5, 3, 6])}, ?ST:transpose_fp32(M, 2, 3)),
    ?assertMatch({error, {shape_mismatch, _, _, _}}, ?ST:transpose_fp32(M, 4, 3)),
    ?assertMatch({error, {invalid_option, rows, 0}}, ?ST:transpose_fp32(M, 0, 3)),
    ?assertMatch({error, {invalid_option, bin, _}}, ?ST:transpose_fp32(nope, 2, 3)).

transpose_lm_head_test_() ->
    {timeout, 60, fun() ->
        {Rows, Cols} = {32000, 2048},
        Big = binary:copy(f32(lists:seq(1, 2048)), Rows),
        {T, {ok, Tr}} = timer:tc(fun() -> ?ST:transpose_fp32(Big, Rows, Cols) end),
        ?assertEqual(byte_size(Big), byte_size(Tr)),
        %% row c of the transpose is Cols' value c+1 repeated Rows times
        <<First:32/float-little, _/binary>> = binary:part(Tr, 5 * Rows * 4, 4),
        ?assertEqual(6.0, First),
        {ok, Back} = ?ST:transpose_fp32(Tr, Cols, Rows),
        ?assert(Back =:= Big),
        io:format(user, "~ntranspose_fp32 32000x2048: ~b ms~n", [T div 1000])
    end}.

tokenizer_test() ->
    [begin
         Exp = ?S:expected(Name),
         {ok, Tok} = ?TK:load(filename:join(?S:fixture(Name), "tokenizer.json")),
         ?assertEqual({ok, maps:get(<<"input_ids">>, Exp)}, ?TK:encode(Tok, maps:get(<<"prompt">>, Exp))),
         ?assertEqual({ok, maps:get(<<"greedy_text">>, Exp)}, ?TK:decode(Tok, maps:get(<<"greedy_tokens">>, Exp)))
     end || Name <- ?S:fixture_names()],
    {ok, T} = ?TK:load(filename:join(?S:fixture("tiny_gqa"), "tokenizer.json")),
    ?assertEqual({error, invalid_utf8}, ?TK:encode(T, <<255, 254>>)),
    ?assertMatch({ok, [1 | _]}, ?TK:encode(T, "chardata ok")),
    ?assertMatch({error, {file_not_found, _}}, ?TK:load("/nonexistent/tokenizer.json")),
    ?assertMatch({error, {bad_format, _, _}}, ?TK:load(filename:join(?S:fixture("tiny_gqa"), "config.json"))),
    ?assertMatch({error, {invalid_option, tokenizer, _}}, ?TK:encode(make_ref(), <<"x">>)),
    ?assertMatch({error, {invalid_option, ids, _}}, ?TK:decode(T, [a])).
