#!/usr/bin/env bash
# On the GPU machine (after bench/gpu/prepare.sh here, .device/ carried): GPU tests, random-weight
# TinyLlama-1.1B / Llama-3.2-1B / Llama-2-7B checkpoints with their HF fp32 greedy references and
# HF static-cache timings (bench/peer/hf_reference.py), our decode/prefill bench (gpu_decode),
# the per-kernel profile, EUnit on the GPU and the BEAM per-token overhead. Writes under $OUT.
# MODELS="tinyllama llama32_1b" picks a subset.
set -u
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export VIVA_FIXTURES=$PWD/test/fixtures VIVA_CUDA_TESTS=1 VIVA_KERNEL_CACHE=/tmp/kcache
M=/tmp/models; mkdir -p $M
MODELS="${MODELS:-tinyllama llama32_1b llama2_7b}"
for t in cuda fixtures_hf; do echo "== $t"; timeout 150 .device/${t}_tests --test-threads=2 2>&1 | grep "test result\|FAILED\|panicked"; done
timeout 420 python bench/peer/hf_reference.py $M .device/tok_tl .device/tok_l3 $MODELS > $OUT/hf_ref.log 2>&1
grep "ms/token" $OUT/hf_ref.log; cp $M/expected.json $OUT/
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $OUT/gpu.txt
small=$(for m in tinyllama llama32_1b; do [[ " $MODELS " == *" $m "* ]] && echo $M/$m; done)
[ -n "$small" ] && timeout 240 .device/gpu_decode --expect $M/expected.json --out $OUT/gpu_small.json $small > $OUT/gpu_small.md 2>$OUT/gpu_small.log
[[ " $MODELS " == *" llama2_7b "* ]] && VIVA_BENCH_FORMATS=native,fp8-b16,fp8-b128 timeout 240 .device/gpu_decode \
  --expect $M/expected.json --out $OUT/gpu_7b.json $M/llama2_7b > $OUT/gpu_7b.md 2>$OUT/gpu_7b.log
cat $OUT/gpu_*.md
VIVA_PROFILE=1 VIVA_BENCH_FORMATS=fp8-b16 timeout 100 .device/gpu_decode $M/tinyllama 2>&1 | grep "profile" > $OUT/profile.txt
for f in .device/debs/*.deb; do dpkg -x $f /tmp/erl; done
E=/tmp/erl/usr/lib/erlang
export ROOTDIR=$E BINDIR=$(ls -d $E/erts-*/bin) EMU=beam PROGNAME=erl LD_LIBRARY_PATH=/tmp/erl/usr/lib/x86_64-linux-gnu
echo "== EUnit on the GPU (device auto)"
timeout 200 $BINDIR/erlexec -noshell +fnu -pa .device/ebin -eval \
  'case eunit:test([viva_tensor_llm_tests, viva_tensor_stream_tests], []) of ok -> halt(0); _ -> halt(1) end.' 2>&1 | tail -3
for w in fp8 native; do timeout 120 $BINDIR/erlexec -noshell +fnu -pa .device/ebin \
  -eval "viva_bench_beam:main([\"$M/tinyllama\", \"$w\", \"cuda\"])" 2>&1 | tail -2; done > $OUT/beam.md
cat $OUT/beam.md
