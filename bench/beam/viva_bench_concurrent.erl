%% Many callers, one model, through the BEAM API: N processes each stream one generation
%% (64-token prompt, 128 new tokens, greedy, no EOS stop) at once; aggregate generated tokens/s,
%% time to first token and inter-token gaps (p50/p99, as the callers see them: message arrival
%% times of the stream's chunks), and the ratio to one caller's aggregate measured in the same run.
%%   erl -noshell -pa ebin -pa bench/beam -eval 'viva_bench_concurrent:main(["MODEL_DIR", "fp8", "cpu", "1,2,4,8"])'
%% Prints a markdown table.
-module(viva_bench_concurrent).
-export([main/1]).

-define(PROMPT_TOKENS, 64).
-define(NEW, 128).

main([Dir, Weights, Device, Ns]) ->
    Callers = [list_to_integer(N) || N <- string:tokens(Ns, ",")],
    MaxBatch = lists:max(Callers),
    Opts = #{weights => list_to_atom(Weights), device => list_to_atom(Device), max_batch => MaxBatch},
    {ok, M} = viva_tensor_llm:load(Dir, Opts),
    {ok, #{backend := Backend}} = viva_tensor_llm:info(M),
    G = #{max_new_tokens => ?NEW, stop_on_eos => false},
    _ = run(M, 1, G),  % warm-up
    io:format("~n| model | weights | backend | callers | agg tok/s | x 1 caller | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | max batch seen |~n"
              "|---|---|---|---|---|---|---|---|---|---|---|~n"),
    lists:foldl(fun(N, Base) ->
                        {Agg, Ttft, Itl, Seen} = run(M, N, G),
                        B = case Base of undefined -> Agg; _ -> Base end,
                        io:format("| ~s | ~s | ~p | ~b | ~.1f | ~.2f | ~.1f | ~.1f | ~.2f | ~.2f | ~b |~n",
                                  [filename:basename(Dir), Weights, Backend, N, Agg, Agg / B,
                                   pct(Ttft, 50), pct(Ttft, 99), pct(Itl, 50), pct(Itl, 99), Seen]),
                        B
                end, undefined, Callers),
    halt(0).

%% A prompt of ?PROMPT_TOKENS tokens per caller, different for each (no two alike).
prompt(I) ->
    Words = [<<"w", (integer_to_binary(I * 131 + J))/binary, " ">> || J <- lists:seq(1, ?PROMPT_TOKENS)],
    iolist_to_binary(Words).

run(M, N, G) ->
    Parent = self(),
    {ok, #{scheduler := #{steps := S0}}} = viva_tensor_llm:info(M),
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> Parent ! {self(), caller(M, prompt(I), G)} end) || I <- lists:seq(1, N)],
    Res = [receive {P, R} -> R end || P <- Pids],
    Wall = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    {ok, #{scheduler := #{max_batch_seen := Seen, steps := S1}}} = viva_tensor_llm:info(M),
    _ = S1 - S0,
    Tokens = lists:sum([length(Toks) || {Toks, _, _} <- Res]),
    {Tokens / Wall, [T || {_, T, _} <- Res], lists:append([I || {_, _, I} <- Res]), Seen}.

%% {Tokens, TimeToFirstChunkMs, [InterChunkMs]} of one streamed generation.
caller(M, Prompt, G) ->
    T0 = erlang:monotonic_time(microsecond),
    {ok, Ref} = viva_tensor_llm:stream(M, Prompt, G, self()),
    collect(Ref, T0, []).

collect(Ref, T0, Times) ->
    receive
        {viva_token, Ref, _} -> collect(Ref, T0, [erlang:monotonic_time(microsecond) | Times]);
        {viva_done, Ref, #{tokens := Toks}} ->
            Ts = lists:reverse(Times),
            Ttft = case Ts of [F | _] -> (F - T0) / 1000; [] -> 0.0 end,
            Gaps = case Ts of [_ | Rest] -> [(B - A) / 1000 || {A, B} <- lists:zip(lists:droplast(Ts), Rest)]; [] -> [] end,
            {Toks, Ttft, Gaps};
        {viva_error, Ref, R} -> error(R)
    end.

pct([], _) -> 0.0;
pct(L, P) ->
    S = lists:sort(L),
    lists:nth(max(1, min(length(S), round(P / 100 * length(S)))), S).
