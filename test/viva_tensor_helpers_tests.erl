%% @doc EUnit tests of the seed-compatible helper modules viva_tensor_safetensors_ffi and
%% viva_tensor_tokenizer_ffi, on the HF fixtures (test/fixtures/README.md): tiny_gqa is BF16,
%% tiny_tied_llama3 F32, tiny_mha_sharded F16 in two shards. Headers are checked against the
%% raw JSON headers read here, conversions against bit-level Erlang references.
-module(viva_tensor_helpers_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, viva_tensor_test_support).
-define(ST, viva_tensor_safetensors_ffi).
-define(TK, viva_tensor_tokenizer_ffi).

%% ---------------------------------------------------------------- references

f32(L) -> << <<(float(X)):32/float-little>> || X <- L >>.
floats(B) -> [F || <<F:32/float-little>> <= B].

%% The raw header of a safetensors file: {DataStart, #{Name => #{...}}} (no __metadata__).
raw_header(File) ->
    {ok, <<N:64/little, Json:N/binary, _/binary>>} = file:read_file(File),
    {8 + N, maps:remove(<<"__metadata__">>, viva_tensor_test_json:decode(Json))}.

%% f32 bits → bf16 bits, round to nearest even (finite and infinite inputs).
bf16_rne(<<B:32/little>>) ->
    Lsb = (B bsr 16) band 1,
    <<(((B + 16#7FFF + Lsb) bsr 16) band 16#FFFF):16/little>>.

%% f16 bits → f32 bits, exactly (normal, subnormal, ±0; the fixtures hold no Inf/NaN). The
%% sign is set bitwise: OTP 25 arithmetic does not keep -0.0.
f16_to_f32(<<H:16/little>>) ->
    Sign = H bsr 15, Exp = (H bsr 10) band 16#1F, Man = H band 16#3FF,
    V = case Exp of
            0 -> Man * math:pow(2, -24);
            _ -> (1024 + Man) * math:pow(2, Exp - 25)
        end,
    <<_:1, Mag:31>> = <<V:32/float>>,
    <<Bits:32>> = <<Sign:1, Mag:31>>,
    <<Bits:32/little>>.

%% What read_tensor_bf16 must return for a tensor stored as Raw bytes of Dtype.
expected_bf16(<<"BF16">>, Raw) -> Raw;
expected_bf16(<<"F32">>, Raw) -> << <<(bf16_rne(W))/binary>> || <<W:4/binary>> <= Raw >>;
expected_bf16(<<"F16">>, Raw) -> << <<(bf16_rne(f16_to_f32(H)))/binary>> || <<H:2/binary>> <= Raw >>.

naive_transpose(Bin, Rows, Cols) ->
    T = list_to_tuple([W || <<W:4/binary>> <= Bin]),
    << <<(element(R * Cols + C + 1, T))/binary>> || C <- lists:seq(0, Cols - 1), R <- lists:seq(0, Rows - 1) >>.

shards(Name) ->
    Dir = ?S:fixture(Name),
    {ok, Fs} = file:list_dir(Dir),
    [filename:join(Dir, F) || F <- lists:sort(Fs), filename:extension(F) =:= ".safetensors"].

%% ---------------------------------------------------------------- open_header

open_header_matches_raw_headers_test() ->
    [begin
         {ok, H} = ?ST:open_header(?S:fixture(Name)),
         Raw = [{list_to_binary(File), raw_header(File)} || File <- shards(Name)],
         ?assertEqual(lists:sort(lists:append([maps:keys(M) || {_, {_, M}} <- Raw])), lists:sort(maps:keys(H))),
         [begin
              #{<<"dtype">> := D, <<"shape">> := Shape, <<"data_offsets">> := [B, E]} = R,
              ?assertEqual(#{dtype => D, shape => Shape, data_offsets => {B, E}, file => File,
                             data_start => Start, offset => Start + B, size => E - B},
                           maps:get(T, H))
          end || {File, {Start, M}} <- Raw, {T, R} <- maps:to_list(M)]
     end || Name <- ?S:fixture_names()],
    %% tiny_gqa is all BF16; the sharded one spreads over 2 files, F16
    {ok, G} = ?ST:open_header(?S:fixture("tiny_gqa")),
    ?assertMatch(#{dtype := <<"BF16">>, shape := [512, 256], size := 262144},
                 maps:get(<<"model.embed_tokens.weight">>, G)),
    {ok, Sh} = ?ST:open_header(filename:join(?S:fixture("tiny_mha_sharded"), "model.safetensors.index.json")),
    ?assertEqual(2, length(lists:usort([F || #{file := F} <- maps:values(Sh)]))),
    ?assertEqual([<<"F16">>], lists:usort([D || #{dtype := D} <- maps:values(Sh)])),
    %% a folder, its index and a binary path give the same header
    ?assertEqual({ok, Sh}, ?ST:open_header(list_to_binary(?S:fixture("tiny_mha_sharded")))).

open_header_errors_test() ->
    Tmp = ?S:tmp_dir(),
    try
        ?assertMatch({error, {file_not_found, _}}, ?ST:open_header("/nonexistent/model.safetensors")),
        ?assertMatch({error, {invalid_option, path, 42}}, ?ST:open_header(42)),
        ?assertMatch({error, {invalid_option, path, <<>>}}, ?ST:open_header(<<>>)),
        ?assertMatch({error, {bad_format, _, _}}, ?ST:open_header(?S:break(truncated, Tmp))),
        ?assertMatch({error, {bad_format, _, _}}, ?ST:open_header(?S:break(corrupt_header, Tmp))),
        ?assertMatch({error, {bad_format, _, _}}, ?ST:open_header(?S:break(bad_index_json, Tmp))),
        %% a dtype the engine cannot read: listed with dtype, file and data_start only
        Odd1 = ?S:break(unknown_dtype, Tmp),
        {ok, H} = ?ST:open_header(Odd1),
        [Odd] = [E || E = #{dtype := D} <- maps:values(H), not lists:member(D, [<<"BF16">>, <<"F16">>, <<"F32">>])],
        ?assertEqual([data_start, dtype, file], lists:sort(maps:keys(Odd))),
        [OddName] = [N || {N, E} <- maps:to_list(H), E =:= Odd],
        ?assertMatch({error, {unsupported_dtype, OddName, _}},
                     ?ST:read_tensor_bf16(Odd1, OddName))
    after
        ?S:rm_rf(Tmp)
    end.

%% ---------------------------------------------------------------- read_tensor_bf16

%% Every tensor of every fixture (BF16 verbatim, F32 and F16 rounded to nearest even) equals
%% the bit-level reference computed here from the file's own bytes.
read_tensor_bf16_all_tensors_test_() ->
    {"read_tensor_bf16 of every fixture tensor vs the bit-level reference", {timeout, 120, fun() ->
        [begin
             {ok, H} = ?ST:open_header(?S:fixture(Name)),
             [begin
                  {ok, File} = file:read_file(F),
                  Raw = binary:part(File, Off, Size),
                  {ok, {GotShape, Got}} = ?ST:read_tensor_bf16(?S:fixture(Name), T),
                  ?assertEqual({T, Shape, true}, {T, GotShape, Got =:= expected_bf16(D, Raw)})
              end || {T, #{dtype := D, shape := Shape, offset := Off, size := Size, file := F}} <- maps:to_list(H)]
         end || Name <- ?S:fixture_names()]
    end}}.

read_tensor_bf16_round_trip_test() ->
    %% BF16: bf16 → f32 → (exact) bf16 gives the file's bytes back
    {ok, {[256], Bf}} = ?ST:read_tensor_bf16(?S:fixture("tiny_gqa"), "model.norm.weight"),
    {ok, F} = ?ST:bf16_to_fp32_binary(Bf),
    ?assertEqual(Bf, << <<Hi:16/little>> || <<_:16/little, Hi:16/little>> <= F >>),
    %% F32 → bf16 → f32 stays within half a bf16 ulp (relative 2^-8)
    {ok, {[128], B32}} = ?ST:read_tensor_bf16(?S:fixture("tiny_tied_llama3"), <<"model.norm.weight">>),
    {ok, #{<<"model.norm.weight">> := #{offset := Off, size := 512, file := File}}} =
        ?ST:open_header(?S:fixture("tiny_tied_llama3")),
    {ok, Raw} = file:read_file(File),
    {ok, Back} = ?ST:bf16_to_fp32_binary(B32),
    [?assert(abs(A - E) =< abs(E) / 256) || {A, E} <- lists:zip(floats(Back), floats(binary:part(Raw, Off, 512)))],
    %% F16 (second shard of the sharded fixture) → bf16 → f32: relative 2^-8 as well
    Sharded = ?S:fixture("tiny_mha_sharded"),
    {ok, #{<<"model.norm.weight">> := #{offset := O16, size := Sz16, file := F16File}}} = ?ST:open_header(Sharded),
    {ok, Raw16} = file:read_file(F16File),
    {ok, {[_], B16}} = ?ST:read_tensor_bf16(Sharded, "model.norm.weight"),
    {ok, Back16} = ?ST:bf16_to_fp32_binary(B16),
    Exact16 = [X || <<X:16/float-little>> <= binary:part(Raw16, O16, Sz16)],
    [?assert(abs(A - E) =< abs(E) / 256) || {A, E} <- lists:zip(floats(Back16), Exact16)].

read_tensor_bf16_errors_test() ->
    G = ?S:fixture("tiny_gqa"),
    ?assertEqual({error, {missing_tensor, <<"nope">>}}, ?ST:read_tensor_bf16(G, "nope")),
    ?assertMatch({error, {invalid_option, name, 7}}, ?ST:read_tensor_bf16(G, 7)),
    ?assertMatch({error, {file_not_found, _}}, ?ST:read_tensor_bf16("/nonexistent", "model.norm.weight")),
    ?assertMatch({error, {invalid_option, path, _}}, ?ST:read_tensor_bf16(#{}, "model.norm.weight")).

%% ---------------------------------------------------------------- bf16_to_fp32_binary

bf16_to_fp32_test() ->
    ?assertEqual({ok, f32([1.0, -2.0])}, ?ST:bf16_to_fp32_binary(<<16#80, 16#3F, 16#00, 16#C0>>)),
    ?assertEqual({ok, <<>>}, ?ST:bf16_to_fp32_binary(<<>>)),
    %% every bf16 code is the top half of its f32 (NaN payloads included)
    All = << <<C:16/little>> || C <- lists:seq(0, 16#FFFF) >>,
    {ok, W} = ?ST:bf16_to_fp32_binary(All),
    ?assertEqual(<< <<(C bsl 16):32/little>> || C <- lists:seq(0, 16#FFFF) >>, W),
    ?assertMatch({error, {shape_mismatch, _, [4], [3]}}, ?ST:bf16_to_fp32_binary(<<1, 2, 3>>)),
    ?assertMatch({error, {invalid_option, bin, nope}}, ?ST:bf16_to_fp32_binary(nope)),
    ?assertMatch({error, {invalid_option, bin, _}}, ?ST:bf16_to_fp32_binary(<<1:7>>)).

%% ---------------------------------------------------------------- transpose_fp32

transpose_small_test() ->
    M = f32([1, 2, 3, 4, 5, 6]),            % 2 x 3
    ?assertEqual({ok, f32([1, 4, 2, 5, 3, 6])}, ?ST:transpose_fp32(M, 2, 3)),
    ?assertEqual({ok, M}, ?ST:transpose_fp32(M, 1, 6)),
    %% ragged shapes (not multiples of the 32-wide tile) against the naive Erlang transpose
    [begin
         Bin = rand:bytes(R * C * 4),
         ?assertEqual({ok, naive_transpose(Bin, R, C)}, ?ST:transpose_fp32(Bin, R, C))
     end || {R, C} <- [{37, 53}, {1, 70}, {70, 1}, {64, 33}, {100, 257}]].

transpose_errors_test() ->
    M = f32([1, 2, 3, 4, 5, 6]),
    ?assertEqual({error, {shape_mismatch, <<"transpose_fp32 bytes">>, [48], [24]}}, ?ST:transpose_fp32(M, 4, 3)),
    ?assertMatch({error, {shape_mismatch, _, _, [23]}}, ?ST:transpose_fp32(binary:part(M, 0, 23), 2, 3)),
    ?assertMatch({error, {shape_mismatch, _, _, _}}, ?ST:transpose_fp32(M, 1 bsl 40, 1 bsl 40)),
    ?assertMatch({error, {invalid_option, rows, 0}}, ?ST:transpose_fp32(M, 0, 3)),
    ?assertMatch({error, {invalid_option, cols, -3}}, ?ST:transpose_fp32(M, 2, -3)),
    ?assertMatch({error, {invalid_option, rows, 2.0}}, ?ST:transpose_fp32(M, 2.0, 3)),
    ?assertMatch({error, {invalid_option, cols, _}}, ?ST:transpose_fp32(M, 2, 1 bsl 70)),
    ?assertMatch({error, {invalid_option, bin, nope}}, ?ST:transpose_fp32(nope, 2, 3)),
    %% the VM is alive and the NIF still works
    ?assertEqual({ok, f32([1, 4, 2, 5, 3, 6])}, ?ST:transpose_fp32(M, 2, 3)).

%% The TinyLlama LM head shape: 32000 x 2048 f32 (250 MiB). Spot checks against the
%% definition, then transposing twice is the identity. The time is printed, not asserted
%% (bench/src/transpose.rs is the benchmark).
transpose_lm_head_test_() ->
    {"transpose_fp32 of a 32000x2048 matrix", {timeout, 120, fun() ->
        {Rows, Cols} = {32000, 2048},
        Big = rand:bytes(Rows * Cols * 4),
        {T, {ok, Tr}} = timer:tc(fun() -> ?ST:transpose_fp32(Big, Rows, Cols) end),
        ?assertEqual(byte_size(Big), byte_size(Tr)),
        [?assertEqual(binary:part(Big, (R * Cols + C) * 4, 4), binary:part(Tr, (C * Rows + R) * 4, 4))
         || _ <- lists:seq(1, 2000), R <- [rand:uniform(Rows) - 1], C <- [rand:uniform(Cols) - 1]],
        {T2, {ok, Back}} = timer:tc(fun() -> ?ST:transpose_fp32(Tr, Cols, Rows) end),
        ?assert(Back =:= Big),
        io:format(user, "~ntranspose_fp32 32000x2048 f32 (NIF, fresh binary): ~b ms, back: ~b ms (~b schedulers)~n",
                  [T div 1000, T2 div 1000, erlang:system_info(dirty_cpu_schedulers)])
    end}}.

%% ---------------------------------------------------------------- tokenizer

tokenizer_matches_hf_test() ->
    [begin
         Exp = ?S:expected(Name),
         {ok, Tok} = ?TK:load(filename:join(?S:fixture(Name), "tokenizer.json")),
         Prompt = maps:get(<<"prompt">>, Exp),
         Ids = maps:get(<<"input_ids">>, Exp),
         ?assertEqual({ok, Ids}, ?TK:encode(Tok, Prompt)),
         ?assertEqual({ok, Ids}, ?TK:encode(Tok, unicode:characters_to_list(Prompt))),
         ?assertEqual({ok, maps:get(<<"greedy_text">>, Exp)}, ?TK:decode(Tok, maps:get(<<"greedy_tokens">>, Exp))),
         %% BOS is a special token: decoding the encoded prompt gives the prompt back
         ?assertEqual({ok, Prompt}, ?TK:decode(Tok, Ids))
     end || Name <- ?S:fixture_names()].

tokenizer_shared_by_processes_test() ->
    Exp = ?S:expected("tiny_tied_llama3"),
    {ok, Tok} = ?TK:load(list_to_binary(filename:join(?S:fixture("tiny_tied_llama3"), "tokenizer.json"))),
    Self = self(),
    Pids = [spawn_link(fun() -> Self ! {self(), ?TK:encode(Tok, maps:get(<<"prompt">>, Exp))} end)
            || _ <- lists:seq(1, 8)],
    Want = {ok, maps:get(<<"input_ids">>, Exp)},
    [receive {P, R} -> ?assertEqual(Want, R) after 10000 -> error(timeout) end || P <- Pids].

tokenizer_errors_test() ->
    {ok, T} = ?TK:load(filename:join(?S:fixture("tiny_gqa"), "tokenizer.json")),
    ?assertEqual({error, invalid_utf8}, ?TK:encode(T, <<255, 254>>)),
    ?assertEqual({error, invalid_utf8}, ?TK:encode(T, <<"ok", 16#C3>>)),
    ?assertMatch({error, {invalid_option, text, _}}, ?TK:encode(T, [16#110000])),
    ?assertMatch({error, {invalid_option, text, _}}, ?TK:encode(T, 42)),
    ?assertMatch({ok, [1 | _]}, ?TK:encode(T, "chardata ok")),
    ?assertMatch({error, {file_not_found, _}}, ?TK:load("/nonexistent/tokenizer.json")),
    ?assertMatch({error, {bad_format, _, _}}, ?TK:load(filename:join(?S:fixture("tiny_gqa"), "config.json"))),
    ?assertMatch({error, {invalid_option, path, _}}, ?TK:load(<<>>)),
    %% not a tokenizer: a plain reference, another resource type, a pid
    {ok, Table} = viva_tensor_lowlevel:embedding_table_new(f32([1, 2, 3, 4]), 2, 2, f32),
    [?assertMatch({error, {invalid_option, tokenizer, _}}, ?TK:encode(Bad, <<"x">>)) || Bad <- [make_ref(), Table, self()]],
    [?assertMatch({error, {invalid_option, tokenizer, _}}, ?TK:decode(Bad, [1])) || Bad <- [make_ref(), Table, self()]],
    %% and a tokenizer is not an embedding table
    ?assertMatch({error, {invalid_option, table, _}}, viva_tensor_lowlevel:embedding_row(T, 0)),
    ?assertMatch({error, {invalid_option, ids, _}}, ?TK:decode(T, [a])),
    ?assertMatch({error, {invalid_option, ids, _}}, ?TK:decode(T, [-1])),
    ?assertMatch({error, {invalid_option, ids, _}}, ?TK:decode(T, [1 bsl 32])),
    ?assertMatch({error, {invalid_option, ids, _}}, ?TK:decode(T, <<"ids">>)),
    %% ids past the vocabulary decode to nothing (as in HF); specials are skipped
    ?assertEqual({ok, <<>>}, ?TK:decode(T, [100000, 1])),
    %% after all that the tokenizer and the VM are fine
    ?assertMatch({ok, [1 | _]}, ?TK:encode(T, <<"still alive">>)).
