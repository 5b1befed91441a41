#!/usr/bin/env bash
# Builds everything the GPU machine needs (it has no Rust and no Erlang) into .device/ (ignored
# by git; carry it with the device tool): the GPU test binaries, the gpu_decode bench, the NIF +
# .beam files, Erlang/OTP 25 as Debian packages, and the tokenizers of the random-weight models.
# Then, on the GPU machine: bash bench/gpu/run_on_device.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SHARED="${VIVA_MODELS:-$ROOT/../shared/models}"
D=.device
rm -rf $D && mkdir -p $D/ebin $D/priv $D/debs $D/tok_tl $D/tok_l3
grep -qx ".device/" .git/info/exclude 2>/dev/null || echo ".device/" >> .git/info/exclude
cargo build --release -p viva_tensor_nif -p viva_bench
for t in cuda fixtures_hf; do
  bin=$(cargo test --release -p viva_core --test $t --no-run 2>&1 | sed -n "s/.*Executable tests\/$t.rs (\(.*\))/\1/p")
  cp "$bin" $D/${t}_tests
done
cp target/release/gpu_decode $D/
cp target/release/libviva_tensor_nif.so $D/priv/
erlc -o $D/ebin src/*.erl test/viva_tensor_test_json.erl test/viva_tensor_test_support.erl \
  test/viva_tensor_llm_tests.erl test/viva_tensor_stream_tests.erl bench/beam/viva_bench_beam.erl
(cd $D/debs && for p in erlang-base erlang-eunit libsctp1; do apt-get download $p >/dev/null 2>&1; done; ls | grep -q libsctp1)
cp "$SHARED/tinyllama-1.1b-chat/tokenizer.json" $D/tok_tl/
cp "$SHARED/llama3-tokenizer/tokenizer.json" $D/tok_l3/
du -sh $D
