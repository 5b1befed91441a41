#!/usr/bin/env bash
# Our CPU engine vs llama.cpp (llama-cpp-python) on the same machine, in one run (issue 5):
# decode, pp32, pp512 and 2k-context decode tok/s, with the ratio ours/llama.cpp.
#   bash scripts/bench_cpu_peer.sh
# Rows: TinyLlama-1.1B-shaped random weights at Q8_0 (llama.cpp) vs ours fp8 block 16 (the default,
# with f32 and with bf16 activations) and block 64 (8.5 bits/weight, Q8_0's: the equal-bits row)
# loaded from that GGUF; the same at BF16 vs ours bf16 (f32 and bf16 activations); SmolLM2-135M
# Q4_1 as shipped vs ours fp8 and bf16. llama.cpp runs before and after our rows of each model and
# the table compares with the mean of the two (the machine's memory bandwidth drifts; the notes
# give both runs).
# Env: BENCH_MODELS  subset of tinyllama-q8_0,tinyllama-bf16,smollm2 (default: all)
#      BENCH_RUNS    runs per measurement, median (default 3; ours also stops a measurement
#                    after BENCH_BUDGET_S seconds, default 30, keeping at least one run)
#      BENCH_NO_APPEND=1  print the table without appending it to bench/results/cpu_vs_llamacpp.md
# The llama-cpp-python wheel is built once (GGML_NATIVE, ~10 min on 2 cores) and cached in
# .cache/bench/wheels; the random GGUFs are written once to .cache/bench (~2 min, 3.4 GB).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh
MODELS="${BENCH_MODELS:-tinyllama-q8_0,tinyllama-bf16,smollm2}"
RUNS="${BENCH_RUNS:-3}"
BUDGET="${BENCH_BUDGET_S:-30}"
CACHE="$ROOT/.cache/bench"
ensure_llama_cpp "$CACHE"

has() { [[ ",$MODELS," == *",$1,"* ]]; }
types=()
has tinyllama-q8_0 && [ ! -f "$CACHE/tinyllama-random-q8_0.gguf" ] && types+=(q8_0)
has tinyllama-bf16 && [ ! -f "$CACHE/tinyllama-random-bf16.gguf" ] && types+=(bf16)
if [ ${#types[@]} -gt 0 ]; then
  echo "== writing random TinyLlama-shaped GGUFs: ${types[*]}" >&2
  python3 bench/peer/make_random_gguf.py --out-dir "$CACHE" --types "$(IFS=,; echo "${types[*]}")" >&2
fi
SMOL=""
has smollm2 && SMOL="$(fetch_smollm2)"

BIN="$(build_cpu_peer)"
COMMIT="$(tree_commit)"
OUT="$CACHE/run-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
rows=()
theirs() {  # KEY MODEL RUN(a: before our rows, b: after)
  echo "== llama.cpp ($3): $1" >&2
  python3 bench/peer/llama_cpp_bench.py "$2" --runs "$RUNS" | tee "$OUT/theirs-$1-$3.json" >&2
}
pair() {  # KEY: both llama.cpp runs of a model, for report.py (it averages them)
  echo "$OUT/theirs-$1-a.json+$OUT/theirs-$1-b.json"
}
ours() {  # KEY MODEL FORMAT ACTIVATIONS
  echo "== ours $3, activations $4: $1" >&2
  "$BIN" "$2" "$3" --activations "$4" --runs "$RUNS" --budget-s "$BUDGET" | tee "$OUT/ours-$1-$3-$4.json" >&2
}
Q8="Q8_0 (8.5 bits/weight)"
if has tinyllama-q8_0; then
  m="$CACHE/tinyllama-random-q8_0.gguf"
  theirs tinyllama-q8_0 "$m" a
  ours tinyllama-q8_0 "$m" fp8 f32; ours tinyllama-q8_0 "$m" fp8 bf16; ours tinyllama-q8_0 "$m" fp8-b64 f32
  theirs tinyllama-q8_0 "$m" b
  T="$(pair tinyllama-q8_0)"
  rows+=("TinyLlama-1.1B random|$Q8|fp8 block 16 (10 bits/weight), activations f32 (the defaults)|$T|$OUT/ours-tinyllama-q8_0-fp8-f32.json")
  rows+=("TinyLlama-1.1B random|$Q8|fp8 block 16 (10 bits/weight), activations bf16|$T|$OUT/ours-tinyllama-q8_0-fp8-bf16.json")
  rows+=("TinyLlama-1.1B random|$Q8|fp8 block 64 (8.5 bits/weight: Q8_0's), activations f32|$T|$OUT/ours-tinyllama-q8_0-fp8-b64-f32.json")
fi
if has tinyllama-bf16; then
  m="$CACHE/tinyllama-random-bf16.gguf"
  theirs tinyllama-bf16 "$m" a; ours tinyllama-bf16 "$m" bf16 f32; ours tinyllama-bf16 "$m" bf16 bf16
  theirs tinyllama-bf16 "$m" b
  T="$(pair tinyllama-bf16)"
  rows+=("TinyLlama-1.1B random|BF16|bf16, activations f32|$T|$OUT/ours-tinyllama-bf16-bf16-f32.json")
  rows+=("TinyLlama-1.1B random|BF16|bf16, activations bf16 (llama.cpp's BF16 numerics)|$T|$OUT/ours-tinyllama-bf16-bf16-bf16.json")
fi
if has smollm2; then
  theirs smollm2 "$SMOL" a; ours smollm2 "$SMOL" fp8 f32; ours smollm2 "$SMOL" bf16 f32; ours smollm2 "$SMOL" bf16 bf16
  theirs smollm2 "$SMOL" b
  T="$(pair smollm2)"
  rows+=("SmolLM2-135M-Instruct|Q4_1 (as shipped)|fp8 block 16, activations f32|$T|$OUT/ours-smollm2-fp8-f32.json")
  rows+=("SmolLM2-135M-Instruct|Q4_1 (as shipped)|bf16, activations f32|$T|$OUT/ours-smollm2-bf16-f32.json")
  rows+=("SmolLM2-135M-Instruct|Q4_1 (as shipped)|bf16, activations bf16|$T|$OUT/ours-smollm2-bf16-bf16.json")
fi
[ ${#rows[@]} -gt 0 ] || { echo "BENCH_MODELS=$MODELS selects nothing" >&2; exit 1; }

cmd="BENCH_MODELS=$MODELS BENCH_RUNS=$RUNS BENCH_BUDGET_S=$BUDGET bash scripts/bench_cpu_peer.sh"
append=(--append bench/results/cpu_vs_llamacpp.md)
[ "${BENCH_NO_APPEND:-0}" = 1 ] && append=()
first="$(ls "$OUT"/theirs-*.json | head -1)"
python3 bench/peer/report.py "${append[@]}" --command "$cmd" --commit "$COMMIT" --llama-json "$first" "${rows[@]}"
echo "raw JSON: $OUT" >&2
