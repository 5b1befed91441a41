%% Generation through the BEAM API (viva_tensor_llm) vs the engine's own per-token time:
%% the per-token BEAM/NIF overhead of generate/3 and of stream/4 (one message per token).
%%   erl -noshell -pa ebin -pa bench/beam -eval 'viva_bench_beam:main(["MODEL_DIR", "fp8", "cuda"])'
%% Prints one markdown row per mode.
-module(viva_bench_beam).
-export([main/1]).

-define(NEW, 128).
-define(RUNS, 3).

main([Dir, Weights, Device]) ->
    Opts = #{weights => list_to_atom(Weights), device => list_to_atom(Device)},
    {T0, {ok, M}} = timer:tc(fun() -> viva_tensor_llm:load(Dir, Opts) end),
    {ok, #{backend := Backend}} = viva_tensor_llm:info(M),
    Prompt = <<"The history of the city begins with a small settlement on the river, where">>,
    G = #{max_new_tokens => ?NEW, stop_on_eos => false},
    {ok, _} = viva_tensor_llm:generate(M, Prompt, G),
    %% generate/3: wall time per token seen by the caller vs the engine's ms_per_token
    Gen = [begin
               {T, {ok, R}} = timer:tc(fun() -> viva_tensor_llm:generate(M, Prompt, G) end),
               {T / 1000, R}
           end || _ <- lists:seq(1, ?RUNS)],
    One = [element(1, timer:tc(fun() -> viva_tensor_llm:generate(M, Prompt, G#{max_new_tokens => 1}) end)) / 1000
           || _ <- lists:seq(1, ?RUNS)],
    T1 = median(One),
    Wall = median([(T - T1) / (?NEW - 1) || {T, _} <- Gen]),
    Engine = median([maps:get(ms_per_token, R) || {_, R} <- Gen]),
    row(Dir, Weights, Backend, "generate/3", Wall, Engine, T0 / 1.0e6),
    %% stream/4: the caller receives every token as a message
    Stream = [stream_ms(M, Prompt, G) || _ <- lists:seq(1, ?RUNS)],
    SWall = median([(T - T1) / (?NEW - 1) || {T, _} <- Stream]),
    SEngine = median([maps:get(ms_per_token, R) || {_, R} <- Stream]),
    row(Dir, Weights, Backend, "stream/4", SWall, SEngine, T0 / 1.0e6),
    halt(0).

stream_ms(M, Prompt, G) ->
    T0 = erlang:monotonic_time(microsecond),
    {ok, Ref} = viva_tensor_llm:stream(M, Prompt, G, self()),
    R = drain(Ref),
    {(erlang:monotonic_time(microsecond) - T0) / 1000, R}.

drain(Ref) ->
    receive
        {viva_token, Ref, _} -> drain(Ref);
        {viva_done, Ref, R} -> R;
        {viva_error, Ref, E} -> error(E)
    after 60000 -> error(timeout)
    end.

row(Dir, Weights, Backend, Mode, Wall, Engine, LoadS) ->
    io:format("| ~s | ~s | ~s | ~s | ~.3f | ~.3f | ~.1f us | ~.2f |~n",
              [filename:basename(Dir), Weights, Backend, Mode, Wall, Engine, (Wall - Engine) * 1000, LoadS]).

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).
