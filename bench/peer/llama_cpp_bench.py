#!/usr/bin/env python3
"""llama.cpp's side of the peer benchmark (issue 5), through llama-cpp-python. Prints JSON.

  python3 bench/peer/llama_cpp_bench.py MODEL.gguf [--runs 3] [--ctx 2000] [--threads N]

The same four measurements as bench/src/cpu_peer.rs, on llama.cpp's low-level API
(llama_decode on a llama_batch; greedy = argmax of the last logits, in numpy):
- decode: 16-token prompt, then 64 greedy steps, each timed (decode 1 token + argmax);
  tok/s = 64 / their summed time.
- ppN: one llama_decode of a batch of exactly N prompt tokens (n_batch = n_ubatch = 512, logits
  of the last only, as llama-bench), cache cleared before each run; tok/s = N / its time.
- ctx decode: cache filled to --ctx positions (batches of 512), then 32 timed decode steps.
Median of --runs runs each. Prompt ids: peer_ids (the formula cpu_peer.rs uses), BOS first.
Threads: n_threads = n_threads_batch = number of cores (os.cpu_count()) unless --threads.
Flash attention: llama-cpp-python's default (off) unless --flash-attn; KV cache f16 (llama.cpp's default).
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import llama_cpp

N_BATCH = 512
DECODE_PROMPT, DECODE_STEPS, CTX_STEPS = 16, 64, 32


def peer_ids(n, vocab, bos):
    """Deterministic prompt ids in [100, vocab - 100), BOS first; mirrored in cpu_peer.rs."""
    span = max(vocab - 200, 1)
    return [bos if i == 0 else 100 + (i * 7919) % span for i in range(n)]


class Runner:
    def __init__(self, path, threads, n_ctx, flash_attn):
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=N_BATCH, n_ubatch=N_BATCH,
                                   n_threads=threads, n_threads_batch=threads, flash_attn=flash_attn, verbose=False)
        self.ctx = self.llm.ctx
        self.n_vocab = self.llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)

    def clear(self):
        """Empties the KV cache (the API's name changed across llama.cpp versions)."""
        if hasattr(llama_cpp, "llama_memory_clear"):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        elif hasattr(llama_cpp, "llama_kv_self_clear"):
            llama_cpp.llama_kv_self_clear(self.ctx)
        else:
            llama_cpp.llama_kv_cache_clear(self.ctx)

    def fill(self, toks, pos0):
        """Puts toks at positions pos0.. into the batch, logits for the last only (untimed)."""
        b = self.batch
        b.n_tokens = len(toks)
        for i, t in enumerate(toks):
            b.token[i] = t
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 0
        b.logits[len(toks) - 1] = 1

    def decode(self):
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def argmax(self):
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, self.batch.n_tokens - 1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def prefill(self, ids):
        """ids from position 0 in batches of N_BATCH; returns the greedy next id."""
        self.clear()
        for i in range(0, len(ids), N_BATCH):
            self.fill(ids[i:i + N_BATCH], i)
            self.decode()
        return self.argmax()

    def steps(self, first, pos0, n):
        """n greedy decode steps from token `first` at pos0; tok/s over the timed steps."""
        tok, total = first, 0.0
        for k in range(n):
            self.fill([tok], pos0 + k)
            t = time.perf_counter()
            self.decode()
            tok = self.argmax()
            total += time.perf_counter() - t
        return n / total

    def pp(self, ids):
        self.clear()
        self.fill(ids, 0)
        t = time.perf_counter()
        self.decode()
        self.argmax()
        return len(ids) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    # llama-cpp-python's default is off (llama.cpp's own CLI picks "auto"); KV cache f16 either way
    ap.add_argument("--flash-attn", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = Runner(args.model, args.threads, max(2048, args.ctx + CTX_STEPS + 1), args.flash_attn)
    load_s = time.perf_counter() - t0
    ids = lambda n: peer_ids(n, r.n_vocab, r.llm.token_bos())  # noqa: E731
    med = lambda f: statistics.median(f() for _ in range(args.runs))  # noqa: E731

    r.steps(r.prefill(ids(8)), 8, 4)  # warm-up: thread pool, page-in
    decode = med(lambda: r.steps(r.prefill(ids(DECODE_PROMPT)), DECODE_PROMPT, DECODE_STEPS))
    pp32 = med(lambda: r.pp(ids(32)))
    pp512 = med(lambda: r.pp(ids(512)))
    ctx_decode = med(lambda: r.steps(r.prefill(ids(args.ctx)), args.ctx, CTX_STEPS))
    print(json.dumps({
        "engine": "llama.cpp", "llama_cpp_python": llama_cpp.__version__, "model": args.model,
        "threads": args.threads, "runs": args.runs, "flash_attn": args.flash_attn, "load_s": load_s,
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "decode_tok_s": decode, "pp32_tok_s": pp32, "pp512_tok_s": pp512,
        "ctx": args.ctx, "ctx_decode_tok_s": ctx_decode, "ctx_fill": "prefill",
    }))
    llama_cpp.llama_batch_free(r.batch)


if __name__ == "__main__":
    main()
