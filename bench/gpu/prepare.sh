#!/usr/bin/env bash
# Builds everything the GPU machine needs (it has no Rust and no Erlang) into .device/ (ignored
# by git; carry it with the device tool): the GPU test binaries, the gpu_decode bench, the NIF +
# .beam files, Erlang/OTP 25 as Debian packages, and the tokenizers of the random-weight models.
# Then, on the GPU machine: bash bench/gpu/run_on_device.sh
# D=dir puts it elsewhere (a folder the device tool carries); BASE=path/to/gpu_decode adds an
# older build of the bench as base_gpu_decode, for bench/gpu/ab.sh (old vs new, same machine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SHARED="${VIVA_MODELS:-$ROOT/../shared/models}"
D="${D:-.device}"
rm -rf $D && mkdir -p $D/ebin $D/priv $D/debs $D/tok_tl $D/tok_l3
cargo build --release -p viva_tensor_nif -p viva_bench
for t in cuda fixtures_hf; do
  bin=$(cargo test --release -p viva_core --test $t --no-run 2>&1 | sed -n "s/.*Executable tests\/$t.rs (\(.*\))/\1/p")
  cp "$bin" $D/${t}_tests
done
cp ${CARGO_TARGET_DIR:-target}/release/gpu_decode $D/
[ -n "${BASE:-}" ] && cp "$BASE" $D/base_gpu_decode
strip $D/*_tests $D/*gpu_decode
cp bench/gpu/ab.sh bench/gpu/rss.py bench/gpu/ab_summary.py bench/gpu/run_on_device.sh bench/peer/hf_reference.py $D/
cp ${CARGO_TARGET_DIR:-target}/release/libviva_tensor_nif.so $D/priv/ && strip $D/priv/*.so
erlc -o $D/ebin src/*.erl test/viva_tensor_test_json.erl test/viva_tensor_test_support.erl \
  test/viva_tensor_llm_tests.erl test/viva_tensor_stream_tests.erl test/viva_tensor_lowlevel_tests.erl \
  bench/beam/viva_bench_beam.erl
(cd $D/debs && for p in erlang-base erlang-eunit libsctp1; do apt-get download $p >/dev/null 2>&1; done; ls | grep -q libsctp1)
cp "$SHARED/tinyllama-1.1b-chat/tokenizer.json" $D/tok_tl/
cp "$SHARED/llama3-tokenizer/tokenizer.json" $D/tok_l3/
du -sh $D
