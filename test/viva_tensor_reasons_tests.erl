%% @doc Every Reason the NIF can return — one per `viva_core::Error' variant, listed by
%% `viva_tensor_nif:reason_tags/0' from the same table as the encoder (reason.rs; a new
%% variant does not compile without a line there) — is mirrored, with the same arity, by:
%% the Erlang `reason()' type, the Gleam `Error' type and its FFI conversion, `Viva.Error.describe/1'
%% and the Reasons list of `Viva''s docs, and README.md's Reason table. A variant added to the
%% engine makes this module fail until every mirror has it.
-module(viva_tensor_reasons_tests).
-include_lib("eunit/include/eunit.hrl").

nif_tags() -> lists:sort(viva_tensor_nif:reason_tags()).

root() ->
    Src = proplists:get_value(source, ?MODULE:module_info(compile)),
    filename:dirname(filename:dirname(Src)).

read(Rel) ->
    {ok, B} = file:read_file(filename:join(root(), Rel)),
    B.

nif_tags_are_distinct_test() ->
    Tags = [T || {T, _} <- nif_tags()],
    ?assertEqual(lists:usort(Tags), Tags),
    ?assert(length(Tags) >= 18).

erlang_type_test() ->
    {ok, Forms} = epp:parse_file(filename:join(root(), "src/viva_tensor_llm.erl"), []),
    [{type, _, union, Alts}] = [T || {attribute, _, type, {reason, T, []}} <- Forms],
    ?assertEqual(nif_tags(), lists:sort([type_tag(A) || A <- Alts])).

type_tag({atom, _, Tag}) -> {Tag, 0};
type_tag({type, _, tuple, [{atom, _, Tag} | Fields]}) -> {Tag, length(Fields)}.

gleam_type_test() ->
    Src = read("src/viva_tensor.gleam"),
    {match, [Body]} = re:run(Src, "pub type Error \\{(.*?)\\n\\}", [dotall, {capture, all_but_first, binary}]),
    {match, Ctors} = re:run(Body, "^\\s*([A-Z]\\w*)(\\((.*)\\))?\\s*$", [multiline, global, {capture, all_but_first, binary}]),
    ?assertEqual(nif_tags(), lists:sort([gleam_tag(C) || C <- Ctors])).

gleam_tag([Name]) -> {snake(Name), 0};
gleam_tag([Name, _, Fields]) -> {snake(Name), length(binary:matches(Fields, <<":">>))}.

snake(Camel) ->
    Words = re:replace(Camel, "([a-z0-9])([A-Z])", "\\1_\\2", [global, {return, binary}]),
    binary_to_atom(string:lowercase(Words)).

%% The Gleam FFI turns each Reason into its Gleam constructor, never into Internal.
gleam_ffi_test() ->
    [begin
         Reason = case Arity of
                      0 -> Tag;
                      _ -> list_to_tuple([Tag | lists:duplicate(Arity, <<"x">>)])
                  end,
         {error, Out} = viva_tensor_ffi:reason({error, Reason}),
         ?assertEqual({Tag, Arity}, {tag_of(Out), tuple_arity(Out)})
     end || {Tag, Arity} <- nif_tags()].

tag_of(T) when is_atom(T) -> T;
tag_of(T) -> element(1, T).

tuple_arity(T) when is_atom(T) -> 0;
tuple_arity(T) -> tuple_size(T) - 1.

elixir_describe_test() ->
    Src = read("lib/viva.ex"),
    Atoms = [{binary_to_atom(T), 0} || [T] <- matches(Src, "def describe\\(:(\\w+)\\)")],
    Tuples = [{binary_to_atom(T), arity(F)} || [T, F] <- matches(Src, "def describe\\(\\{:(\\w+)((?:, \\w+)*)\\}\\)")],
    ?assertEqual(nif_tags(), lists:sort(Atoms ++ Tuples)).

elixir_doc_test() ->
    Src = read("lib/viva.ex"),
    {match, [Doc]} = re:run(Src, "## Reasons\\n(.*?)\"\"\"", [dotall, {capture, all_but_first, binary}]),
    ?assertEqual(nif_tags(), lists:sort(elixir_terms(Doc))).

elixir_terms(Doc) ->
    [{binary_to_atom(T), 0} || [T] <- matches(Doc, "`:(\\w+)`")]
    ++ [{binary_to_atom(T), arity(F)} || [T, F] <- matches(Doc, "`\\{:(\\w+)((?:, \\w+)*)\\}`")].

readme_table_test() ->
    Src = read("README.md"),
    {match, [Table]} = re:run(Src, "\\| Reason \\| when \\|\\n(.*?)\\n\\n", [dotall, {capture, all_but_first, binary}]),
    Rows = matches(Table, "^\\| `\\{?(\\w+)((?:, \\w+)*)\\}?` \\|"),
    ?assertEqual(nif_tags(), lists:sort([{binary_to_atom(T), arity(F)} || [T, F] <- Rows])),
    ?assertEqual(length(binary:split(Table, <<"\n">>, [global])) - 1, length(Rows)).

arity(<<>>) -> 0;
arity(Fields) -> length(binary:matches(Fields, <<",">>)).

matches(Bin, Re) ->
    case re:run(Bin, Re, [multiline, global, {capture, all_but_first, binary}]) of
        {match, Ms} -> [[F || F <- M] || M <- Ms];
        nomatch -> []
    end.
