%% @doc A small strict JSON reader for the tests (OTP 25 has no json module).
%% Objects become maps with binary keys, arrays lists, strings UTF-8 binaries, numbers
%% integers or floats, and true/false/null the atoms true/false/null.
-module(viva_tensor_test_json).

-export([decode/1, read_file/1]).

%% @doc Reads and decodes a JSON file; raises on a read or syntax error.
-spec read_file(file:filename_all()) -> term().
read_file(Path) ->
    {ok, Bin} = file:read_file(Path),
    decode(Bin).

%% @doc Decodes one JSON value; raises `{json, Why, Offset}' on bad input.
-spec decode(binary()) -> term().
decode(Bin) when is_binary(Bin) ->
    {Value, Rest} = value(ws(Bin), Bin),
    case ws(Rest) of
        <<>> -> Value;
        Trail -> fail(trailing_data, Trail, Bin)
    end.

value(<<${, R/binary>>, All) -> object(ws(R), #{}, All);
value(<<$[, R/binary>>, All) -> array(ws(R), [], All);
value(<<$", R/binary>>, All) -> string(R, [], All);
value(<<"true", R/binary>>, _) -> {true, R};
value(<<"false", R/binary>>, _) -> {false, R};
value(<<"null", R/binary>>, _) -> {null, R};
value(<<C, _/binary>> = R, All) when C =:= $-; C >= $0, C =< $9 -> number(R, All);
value(R, All) -> fail(unexpected, R, All).

object(<<$}, R/binary>>, Acc, _) -> {Acc, R};
object(<<$", R/binary>>, Acc, All) ->
    {Key, R1} = string(R, [], All),
    case ws(R1) of
        <<$:, R2/binary>> ->
            {Val, R3} = value(ws(R2), All),
            case ws(R3) of
                <<$,, R4/binary>> -> object_key(ws(R4), Acc#{Key => Val}, All);
                <<$}, R4/binary>> -> {Acc#{Key => Val}, R4};
                Bad -> fail(expected_comma_or_brace, Bad, All)
            end;
        Bad ->
            fail(expected_colon, Bad, All)
    end;
object(R, _, All) -> fail(expected_key, R, All).

object_key(<<$", _/binary>> = R, Acc, All) -> object(R, Acc, All);
object_key(R, _, All) -> fail(expected_key, R, All).

array(<<$], R/binary>>, [], _) -> {[], R};
array(R, Acc, All) ->
    {Val, R1} = value(R, All),
    case ws(R1) of
        <<$,, R2/binary>> -> array(ws(R2), [Val | Acc], All);
        <<$], R2/binary>> -> {lists:reverse([Val | Acc]), R2};
        Bad -> fail(expected_comma_or_bracket, Bad, All)
    end.

%% Acc is a reversed list of binaries and code points.
string(<<$", R/binary>>, Acc, _) ->
    {unicode:characters_to_binary(lists:reverse(Acc)), R};
string(<<$\\, E, R/binary>>, Acc, All) ->
    case E of
        $" -> string(R, [$" | Acc], All);
        $\\ -> string(R, [$\\ | Acc], All);
        $/ -> string(R, [$/ | Acc], All);
        $b -> string(R, [$\b | Acc], All);
        $f -> string(R, [$\f | Acc], All);
        $n -> string(R, [$\n | Acc], All);
        $r -> string(R, [$\r | Acc], All);
        $t -> string(R, [$\t | Acc], All);
        $u -> unicode_escape(R, Acc, All);
        _ -> fail(bad_escape, R, All)
    end;
string(<<C, _/binary>> = R, _, All) when C < 16#20 -> fail(control_char_in_string, R, All);
string(<<C/utf8, R/binary>>, Acc, All) -> string(R, [C | Acc], All);
string(R, _, All) -> fail(bad_string, R, All).

%% \uXXXX, with UTF-16 surrogate pairs joined into one code point.
unicode_escape(<<H:4/binary, R/binary>>, Acc, All) ->
    case hex(H, R, All) of
        Hi when Hi >= 16#D800, Hi =< 16#DBFF ->
            case R of
                <<"\\u", L:4/binary, R2/binary>> ->
                    Lo = hex(L, R2, All),
                    case Lo >= 16#DC00 andalso Lo =< 16#DFFF of
                        true -> string(R2, [16#10000 + ((Hi - 16#D800) bsl 10) + (Lo - 16#DC00) | Acc], All);
                        false -> fail(lone_surrogate, R, All)
                    end;
                _ ->
                    fail(lone_surrogate, R, All)
            end;
        Lo when Lo >= 16#DC00, Lo =< 16#DFFF ->
            fail(lone_surrogate, R, All);
        C ->
            string(R, [C | Acc], All)
    end;
unicode_escape(R, _, All) -> fail(bad_escape, R, All).

hex(H, R, All) ->
    try binary_to_integer(H, 16)
    catch error:badarg -> fail(bad_hex, R, All)
    end.

number(Bin, All) ->
    {Int, R1} = take(Bin, fun(C) -> C =:= $- orelse digit(C) end),
    {Frac, R2} = case R1 of
                     <<$., F/binary>> -> take_digits(F, ".");
                     _ -> {"", R1}
                 end,
    {Exp, R3} = case R2 of
                    <<E, X/binary>> when E =:= $e; E =:= $E -> exponent(X);
                    _ -> {"", R2}
                end,
    Text = Int ++ Frac ++ Exp,
    try
        case {Frac, Exp} of
            {"", ""} -> {list_to_integer(Int), R3};
            {"", _} -> {list_to_float(Int ++ ".0" ++ Exp), R3};
            _ -> {list_to_float(Text), R3}
        end
    catch
        error:badarg -> fail(bad_number, Bin, All)
    end.

exponent(<<S, X/binary>>) when S =:= $+; S =:= $- -> take_digits(X, [$e, S]);
exponent(X) -> take_digits(X, "e").

take_digits(Bin, Prefix) ->
    {Ds, R} = take(Bin, fun digit/1),
    {Prefix ++ Ds, R}.

take(Bin, Pred) -> take(Bin, Pred, []).
take(<<C, R/binary>>, Pred, Acc) ->
    case Pred(C) of
        true -> take(R, Pred, [C | Acc]);
        false -> {lists:reverse(Acc), <<C, R/binary>>}
    end;
take(<<>>, _, Acc) -> {lists:reverse(Acc), <<>>}.

digit(C) -> C >= $0 andalso C =< $9.

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> ws(R);
ws(R) -> R.

fail(Why, Rest, All) ->
    error({json, Why, byte_size(All) - byte_size(Rest)}).
