#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of untrusted bytes (cargo-fuzz / libFuzzer, see
# fuzz/README.md). Runs each target for SECONDS, then prints its executions and the inputs it
# failed on (crash, hang > 1 s, allocation > 256 MB or RSS > 2 GB), which land in
# fuzz/artifacts/<target>/ — fix the bug, then copy the input into fuzz/regressions/<target>/.
#
#   bash scripts/fuzz.sh SECONDS [TARGET...]      (default: every target, one after another)
#   bash scripts/fuzz.sh merge [TARGET...]        fold what the runs found into fuzz/corpus,
#                                                 minimized to its coverage edges (seeds kept)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on stable Rust RUSTC_BOOTSTRAP=1 lets it
# pass -Zsanitizer=address. New corpus entries go to $FUZZ_WORK/corpus/<target> (default
# target/fuzz-work), not into the committed corpora; `merge` folds them in.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SECONDS_EACH=${1:?usage: scripts/fuzz.sh SECONDS|merge [TARGET...]}
shift
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(safetensors index_json gguf config_json tokenizer chat_template)
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
WORK=${FUZZ_WORK:-$PWD/target/fuzz-work}
# allocator_may_return_null: a fallible reservation (try_reserve) that fails is a handled
# error, not a crash; leaks are out of scope (statics live for the process)
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=0}
export RUSTC_BOOTSTRAP=1

for t in "${TARGETS[@]}"; do (cd fuzz && cargo fuzz build -O --fuzz-dir . "$t"); done
BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release

if [ "$SECONDS_EACH" = merge ]; then
  for t in "${TARGETS[@]}"; do
    min="$WORK/min/$t"
    rm -rf "$min" && mkdir -p "$min" "$WORK/corpus/$t"
    "$BIN/$t" -merge=1 -use_counters=0 -timeout=5 -rss_limit_mb=2048 "$min" "fuzz/corpus/$t" "$WORK/corpus/$t" \
      >"$WORK/$t.merge.log" 2>&1
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

printf '%-14s %14s %8s  %s\n' target executions failures artifacts
for t in "${TARGETS[@]}"; do
  mkdir -p "$WORK/corpus/$t" "fuzz/artifacts/$t"
  log="$WORK/$t.log"
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  "$BIN/$t" "$WORK/corpus/$t" "fuzz/corpus/$t" \
    -max_total_time="$SECONDS_EACH" -timeout=1 -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -dict="fuzz/dict/$t.dict" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || true
  # final stats; after a crash, the last status line (#N)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tr -d '#' | tail -1 || true)
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  printf '%-14s %14s %8s  %s\n' "$t" "${execs:-?}" "$((after - before))" "fuzz/artifacts/$t (log: $log)"
done
