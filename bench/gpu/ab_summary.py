"""Pairs gpu_decode --out JSON files of two builds (base_*.json, new_*.json in DIR) measured in
alternating rounds on one machine: per (model, weights) the median ms/token, prefill tok/s and
load s of each, and the ratio new/old. Usage: python3 ab_summary.py DIR"""
import glob, json, os, statistics, sys

d = sys.argv[1]
runs = {"base": {}, "new": {}}
for build in runs:
    for f in sorted(glob.glob(os.path.join(d, f"{build}_*.json"))):
        for r in json.load(open(f)):
            runs[build].setdefault((r["model"], r["weights"]), []).append(r)
print("| model | weights | ms/token old | ms/token new | new/old | prefill tok/s old | new | load s old | new | rounds | greedy tokens equal |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(runs["new"]):
    a, b = runs["base"].get(key, []), runs["new"][key]
    if not a:
        continue
    med = lambda rs, f: statistics.median(r[f] for r in rs)
    ma, mb = med(a, "ms_per_token"), med(b, "ms_per_token")
    same = all(r["tokens"] == a[0]["tokens"] for r in a + b)
    print(f"| {key[0]} | {key[1]} | {ma:.3f} | {mb:.3f} | {mb / ma:.3f} | {med(a, 'prefill_tok_s'):,.0f} | {med(b, 'prefill_tok_s'):,.0f} "
          f"| {med(a, 'load_s'):.2f} | {med(b, 'load_s'):.2f} | {len(a)}/{len(b)} | {'yes' if same else 'NO'} |")
