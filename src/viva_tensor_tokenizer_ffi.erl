%% @doc A Hugging Face tokenizer.json on its own (the seed-compatible helper module): the same
%% tokenizer `viva_tensor_llm' uses, as a resource shareable between processes.
-module(viva_tensor_tokenizer_ffi).
-export([load/1, encode/2, decode/2]).

-type tokenizer() :: reference().
-export_type([tokenizer/0]).

%% @doc Loads a tokenizer.json.
-spec load(file:filename_all()) -> {ok, tokenizer()} | {error, viva_tensor_llm:reason()}.
load(Path) ->
    case viva_tensor_safetensors_ffi:text(Path) of
        {ok, P} when byte_size(P) > 0 -> viva_tensor_nif:tokenizer_load(P);
        _ -> {error, {invalid_option, path, Path}}
    end.

%% @doc Token ids of `Text', special tokens (BOS) added as Hugging Face does.
%% A binary that is not UTF-8 is `{error, invalid_utf8}'.
-spec encode(tokenizer(), unicode:chardata()) -> {ok, [non_neg_integer()]} | {error, viva_tensor_llm:reason()}.
encode(Tok, Text) when is_binary(Text) -> viva_tensor_nif:tokenizer_encode(Tok, Text);
encode(Tok, Text) ->
    case viva_tensor_safetensors_ffi:text(Text) of
        {ok, B} -> viva_tensor_nif:tokenizer_encode(Tok, B);
        error -> {error, {invalid_option, text, Text}}
    end.

%% @doc Text of `Ids', special tokens skipped.
-spec decode(tokenizer(), [non_neg_integer()]) -> {ok, binary()} | {error, viva_tensor_llm:reason()}.
decode(Tok, Ids) -> viva_tensor_nif:tokenizer_decode(Tok, Ids).
