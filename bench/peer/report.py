#!/usr/bin/env python3
"""Markdown table of the peer benchmark from the JSON of llama_cpp_bench.py and cpu_peer.

  python3 bench/peer/report.py [--append FILE --command CMD] ROW...
ROW = "model|their weights|our weights|theirs.json[+theirs2.json...]|ours.json". Several llama.cpp
JSONs (the script runs llama.cpp before and after our rows of a model) are averaged per metric, so
a drift of the machine's memory bandwidth during the run weighs on both sides alike; their spread
goes to the notes. Prints the table; with --append, appends it to FILE under a header with date
(UTC), machine, commit, command and notes.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess

COLS = [("decode_tok_s", "decode tok/s"), ("pp32_tok_s", "pp32 tok/s"), ("pp512_tok_s", "pp512 tok/s"),
        ("ctx_decode_tok_s", "2k-ctx decode tok/s")]


def cell(ours, theirs):
    """"ours / theirs (ratio×)"; a missing side reads "–"."""
    if ours is None or theirs is None:
        return f"{ours if ours is not None else '–'} / {theirs if theirs is not None else '–'}"
    return f"{ours:.1f} / {theirs:.1f} (**{ours / theirs:.2f}×**)"


def load(path):
    return json.load(open(path)) if os.path.exists(path) else {}


def theirs_of(paths, notes, label):
    """Mean of each metric over the llama.cpp runs in `paths` ("a.json+b.json"); a note gives
    the runs' values when there are several."""
    runs = [load(p) for p in paths.split("+")]
    runs = [r for r in runs if r]
    if not runs:
        return {}
    merged = dict(runs[0])
    for k, _ in COLS:
        vals = [r[k] for r in runs if r.get(k) is not None]
        merged[k] = sum(vals) / len(vals) if vals else None
    if len(runs) > 1:
        spread = ", ".join(f"{t} " + " / ".join(f"{r[k]:.1f}" for r in runs if r.get(k) is not None)
                           for k, t in COLS)
        notes.append(f"{label}: llama.cpp before / after our rows (the table has their mean): {spread}")
    return merged


def table(rows):
    head = "| model | weights (theirs / ours) | " + " | ".join(f"{t} ours / llama.cpp (ratio)" for _, t in COLS) + " |"
    lines = [head, "|" + "---|" * (2 + len(COLS))]
    notes = []
    seen = {}
    for model, tw, ow, tpath, opath in rows:
        if tpath not in seen:
            seen[tpath] = theirs_of(tpath, notes, f"{model} {tw}")
        theirs, ours = seen[tpath], load(opath)
        cells = [cell(ours.get(k), theirs.get(k)) for k, _ in COLS]
        lines.append(f"| {model} | {tw} / {ow} | " + " | ".join(cells) + " |")
        if ours.get("ctx_fill") == "zeroed-cache":
            notes.append(f"{model} ours {ow}: 2k-ctx decode ran over a zeroed {ours['ctx']}-position cache "
                         f"(a real fill at its prefill speed would take ~{ours['ctx'] / ours['pp512_tok_s']:.0f} s)")
        runs = {k: ours.get(k) for k in ("decode_runs", "pp32_runs", "pp512_runs", "ctx_runs")}
        if any(v is not None and v < theirs.get("runs", 0) for v in runs.values()):
            notes.append(f"{model} ours {ow}: runs per measurement {runs} (time budget), llama.cpp {theirs.get('runs')}")
        if ours.get("load_s") is not None and theirs.get("load_s") is not None:
            notes.append(f"{model}: load {ours['load_s']:.1f} s ours {ow}, {theirs['load_s']:.1f} s llama.cpp {tw}")
    return "\n".join(lines) + "\n", notes


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def commit_state():
    dirty = " (uncommitted changes in the tree)" if sh("git status --porcelain --untracked-files=no") else ""
    return sh("git rev-parse --short HEAD") + dirty


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--append")
    ap.add_argument("--command", default="bash scripts/bench_cpu_peer.sh")
    ap.add_argument("--commit", help="commit (and tree state) the run started from; default: now")
    ap.add_argument("--llama-json", help="one llama_cpp_bench.py JSON, for its version and system info")
    ap.add_argument("rows", nargs="+")
    args = ap.parse_args()
    rows = [r.split("|") for r in args.rows]
    md, notes = table(rows)
    print(md)
    for n in notes:
        print("-", n)
    if not args.append:
        return
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    info = {}
    if args.llama_json and os.path.exists(args.llama_json):
        info = json.load(open(args.llama_json))
    with open(args.append, "a") as f:
        f.write(f"\n## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%MZ} — {platform.machine()} {cpu} "
                f"({os.cpu_count()} cores), commit {args.commit or commit_state()}\n")
        f.write(f"`{args.command}`; llama-cpp-python {info.get('llama_cpp_python', '?')}, "
                f"{info.get('threads', '?')} threads each; cells are ours / llama.cpp tok/s (ratio ours/llama.cpp).\n")
        if info.get("system_info"):
            f.write(f"llama.cpp system_info: `{info['system_info']}`\n")
        f.write("\n" + md + "\n")
        for n in notes:
            f.write(f"- {n}\n")


if __name__ == "__main__":
    main()
