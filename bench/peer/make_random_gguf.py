#!/usr/bin/env python3
"""GGUFs of random TinyLlama-1.1B-shaped weights for the llama.cpp peer benchmark (issue 5).

  python3 bench/peer/make_random_gguf.py [--out-dir .cache/bench] [--types q8_0,bf16] [--seed 0]

Writes tinyllama-random-<type>.gguf: TinyLlama-1.1B-Chat's config (from
$VIVA_MODELS/tinyllama-1.1b-chat/config.json), its SentencePiece tokenizer (written by the
tokenizer fixture script's function), weights ~N(0, 0.02) as HF's initializer_range, norms 1.
Layout as llama.cpp's convert_hf_to_gguf writes it: llama.cpp tensor names, q/k rows permuted
for ggml's interleaved RoPE, 2-D weights in the file type (Q8_0 or BF16), norms F32. Both
llama.cpp and viva_core's GGUF loader (which undoes the permutation) read it. Needs gguf, numpy,
sentencepiece. Tensors are generated and written one at a time (peak memory ~ one tensor).
"""
import argparse
import json
import os
import sys

import gguf
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "../.."))
MODELS = os.environ.get("VIVA_MODELS", os.path.join(ROOT, "../shared/models"))
sys.path.insert(0, os.path.join(ROOT, "test/fixtures/gguf"))
from make_llama_tokenizer_gguf import add_llama_tokenizer  # noqa: E402

Q = gguf.GGMLQuantizationType
# file type name -> (2-D weight type, general.file_type)
TYPES = {"q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0), "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16)}
INIT_STD = 0.02  # HF initializer_range


def permute_qk(w, n_head):
    """HF rotate-half row order -> llama.cpp's interleaved order (as convert_hf_to_gguf's permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_plan(cfg):
    """[(gguf name, numpy shape (rows, cols), kind, heads to permute or None)] in convert's order."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    kv = h // heads * kv_heads
    plan = [("token_embd.weight", (vocab, h), "w", None)]
    for i in range(cfg["num_hidden_layers"]):
        b = f"blk.{i}."
        plan += [(b + "attn_norm.weight", (h,), "norm", None),
                 (b + "attn_q.weight", (h, h), "w", heads),
                 (b + "attn_k.weight", (kv, h), "w", kv_heads),
                 (b + "attn_v.weight", (kv, h), "w", None),
                 (b + "attn_output.weight", (h, h), "w", None),
                 (b + "ffn_norm.weight", (h,), "norm", None),
                 (b + "ffn_gate.weight", (inter, h), "w", None),
                 (b + "ffn_up.weight", (inter, h), "w", None),
                 (b + "ffn_down.weight", (h, inter), "w", None)]
    plan += [("output_norm.weight", (h,), "norm", None), ("output.weight", (vocab, h), "w", None)]
    return plan


def make(idx, shape, kind, heads, qtype, seed):
    """One tensor's bytes; its own generator (seed, idx), so every file type holds the same weights."""
    if kind == "norm":
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng([seed, idx])
    w = rng.standard_normal(shape, dtype=np.float32)
    w *= INIT_STD
    if heads is not None:
        w = permute_qk(w, heads)
    return gguf.quants.quantize(w, qtype)


def write(path, cfg, tname, seed, tokenizer_model):
    qtype, ftype = TYPES[tname]
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(f"TinyLlama-1.1B-shaped random ({tname}, seed {seed})")
    w.add_file_type(ftype)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_vocab_size(cfg["vocab_size"])
    add_llama_tokenizer(w, tokenizer_model)
    plan = tensor_plan(cfg)
    for name, shape, kind, _ in plan:
        if kind == "norm":
            w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * shape[0])
        else:
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            row_bytes = shape[1] // block * type_size
            w.add_tensor_info(name, (shape[0], row_bytes), np.dtype(np.uint8), shape[0] * row_bytes, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for idx, (name, shape, kind, heads) in enumerate(plan):
        w.write_tensor_data(make(idx, shape, kind, heads, qtype, seed))
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=os.path.join(ROOT, ".cache/bench"))
    ap.add_argument("--types", default="q8_0,bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-dir", default=os.path.join(MODELS, "tinyllama-1.1b-chat"))
    args = ap.parse_args()
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    os.makedirs(args.out_dir, exist_ok=True)
    for t in args.types.split(","):
        path = os.path.join(args.out_dir, f"tinyllama-random-{t}.gguf")
        tmp = path + ".part"  # a killed run never leaves a truncated .gguf behind
        write(tmp, cfg, t, args.seed, os.path.join(args.model_dir, "tokenizer.model"))
        os.replace(tmp, path)
        print(f"{path}: {os.path.getsize(path) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
