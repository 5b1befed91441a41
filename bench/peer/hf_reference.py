"""Random-weight Llama checkpoints with real configs + HF transformers fp32 greedy references and
HF static-cache decode timings, on the GPU machine (issue 6, item 4 and the benchmark's baseline).

python bench/peer/hf_reference.py OUT_DIR TINYLLAMA_TOKENIZER_DIR LLAMA3_TOKENIZER_DIR [models...]
models: tinyllama llama32_1b llama2_7b (default: all). Writes OUT_DIR/<model>/ (safetensors +
config + tokenizer) and OUT_DIR/expected.json: {model: {prompt, tokens, min_gap, hf_ms_per_token}}.
Weights ~N(0, 0.02) (HF init), rounded to the saved dtype (bf16, or f16 for llama2_7b) before the
fp32 reference runs, so reference and checkpoint hold the same values. TF32 off.
"""
import json, os, shutil, sys, time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

CONFIGS = {
    "tinyllama": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rope_theta=10000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "llama32_1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                       num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
                       rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000,
                       eos_token_id=128001,
                       rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "llama2_7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rope_theta=10000.0,
                      rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
}
SAVE_DTYPE = {"tinyllama": torch.bfloat16, "llama32_1b": torch.bfloat16, "llama2_7b": torch.float16}
PROMPT, NEW = 16, 32


def main():
    out, tok_tl, tok_l3 = sys.argv[1:4]
    names = sys.argv[4:] or list(CONFIGS)
    os.makedirs(out, exist_ok=True)
    exp_path = os.path.join(out, "expected.json")
    expected = json.load(open(exp_path)) if os.path.exists(exp_path) else {}
    for name in names:
        t0 = time.time()
        cfg = LlamaConfig(**CONFIGS[name])
        torch.manual_seed(1234)
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg).float().eval()
        dt = SAVE_DTYPE[name]
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dt).float())
        g = torch.Generator().manual_seed(99)
        prompt = [cfg.bos_token_id] + torch.randint(3, cfg.vocab_size, (PROMPT - 1,), generator=g).tolist()
        ids = torch.tensor([prompt], device="cuda")
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, num_beams=1,
                                 output_scores=True, return_dict_in_generate=True, pad_token_id=0)
        tokens = gen.sequences[0, PROMPT:].tolist()
        gaps = [float((s[0].topk(2).values[0] - s[0].topk(2).values[1]).item()) for s in gen.scores]
        # save in the rounded dtype (what our loader reads), with the real tokenizer of the vocab
        d = os.path.join(out, name)
        model.to(dt).save_pretrained(d, safe_serialization=True, max_shard_size="4GB")
        src = tok_l3 if cfg.vocab_size > 32000 else tok_tl
        shutil.copy(os.path.join(src, "tokenizer.json"), os.path.join(d, "tokenizer.json"))
        # HF decode speed in the saved dtype: static cache (compiled where torch.compile works)
        hf_ms, how = None, None
        try:
            if os.environ.get("HF_SKIP_TIMING"):
                raise RuntimeError("HF_SKIP_TIMING set")
            model.generation_config.cache_implementation = "static"
            # torch.compile of a 7B model takes minutes: eager static cache there
            for compile_ in ((True, False) if name != "llama2_7b" else (False,)):
                try:
                    m = torch.compile(model, mode="reduce-overhead") if compile_ else model
                    runs = []
                    for _ in range(3):
                        torch.cuda.synchronize(); t = time.time()
                        m.generate(ids, max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
                        torch.cuda.synchronize(); runs.append((time.time() - t) / 128 * 1e3)
                    hf_ms, how = sorted(runs)[0], "static cache" + (", torch.compile" if compile_ else ", eager")
                    break
                except Exception as e:  # compile can fail on some stacks: fall back to eager
                    print(f"{name}: compile={compile_} failed: {e}", file=sys.stderr)
        except Exception as e:
            print(f"{name}: timing failed: {e}", file=sys.stderr)
        expected[name] = {"prompt": prompt, "tokens": tokens, "min_gap": min(gaps), "hf_ms_per_token": hf_ms,
                          "hf_how": how, "saved_dtype": str(dt), "transformers": transformers.__version__,
                          "torch": torch.__version__}
        json.dump(expected, open(exp_path, "w"), indent=1)
        print(f"{name}: {time.time() - t0:.0f}s, min gap {min(gaps):.2e}, HF {hf_ms} ms/token ({how})", flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
