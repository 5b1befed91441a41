#!/usr/bin/env bash
# Paired rounds of the llama.cpp comparison (issue 5), for the ratios the drift of a shared
# machine blurs in bench_cpu_peer.sh (there llama.cpp runs before and after all our rows of a
# model, minutes apart): here each round runs llama.cpp and then each of our configurations, one
# run each at short context (decode after a 16-token prompt, pp32, pp512), the ratio is taken
# within the round, and the table gives each ratio's median and range over the rounds.
#   bash scripts/bench_cpu_pairs.sh [MODEL.gguf [CONFIG...]]
# CONFIG = FORMAT[:ACTIVATIONS] as cpu_peer takes them (fp8, fp8-b64, bf16; f32 or bf16);
# default: fp8 fp8-b64 on the random TinyLlama Q8_0 GGUF that bench_cpu_peer.sh writes.
# Env: BENCH_PAIRS  rounds (default 5)
#      BENCH_NO_APPEND=1  print the table without appending it to bench/results/cpu_vs_llamacpp.md
#      BENCH_BASELINE_BIN  another cpu_peer (e.g. built at an earlier commit): each round also runs it,
#                          right after ours, and the table adds its rows and the ratio ours/baseline
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. scripts/lib.sh
CACHE="$ROOT/.cache/bench"
ROUNDS="${BENCH_PAIRS:-5}"
MODEL="${1:-$CACHE/tinyllama-random-q8_0.gguf}"
[ $# -gt 0 ] && shift
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(fp8 fp8-b64)
ensure_llama_cpp "$CACHE"
if [ ! -f "$MODEL" ]; then
  [ "$MODEL" = "$CACHE/tinyllama-random-q8_0.gguf" ] || { echo "no such model: $MODEL" >&2; exit 1; }
  echo "== writing the random TinyLlama-shaped Q8_0 GGUF" >&2
  python3 bench/peer/make_random_gguf.py --out-dir "$CACHE" --types q8_0 >&2
fi
BIN="$(build_cpu_peer)"
COMMIT="$(tree_commit)"
OUT="$CACHE/pairs-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r/$ROUNDS: llama.cpp" >&2
  python3 bench/peer/llama_cpp_bench.py "$MODEL" --runs 1 --ctx 64 > "$OUT/theirs-$r.json"
  for c in "${CONFIGS[@]}"; do
    fmt="${c%%:*}"; act=f32; [[ "$c" == *:* ]] && act="${c#*:}"
    echo "== round $r/$ROUNDS: ours $fmt, activations $act" >&2
    "$BIN" "$MODEL" "$fmt" --activations "$act" --runs 1 --ctx 64 --budget-s 10 > "$OUT/ours-$fmt-$act-$r.json"
    if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
      echo "== round $r/$ROUNDS: baseline $fmt, activations $act" >&2
      "$BENCH_BASELINE_BIN" "$MODEL" "$fmt" --activations "$act" --runs 1 --ctx 64 --budget-s 10 \
        > "$OUT/base-$fmt-$act-$r.json"
    fi
  done
done
cmd="BENCH_PAIRS=$ROUNDS bash scripts/bench_cpu_pairs.sh $(realpath --relative-to="$ROOT" "$MODEL") ${CONFIGS[*]}"
[ -n "${BENCH_BASELINE_BIN:-}" ] && cmd="BENCH_BASELINE_BIN=$BENCH_BASELINE_BIN $cmd"
append=(--append bench/results/cpu_vs_llamacpp.md)
[ "${BENCH_NO_APPEND:-0}" = 1 ] && append=()
python3 bench/peer/pairs_report.py "${append[@]}" --command "$cmd" --commit "$COMMIT" --dir "$OUT" --rounds "$ROUNDS" "${CONFIGS[@]}"
echo "raw JSON: $OUT" >&2
