%% @doc Work follows its caller: `generate/3' and `chat/3' run in a dirty NIF, and when the
%% calling process dies (a supervisor shutdown, a killed `gen_server:call' client) the
%% generation stops within a decode step. Observed from outside through the dirty CPU
%% schedulers' wall time: busy while the caller lives (the positive control), idle soon
%% after it is killed, long before the generation could have finished on its own.
-module(viva_tensor_caller_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, viva_tensor_test_support).
%% A context long enough that the uncancelled generation takes minutes on the fixture
%% (attention cost grows with the position); the test's idle bound is far shorter.
-define(CONTEXT, 32768).
-define(MAX_NEW, 32000).
%% Generous: a loaded 2-core CI machine must still meet it.
-define(IDLE_BOUND_MS, 30000).

%% tiny_gqa with a long context and a trivial chat template.
long_model(Tmp) ->
    Dir = ?S:copy_fixture("tiny_gqa", filename:join(Tmp, "long")),
    ok = ?S:set_config(Dir, <<"max_position_embeddings">>, ?CONTEXT),
    ok = file:write_file(filename:join(Dir, "tokenizer_config.json"),
                         <<"{\"chat_template\": \"{% for m in messages %}{{ m.content }}{% endfor %}\"}">>),
    {ok, M} = viva_tensor_llm:load(Dir, #{weights => native}),
    M.

caller_death_stops_generate_test_() ->
    {timeout, 180, fun() ->
        with_long_model(fun(M) ->
            Run = fun() -> viva_tensor_llm:generate(M, <<"Once upon a time">>, long_opts()) end,
            check_stops_with_caller(Run, kill)
        end)
    end}.

caller_death_stops_chat_test_() ->
    {timeout, 180, fun() ->
        with_long_model(fun(M) ->
            Msgs = [#{role => user, content => <<"Once upon a time">>}],
            Run = fun() -> viva_tensor_llm:chat(M, Msgs, long_opts()) end,
            check_stops_with_caller(Run, shutdown)
        end)
    end}.

%% A caller that lives on gets its whole result (the check does not cancel live callers).
live_caller_gets_the_result_test_() ->
    {timeout, 120, fun() ->
        with_long_model(fun(M) ->
            {ok, #{tokens := Ids}} =
                viva_tensor_llm:generate(M, <<"Once upon a time">>, #{max_new_tokens => 300, stop_on_eos => false}),
            ?assertEqual(300, length(Ids))
        end)
    end}.

long_opts() -> #{max_new_tokens => ?MAX_NEW, stop_on_eos => false}.

with_long_model(Fun) ->
    Tmp = ?S:tmp_dir(),
    Was = erlang:system_flag(scheduler_wall_time, true),
    try
        Fun(long_model(Tmp))
    after
        erlang:system_flag(scheduler_wall_time, Was),
        ?S:rm_rf(Tmp)
    end.

check_stops_with_caller(Run, How) ->
    Parent = self(),
    %% nothing else runs there now (a previous test's tail has ended)
    ?assertEqual(ok, wait_for(fun() -> dirty_cpu_busy(200) < 0.2 end, ?IDLE_BOUND_MS)),
    Caller = spawn(fun() -> Parent ! {started, self()}, Result = Run(), Parent ! {finished, Result} end),
    receive {started, Caller} -> ok end,
    %% positive control: a dirty CPU scheduler is busy with the generation
    ?assertEqual(ok, wait_for(fun() -> dirty_cpu_busy(250) > 0.5 end, ?IDLE_BOUND_MS)),
    Ref = monitor(process, Caller),
    exit(Caller, How),
    receive {'DOWN', Ref, process, Caller, _} -> ok end,
    ?assertEqual(ok, wait_for(fun() -> dirty_cpu_busy(250) < 0.2 end, ?IDLE_BOUND_MS)),
    receive {finished, R} -> error({caller_finished, R}) after 0 -> ok end.

%% Polls Pred until it holds or Ms have passed.
wait_for(Pred, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    wait_until(Pred, Deadline).

wait_until(Pred, Deadline) ->
    case Pred() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> timeout;
                false -> wait_until(Pred, Deadline)
            end
    end.

%% Over a window of Ms: the summed active time of every dirty CPU scheduler, as a fraction
%% of the window (1.0 = one scheduler busy the whole time).
dirty_cpu_busy(Ms) ->
    T0 = dirty_cpu_times(),
    timer:sleep(Ms),
    T1 = dirty_cpu_times(),
    Active = lists:sum([A1 - A0 || {{A0, _}, {A1, _}} <- lists:zip(T0, T1)]),
    Total = lists:max([W1 - W0 || {{_, W0}, {_, W1}} <- lists:zip(T0, T1)]),
    Active / max(Total, 1).

%% [{Active, Total}] of the dirty CPU schedulers, ids schedulers+1 .. schedulers+dirty_cpu.
dirty_cpu_times() ->
    First = erlang:system_info(schedulers) + 1,
    Last = First + erlang:system_info(dirty_cpu_schedulers) - 1,
    All = erlang:statistics(scheduler_wall_time_all),
    [{A, T} || Id <- lists:seq(First, Last), {I, A, T} <- All, I =:= Id].
