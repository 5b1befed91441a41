#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of untrusted bytes (cargo-fuzz / libFuzzer, see
# fuzz/README.md). Runs each target for SECONDS (or RUNS executions), then prints its
# executions and the inputs it failed on (crash, hang > 1 s, allocation > 256 MB or RSS > 2 GB),
# which land in fuzz/artifacts/<target>/ — fix the bug, then copy the input into
# fuzz/regressions/<target>/.
#
#   bash scripts/fuzz.sh SECONDS [TARGET...]      (default: every target, one after another)
#   bash scripts/fuzz.sh runs=N [TARGET...]       N executions per target (-runs), not a time
#   bash scripts/fuzz.sh merge [TARGET...]        fold what the runs found into fuzz/corpus,
#                                                 minimized to its coverage edges (seeds kept)
#   bash scripts/fuzz.sh build [TARGET...]        only build
#
# Environment:
#   FUZZ_SANITIZER=address (default) | none   the sanitizer the targets are built with; each
#                          has its own build folder (target/fuzz, target/fuzz-none). Our parsers
#                          are safe Rust: ASan finds nothing that a panic would not, and costs
#                          ~5x executions (fuzz/README.md), so long runs use none.
#   FUZZ_JOBS=J (default 1) J fuzzing processes per target sharing its corpus (each runs N/J
#                          executions with runs=N): for a machine of its own, not a shared one.
#   FUZZ_BIN=DIR           run prebuilt binaries from DIR (no cargo): a machine without Rust.
#   FUZZ_NICE=K            run the fuzzers under `nice -n K` (a shared machine).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on stable Rust RUSTC_BOOTSTRAP=1 lets it
# pass -Zsanitizer=address. New corpus entries go to $FUZZ_WORK/corpus/<target> (default
# target/fuzz-work), not into the committed corpora; `merge` folds them in.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
MODE=${1:?usage: scripts/fuzz.sh SECONDS|runs=N|merge|build [TARGET...]}
shift
TARGETS=("$@")
ALL=(safetensors index_json gguf gguf_tokenizer config_json tokenizer chat_template)
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
SAN=${FUZZ_SANITIZER:-address}
if [ "$SAN" = address ]; then dir=fuzz; else dir=fuzz-$SAN; fi
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/$dir}
WORK=${FUZZ_WORK:-$PWD/target/fuzz-work}
JOBS=${FUZZ_JOBS:-1}
NICE=()
[ -z "${FUZZ_NICE:-}" ] || NICE=(nice -n "$FUZZ_NICE")
# allocator_may_return_null: a fallible reservation (try_reserve) that fails is a handled
# error, not a crash; leaks are out of scope (statics live for the process)
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=0}
export RUSTC_BOOTSTRAP=1
# the GGUF dequantizer is parallel (rayon): one thread, so a fuzzer takes one core
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

# Longest input per target: a few kB holds every structure the seeds have (the GGUF seeds
# with tensors are ~17 kB); longer inputs only cost time on linear work.
max_len() {
  case $1 in
    gguf) echo 20000 ;;
    safetensors) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

if [ -n "${FUZZ_BIN:-}" ]; then
  BIN=$FUZZ_BIN
else
  for t in "${TARGETS[@]}"; do (cd fuzz && cargo fuzz build -O --sanitizer "$SAN" --fuzz-dir . "$t"); done
  BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release
fi
[ "$MODE" != build ] || exit 0

if [ "$MODE" = merge ]; then
  for t in "${TARGETS[@]}"; do
    min="$WORK/min/$t"
    rm -rf "$min" && mkdir -p "$min" "$WORK/corpus/$t" "fuzz/corpus/$t"
    "$BIN/$t" -merge=1 -use_counters=0 -timeout=5 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
      "$min" "fuzz/corpus/$t" "$WORK/corpus/$t" >"$WORK/$t.merge.log" 2>&1
    find "fuzz/corpus/$t" -type f ! -name 'seed_*' -delete
    for f in "$min"/*; do  # an input equal to a seed stays a seed
      dup=0
      for s in "fuzz/corpus/$t"/seed_*; do cmp -s "$f" "$s" && dup=1 && break; done
      [ $dup = 1 ] || cp "$f" "fuzz/corpus/$t/"
    done
    echo "$t: $(ls "fuzz/corpus/$t" | wc -l) files, $(du -sb "fuzz/corpus/$t" | cut -f1) bytes"
  done
  exit 0
fi

case $MODE in
  runs=*) total=${MODE#runs=}; limit=(-runs=$(( (total + JOBS - 1) / JOBS ))) ;;
  *) limit=(-max_total_time="$MODE") ;;
esac

printf '%-14s %14s %8s %8s  %s\n' target executions seconds failures artifacts
for t in "${TARGETS[@]}"; do
  mkdir -p "$WORK/corpus/$t" "fuzz/artifacts/$t"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  start=$(date +%s)
  pids=()
  logs=()
  for ((j = 0; j < JOBS; j++)); do
    log="$WORK/$t.log"
    [ "$JOBS" = 1 ] || log="$WORK/$t.$j.log"
    logs+=("$log")
    "${NICE[@]}" "$BIN/$t" "$WORK/corpus/$t" "fuzz/corpus/$t" "${limit[@]}" \
      -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=256 -max_len="$(max_len "$t")" \
      -dict="fuzz/dict/$t.dict" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  secs=$(( $(date +%s) - start ))
  # per process: its final stats; after a crash, its last status line (#N)
  execs=0
  for log in "${logs[@]}"; do
    n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    [ -n "$n" ] || n=$(grep -o '^#[0-9]*' "$log" | tr -d '#' | tail -1 || true)
    execs=$((execs + ${n:-0}))
  done
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  printf '%-14s %14s %8s %8s  %s\n' "$t" "$execs" "$secs" "$((after - before))" "fuzz/artifacts/$t (log: $WORK/$t*.log, $SAN)"
done
