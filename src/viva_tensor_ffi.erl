%% @doc Term conversion between the Gleam API (viva_tensor.gleam) and viva_tensor_llm.
%% Gleam records are tagged tuples whose tag is the snake_case constructor name, and
%% field-less constructors are bare atoms; the Reason terms of viva_tensor_llm already have
%% that shape except where a value must become a String.
-module(viva_tensor_ffi).
-export([load_model/1, load_model_with/2, generate/3, chat/3, stream/3, stream_next/2,
         stream_cancel/1, reason/1, backend_info/0]).

%% {backend_info, CudaAvailable, CudaReason, Auto, GpuName}: Auto cpu | cuda, GpuName Result(String, Nil)
backend_info() ->
    {ok, #{cuda_available := C, cuda_reason := R, auto := A, gpu_name := G}} = viva_tensor_llm:backend_info(),
    {backend_info, C, R, A, case G of undefined -> {error, nil}; _ -> {ok, G} end}.

load_model(Path) ->
    reason(viva_tensor_llm:load(Path)).

%% {load_opts, NumLayers, TokenizerPath, Device, Weights, BlockSize, Activations}
load_model_with(Path, {load_opts, NumLayers, TokenizerPath, Device, Weights, BlockSize, Activations}) ->
    Opts = #{num_layers => case NumLayers of all_layers -> all; {layers, N} -> N end,
             tokenizer_path => case TokenizerPath of auto_tokenizer -> auto; {tokenizer_file, P} -> P end,
             device => Device,
             weights => Weights,
             block_size => case BlockSize of per_channel -> per_channel; {block, B} -> B end,
             activations => case Activations of f32_activations -> f32; bf16_activations -> bf16 end},
    reason(viva_tensor_llm:load(Path, Opts)).

%% {generate_opts, MaxNewTokens, Temperature, TopK, TopP, Seed, StopOnEos}
generate(Model, Prompt, Opts) ->
    generate_with(fun(O) -> viva_tensor_llm:generate(Model, Prompt, O) end, Opts).

%% Runs Call with the Gleam GenerateOpts as an option map; the result as a GenerateResult.
generate_with(Call, Opts) ->
    case Call(option_map(Opts)) of
        {ok, #{text := Text, tokens := Tokens, ms_per_token := Ms, total_tokens := Total}} ->
            {ok, {generate_result, Text, Tokens, float(Ms), Total}};
        Other ->
            reason(Other)
    end.

option_map({generate_opts, MaxNew, Temperature, TopK, TopP, Seed, StopOnEos}) ->
    #{max_new_tokens => MaxNew, temperature => Temperature,
      top_k => case TopK of top_k_infinity -> infinity; {top_k, K} -> K end,
      top_p => TopP, seed => Seed, stop_on_eos => StopOnEos}.

%% Messages: [{message, Role, Content}]
chat(Model, Messages, Opts) ->
    Maps = [#{role => R, content => C} || {message, R, C} <- Messages],
    generate_with(fun(O) -> viva_tensor_llm:chat(Model, Maps, O) end, Opts).

stream(Model, Prompt, Opts) ->
    reason(viva_tensor_llm:stream(Model, Prompt, option_map(Opts), self())).

%% -> {chunk, Text} | {done, GenerateResult} | {failed, Error} | timed_out
stream_next(Ref, Timeout) ->
    receive
        {viva_token, Ref, Chunk} -> {chunk, Chunk};
        {viva_done, Ref, #{text := Text, tokens := Tokens, ms_per_token := Ms, total_tokens := Total}} ->
            {done, {generate_result, Text, Tokens, float(Ms), Total}};
        {viva_error, Ref, Reason} ->
            {error, E} = reason({error, Reason}),
            {failed, E}
    after Timeout -> timed_out
    end.

stream_cancel(Ref) ->
    _ = viva_tensor_llm:cancel(Ref),
    nil.

reason({ok, _} = Ok) -> Ok;
reason({error, {invalid_option, Key, Value}}) ->
    {error, {invalid_option, text(Key), text(Value)}};
reason({error, R}) when R =:= invalid_utf8; R =:= empty_prompt; R =:= cuda_unavailable;
                        R =:= out_of_memory; R =:= cancelled;
                        R =:= overloaded ->
    {error, R};
reason({error, {Tag, _} = R}) when Tag =:= file_not_found; Tag =:= missing_tensor;
                                   Tag =:= no_tokenizer; Tag =:= no_chat_template; Tag =:= internal;
                                   Tag =:= cuda_error ->
    {error, setelement(2, R, text(element(2, R)))};
reason({error, {Tag, A, B}}) when Tag =:= bad_format; Tag =:= unsupported_dtype; Tag =:= io_error ->
    {error, {Tag, text(A), text(B)}};
reason({error, {shape_mismatch, Name, Expected, Got}}) ->
    {error, {shape_mismatch, text(Name), Expected, Got}};
reason({error, {Tag, _, _} = R}) when Tag =:= context_overflow; Tag =:= token_out_of_range ->
    {error, R};
reason({error, Other}) ->
    {error, {internal, text(Other)}}.

%% Any term as a Gleam String (UTF-8 binary).
text(B) when is_binary(B) -> B;
text(A) when is_atom(A) -> atom_to_binary(A, utf8);
text(L) when is_list(L) ->
    case unicode:characters_to_binary(L) of
        B when is_binary(B) -> B;
        _ -> iolist_to_binary(io_lib:format("~p", [L]))
    end;
text(T) -> iolist_to_binary(io_lib:format("~p", [T])).
