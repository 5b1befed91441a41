%% @doc Shared helpers for the EUnit and ExUnit suites: where the fixtures are, their
%% expected.json, scratch folders, and broken copies of a fixture checkpoint.
-module(viva_tensor_test_support).

-export([fixtures_dir/0, fixture/1, fixture_names/0, expected/1, greedy_opts/0,
         tmp_dir/0, rm_rf/1, copy_fixture/2, break/2, long_prompt/1, set_config/3]).

%% @doc `$VIVA_FIXTURES', default `test/fixtures' (relative to the repo root), absolute.
-spec fixtures_dir() -> file:filename().
fixtures_dir() ->
    case os:getenv("VIVA_FIXTURES") of
        false -> filename:absname("test/fixtures");
        "" -> filename:absname("test/fixtures");
        Dir -> filename:absname(Dir)
    end.

-spec fixture(string()) -> file:filename().
fixture(Name) -> filename:join(fixtures_dir(), Name).

%% @doc The three reference checkpoints made by test/fixtures/make_fixtures.py.
-spec fixture_names() -> [string()].
fixture_names() -> ["tiny_gqa", "tiny_tied_llama3", "tiny_mha_sharded"].

%% @doc A fixture's expected.json (binary keys).
-spec expected(string()) -> map().
expected(Name) ->
    viva_tensor_test_json:read_file(filename:join(fixture(Name), "expected.json")).

%% @doc The options the greedy references were made with.
-spec greedy_opts() -> map().
greedy_opts() -> #{max_new_tokens => 20, stop_on_eos => false}.

%% @doc A fresh, empty scratch folder.
-spec tmp_dir() -> file:filename().
tmp_dir() ->
    Base = case os:getenv("TMPDIR") of
               false -> "/tmp";
               "" -> "/tmp";
               T -> T
           end,
    Dir = filename:join(Base, "viva_tensor_test_" ++ os:getpid() ++ "_"
                              ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Dir.

-spec rm_rf(file:filename()) -> ok.
rm_rf(Dir) ->
    _ = file:del_dir_r(Dir),
    ok.

%% @doc Copies the (flat) fixture folder `Name' to `Dest'; returns `Dest'.
-spec copy_fixture(string(), file:filename()) -> file:filename().
copy_fixture(Name, Dest) ->
    ok = filelib:ensure_dir(filename:join(Dest, "x")),
    Src = fixture(Name),
    {ok, Files} = file:list_dir(Src),
    [{ok, _} = file:copy(filename:join(Src, F), filename:join(Dest, F))
     || F <- Files, filelib:is_regular(filename:join(Src, F))],
    Dest.

%% @doc A broken copy of a fixture under `Tmp'; returns the path to load.
%% Kinds: `truncated' (model.safetensors cut in half), `corrupt_header' (its JSON header
%% overwritten), `missing_tensor' (model.norm.weight renamed in the header),
%% `unknown_dtype' (one tensor's dtype renamed to one the format does not define),
%% `wrong_shape' (config.json's intermediate_size off by one), `bad_config_json',
%% `bad_tokenizer_json', `bad_index_json' (the sharded fixture's index), `no_tokenizer'.
-spec break(atom(), file:filename()) -> file:filename().
break(Kind, Tmp) ->
    Fixture = case Kind of
                  bad_index_json -> "tiny_mha_sharded";
                  _ -> "tiny_gqa"
              end,
    Dir = copy_fixture(Fixture, filename:join(Tmp, atom_to_list(Kind))),
    damage(Kind, Dir),
    Dir.

damage(truncated, Dir) ->
    edit(filename:join(Dir, "model.safetensors"),
         fun(B) -> binary:part(B, 0, byte_size(B) div 2) end);
damage(corrupt_header, Dir) ->
    edit(filename:join(Dir, "model.safetensors"),
         fun(<<Len:64/little, _:16/binary, Rest/binary>>) ->
                 <<Len:64/little, (binary:copy(<<"#">>, 16))/binary, Rest/binary>>
         end);
damage(missing_tensor, Dir) ->
    edit(filename:join(Dir, "model.safetensors"),
         fun(B) -> same_size_replace(B, <<"\"model.norm.weight\"">>, <<"\"model.norx.weight\"">>) end);
damage(unknown_dtype, Dir) ->
    edit(filename:join(Dir, "model.safetensors"), fun unknown_dtype/1);
damage(wrong_shape, Dir) ->
    edit(filename:join(Dir, "config.json"),
         fun(B) ->
                 #{<<"intermediate_size">> := N} = viva_tensor_test_json:decode(B),
                 re:replace(B, "\"intermediate_size\"\\s*:\\s*[0-9]+",
                            ["\"intermediate_size\": ", integer_to_list(N + 1)],
                            [{return, binary}])
         end);
damage(bad_config_json, Dir) ->
    ok = file:write_file(filename:join(Dir, "config.json"), <<"{\"hidden_size\": 64,">>);
damage(bad_tokenizer_json, Dir) ->
    ok = file:write_file(filename:join(Dir, "tokenizer.json"), <<"{\"model\": [">>);
damage(bad_index_json, Dir) ->
    ok = file:write_file(filename:join(Dir, "model.safetensors.index.json"), <<"{\"weight_map\": ">>);
damage(no_tokenizer, Dir) ->
    ok = file:delete(filename:join(Dir, "tokenizer.json")).

%% @doc Sets config.json's top-level integer `Key' (a binary) to `Value' in the checkpoint
%% folder `Dir' (a key the file lacks is added).
-spec set_config(file:filename(), binary(), integer()) -> ok.
set_config(Dir, Key, Value) when is_binary(Key), is_integer(Value) ->
    edit(filename:join(Dir, "config.json"),
         fun(B) ->
                 Line = ["\"", Key, "\": ", integer_to_list(Value)],
                 case re:run(B, ["\"", Key, "\"\\s*:\\s*-?[0-9]+"]) of
                     {match, _} -> re:replace(B, ["\"", Key, "\"\\s*:\\s*-?[0-9]+"], Line, [{return, binary}]);
                     nomatch -> re:replace(B, "^\\s*\\{", ["{", Line, ","], [{return, binary}])
                 end
         end).

edit(File, Fun) ->
    {ok, B} = file:read_file(File),
    ok = file:write_file(File, Fun(B)).

%% Byte-for-byte same length, so the header length and data offsets stay valid.
same_size_replace(B, From, To) when byte_size(From) =:= byte_size(To) ->
    {Pos, _} = binary:match(B, From),
    <<Pre:Pos/binary, _:(byte_size(From))/binary, Post/binary>> = B,
    <<Pre/binary, To/binary, Post/binary>>.

%% The first `"dtype":"X"' in the header gets a same-length name the format lacks.
unknown_dtype(B) ->
    {match, [{Pos, Len}]} = re:run(B, "\"dtype\"\\s*:\\s*\"(BF16|F16|F32)\"", [{capture, [1]}]),
    Bogus = binary:part(<<"XXXX">>, 0, Len),
    <<Pre:Pos/binary, _:Len/binary, Post/binary>> = B,
    <<Pre/binary, Bogus/binary, Post/binary>>.

%% @doc A prompt of at least `Words' words: more tokens than `Words'.
-spec long_prompt(pos_integer()) -> binary().
long_prompt(Words) ->
    iolist_to_binary(lists:join(<<" ">>, lists:duplicate(Words, <<"hello world">>))).
