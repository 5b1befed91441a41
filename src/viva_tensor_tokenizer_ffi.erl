%% @doc A Hugging Face tokenizer.json on its own (the seed-compatible helper module): the same
%% tokenizer `viva_tensor_llm' uses, as a resource that any number of processes may share.
%% Every function returns `{ok, _}' or `{error, Reason}' (Reasons as in `viva_tensor_llm').
-module(viva_tensor_tokenizer_ffi).
-export([load/1, encode/2, decode/2]).

-opaque tokenizer() :: reference().
-export_type([tokenizer/0]).

%% @doc Loads a tokenizer.json (a string, or a binary of raw path bytes). A missing file is
%% `{error, {file_not_found, Path}}', a file that is not a tokenizer
%% `{error, {bad_format, Path, Detail}}'.
-spec load(file:filename_all()) -> {ok, tokenizer()} | {error, viva_tensor_llm:reason()}.
load(Path) ->
    case viva_tensor_safetensors_ffi:path(Path) of
        {ok, P} -> viva_tensor_nif:tokenizer_load(P);
        error -> {error, {invalid_option, path, Path}}
    end.

%% @doc Token ids of `Text' with the special tokens added as Hugging Face's `encode' adds them
%% (the tokenizer.json post-processor: BOS for Llama). A binary that is not UTF-8 is
%% `{error, invalid_utf8}'; a handle that is not a tokenizer
%% `{error, {invalid_option, tokenizer, Term}}'.
-spec encode(tokenizer(), unicode:chardata()) -> {ok, [non_neg_integer()]} | {error, viva_tensor_llm:reason()}.
encode(Tok, Text) when is_binary(Text) -> viva_tensor_nif:tokenizer_encode(Tok, Text);
encode(Tok, Text) ->
    case viva_tensor_safetensors_ffi:text(Text) of
        {ok, B} -> viva_tensor_nif:tokenizer_encode(Tok, B);
        error -> {error, {invalid_option, text, Text}}
    end.

%% @doc The text of `Ids' (a UTF-8 binary), special tokens skipped as Hugging Face's
%% `decode(ids, skip_special_tokens=True)' does; ids past the vocabulary decode to nothing.
%% Anything but a list of non-negative 32-bit integers is `{error, {invalid_option, ids, Ids}}'.
-spec decode(tokenizer(), [non_neg_integer()]) -> {ok, binary()} | {error, viva_tensor_llm:reason()}.
decode(Tok, Ids) -> viva_tensor_nif:tokenizer_decode(Tok, Ids).
