#!/usr/bin/env bash
# On the GPU machine, from the repository root, with the folder bench/gpu/prepare.sh filled
# carried as $D: GPU tests, random-weight checkpoints (bench/peer/hf_reference.py, no HF timing),
# then the old build ($D/base_gpu_decode) and this one ($D/gpu_decode) in alternating rounds on
# the same warm machine, host RSS of one load each, EUnit on the GPU. Results under $OUT.
# ROUNDS=3 STEPS="tests models ab rss eunit" pick what runs; AB_UNTIL=400 (seconds since the
# start) stops adding rounds, so the later steps still fit one device call.
set -u
D="${D:-.device}"; FINAL="${OUT:-/tmp/out}"; OUT=/tmp/w; mkdir -p "$OUT" "$FINAL"
ROUNDS="${ROUNDS:-3}"; STEPS="${STEPS:-tests models ab rss eunit}"; AB_UNTIL="${AB_UNTIL:-400}"
export VIVA_FIXTURES=$PWD/test/fixtures VIVA_CUDA_TESTS=1 VIVA_KERNEL_CACHE=/tmp/kcache
M=/tmp/models; mkdir -p $M
has() { [[ " $STEPS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
if has tests; then
  for t in cuda fixtures_hf; do echo "== $t"; timeout 200 $D/${t}_tests --test-threads=2 > $OUT/test_$t.log 2>&1
    grep "test result\|FAILED\|panicked\|^test " $OUT/test_$t.log | head -30; done
fi
if has models; then
  [ -f $M/expected.json ] || HF_SKIP_TIMING=1 timeout 300 python $D/hf_reference.py $M $D/tok_tl $D/tok_l3 tinyllama llama32_1b > $OUT/hf_ref.log 2>&1
  tail -2 $OUT/hf_ref.log; cp $M/expected.json $OUT/ 2>/dev/null
fi
if has ab; then
  mkdir -p $OUT/ab
  for r in $(seq 1 $ROUNDS); do
    [ $r -gt 1 ] && [ $SECONDS -gt $AB_UNTIL ] && { echo "stopped after $((r - 1)) rounds at ${SECONDS}s"; break; }
    for b in base new; do
      bin=$D/gpu_decode; [ $b = base ] && bin=$D/base_gpu_decode
      VIVA_BENCH_FORMATS=bf16,fp8-b16 timeout 120 $bin --expect $M/expected.json --out $OUT/ab/${b}_tl_$r.json $M/tinyllama > /dev/null 2>>$OUT/ab/${b}.log || echo "$b tl round $r failed"
      VIVA_BENCH_FORMATS=native,bf16 timeout 120 $bin --expect $M/expected.json --out $OUT/ab/${b}_l3_$r.json $M/llama32_1b > /dev/null 2>>$OUT/ab/${b}.log || echo "$b l3 round $r failed"
    done
  done 2>&1
  python3 $D/ab_summary.py $OUT/ab | tee $OUT/ab.md
fi
if has rss; then
  for m in tinyllama llama32_1b; do for w in bf16 fp8-b16; do for b in base new; do
    bin=$D/gpu_decode; [ $b = base ] && bin=$D/base_gpu_decode
    echo "$b $m $w $(VIVA_BENCH_FORMATS=$w timeout 100 python3 $D/rss.py $bin $M/$m)"
  done; done; done | tee $OUT/rss.txt
fi
if has eunit; then
  for f in $D/debs/*.deb; do dpkg -x $f /tmp/erl; done
  E=/tmp/erl/usr/lib/erlang
  export ROOTDIR=$E BINDIR=$(ls -d $E/erts-*/bin) EMU=beam PROGNAME=erl LD_LIBRARY_PATH=/tmp/erl/usr/lib/x86_64-linux-gnu
  export VIVA_TENSOR_NIF_PATH=$PWD/$D/priv/libviva_tensor_nif
  echo "== EUnit on the GPU (device auto)"
  timeout 200 $BINDIR/erlexec -noshell +fnu -pa $D/ebin -eval \
    'case eunit:test([viva_tensor_llm_tests, viva_tensor_stream_tests, viva_tensor_lowlevel_tests], []) of ok -> halt(0); _ -> halt(1) end.' > $OUT/eunit.log 2>&1
  tail -5 $OUT/eunit.log
fi
# at most 8 files come back: the summaries, and every log in one archive
tar czf $FINAL/logs.tgz -C $OUT . && cp $OUT/gpu.txt $OUT/ab.md $OUT/rss.txt $OUT/expected.json $FINAL/ 2>/dev/null
