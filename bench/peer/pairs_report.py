#!/usr/bin/env python3
"""Markdown table of scripts/bench_cpu_pairs.sh: per configuration, the ratio ours / llama.cpp of
decode, pp32 and pp512 taken within each round (llama.cpp and ours run back to back), as the
median over the rounds with its range, and each side's median tok/s.

  python3 bench/peer/pairs_report.py --dir OUT --rounds N [--append FILE --command CMD --commit C] CONFIG...
OUT holds theirs-R.json and ours-FORMAT-ACTIVATIONS-R.json for R = 1..N (CONFIG = FORMAT[:ACTIVATIONS]),
and base-FORMAT-ACTIVATIONS-R.json when a baseline binary ran too (BENCH_BASELINE_BIN): then a row for the
baseline against llama.cpp and a row for ours against the baseline, both within each round.
"""
import argparse
import datetime
import os
import platform
import statistics

from report import commit_state, load, sh

COLS = [("decode_tok_s", "decode"), ("pp32_tok_s", "pp32"), ("pp512_tok_s", "pp512")]


def cell(ours, theirs):
    """"median ratio× (min–max); ours / llama.cpp median tok/s" over the rounds with both values."""
    pairs = [(o, t) for o, t in zip(ours, theirs) if o is not None and t]
    if not pairs:
        return "–"
    ratios = [o / t for o, t in pairs]
    return (f"**{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f}); "
            f"{statistics.median(o for o, _ in pairs):.1f} / {statistics.median(t for _, t in pairs):.1f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--append")
    ap.add_argument("--command", default="bash scripts/bench_cpu_pairs.sh")
    ap.add_argument("--commit")
    ap.add_argument("configs", nargs="+")
    args = ap.parse_args()
    rounds = range(1, args.rounds + 1)
    theirs = [load(os.path.join(args.dir, f"theirs-{r}.json")) for r in rounds]
    info = next((t for t in theirs if t), {})
    model = os.path.basename(info.get("model", "?"))
    lines = ["| model | ours | " + " | ".join(f"{t}: ratio ours/llama.cpp, median (range); median tok/s ours / llama.cpp"
                                              for _, t in COLS) + " |",
             "|" + "---|" * (2 + len(COLS))]
    for c in args.configs:
        fmt, _, act = c.partition(":")
        act = act or "f32"
        ours = [load(os.path.join(args.dir, f"ours-{fmt}-{act}-{r}.json")) for r in rounds]
        weights = next((o.get("weights") for o in ours if o), fmt)
        cells = [cell([o.get(k) for o in ours], [t.get(k) for t in theirs]) for k, _ in COLS]
        lines.append(f"| {model} | {weights}, activations {act} | " + " | ".join(cells) + " |")
        base = [load(os.path.join(args.dir, f"base-{fmt}-{act}-{r}.json")) for r in rounds]
        if any(base):
            cells = [cell([b.get(k) for b in base], [t.get(k) for t in theirs]) for k, _ in COLS]
            lines.append(f"| {model} | baseline {weights}, activations {act} | " + " | ".join(cells) + " |")
            cells = [cell([o.get(k) for o in ours], [b.get(k) for b in base]) for k, _ in COLS]
            lines.append(f"| {model} | ours / baseline, {weights}, activations {act} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.append:
        return
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    with open(args.append, "a") as f:
        f.write(f"\n## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%MZ} — {platform.machine()} {cpu} "
                f"({os.cpu_count()} cores), commit {args.commit or commit_state()}, paired rounds\n")
        f.write(f"`{args.command}`; llama-cpp-python {info.get('llama_cpp_python', '?')}, {info.get('threads', '?')} "
                f"threads each; {args.rounds} rounds, each llama.cpp then ours back to back, one run each, "
                f"context 64 (decode: 16-token prompt + 64 greedy steps).\n\n" + md)


if __name__ == "__main__":
    main()
