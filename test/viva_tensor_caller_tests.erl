%% @doc Work follows its caller: `generate/3' and `chat/3' run in the model's scheduler (its
%% engine thread), and when the calling process dies (a supervisor shutdown, a killed
%% `gen_server:call' client) the request's monitor fires and the sequence leaves the batch
%% within a decode step. Observed from outside twice: the model's `scheduler' info (one
%% running sequence while the caller lives, none after) and the OS process's CPU time
%% (/proc/self/stat: busy while the caller lives — the positive control — idle soon after it
%% is killed, long before the generation could have finished on its own).
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
            check_stops_with_caller(M, Run, kill)
        end)
    end}.

caller_death_stops_chat_test_() ->
    {timeout, 180, fun() ->
        with_long_model(fun(M) ->
            Msgs = [#{role => user, content => <<"Once upon a time">>}],
            Run = fun() -> viva_tensor_llm:chat(M, Msgs, long_opts()) end,
            check_stops_with_caller(M, Run, shutdown)
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
    try
        Fun(long_model(Tmp))
    after
        ?S:rm_rf(Tmp)
    end.

check_stops_with_caller(M, Run, How) ->
    Parent = self(),
    %% nothing else runs now (a previous test's tail has ended)
    ?assertEqual(ok, wait_for(fun() -> cpu_busy(200) < 0.2 end, ?IDLE_BOUND_MS)),
    Caller = spawn(fun() -> Parent ! {started, self()}, Result = Run(), Parent ! {finished, Result} end),
    receive {started, Caller} -> ok end,
    %% positive control: the engine runs the generation
    ?assertEqual(ok, wait_for(fun() -> running(M) =:= 1 andalso cpu_busy(250) > 0.5 end, ?IDLE_BOUND_MS)),
    Ref = monitor(process, Caller),
    exit(Caller, How),
    receive {'DOWN', Ref, process, Caller, _} -> ok end,
    ?assertEqual(ok, wait_for(fun() -> running(M) =:= 0 andalso cpu_busy(250) < 0.2 end, ?IDLE_BOUND_MS)),
    ?assertEqual(0, viva_tensor_nif:request_active_count()),
    receive {finished, R} -> error({caller_finished, R}) after 0 -> ok end.

running(M) ->
    {ok, #{scheduler := #{running := N}}} = viva_tensor_llm:info(M),
    N.

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

%% Over a window of Ms: the CPU time of this OS process (every thread: schedulers, the
%% engine thread, its pool), as a fraction of the window (1.0 = one core busy throughout).
cpu_busy(Ms) ->
    C0 = cpu_ticks(),
    T0 = erlang:monotonic_time(millisecond),
    timer:sleep(Ms),
    C1 = cpu_ticks(),
    T1 = erlang:monotonic_time(millisecond),
    %% clock ticks of 10 ms (USER_HZ 100 on Linux)
    (C1 - C0) * 10 / max(T1 - T0, 1).

%% utime + stime of this process, fields 14 and 15 of /proc/self/stat (after the command name).
cpu_ticks() ->
    {ok, Bin} = file:read_file("/proc/self/stat"),
    [_, After] = binary:split(Bin, <<") ">>),
    Fields = binary:split(After, <<" ">>, [global]),
    binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)).
