"""Runtime x precision table: stock and pruned models in torch eager, torch.compile and ONNX
Runtime, float32 and int8, each timed by `speechprune bench` interleaved with the stock model
in float32 eager torch, so every speedup has the same reference.

    python benchmarks/deployment.py --stock STOCK --models NAME=FOLDER [NAME=FOLDER ...]
    python benchmarks/deployment.py --stock benchmarks/work/speed-budget/w2v2-base-random \\
        --models params=benchmarks/work/speed-budget/models/params0.72 \\
                 speed=benchmarks/work/speed-budget/models/params0.72-macs0.72 --out deployment.md

The models come from `benchmarks/speed_budget.py` (the method's one-shot choices from analyze
scores). int8 is dynamic quantization of the Linear layers (torch) or of MatMul (ONNX Runtime);
see docs/deploy.md. Benchmark alone: another CPU-heavy process makes the timings lie.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# (runtime label, precision, bench options)
VARIANTS = [
    ("torch eager", "float32", []),
    ("torch eager", "int8", ["--quantize", "int8"]),
    ("torch.compile", "float32", ["--compile"]),
    ("ONNX Runtime", "float32", ["--runtime", "onnxruntime"]),
    ("ONNX Runtime", "int8", ["--runtime", "onnxruntime", "--quantize", "int8"]),
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stock", required=True, help="the dense model (reference: float32 eager torch)")
    p.add_argument("--models", nargs="+", default=[], metavar="NAME=FOLDER", help="shrunk model folders")
    p.add_argument("--seconds", default="10")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", help="also write the Markdown table here")
    return p.parse_args()


def bench(models: list[str], stock: str, options: list[str], args) -> dict:
    command = [sys.executable, "-m", "speechprune", "bench", *models, "--baseline", stock, "--device", "cpu",
               "--seconds", args.seconds, "--threads", str(args.threads), "--repeat", str(args.repeat), "--json",
               *options]
    print("$ speechprune " + " ".join(command[3:]), file=sys.stderr, flush=True)
    return json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)


def main() -> None:
    args = parse_args()
    named = [("stock", args.stock)] + [tuple(item.split("=", 1)) for item in args.models]
    rows = []
    for runtime, precision, options in VARIANTS:
        # every model under this runtime, the stock one too except where it is the reference itself
        timed = [(name, folder) for name, folder in named if options or name != "stock"]
        report = bench([folder for _, folder in timed], args.stock, options, args)
        labels = [m["label"] for m in report["models"] if m["label"] != report["baseline"]]  # in the order given
        compiled = "--compile" in options
        by_label = {r["model"]: r for r in report["results"] if r["compiled"] == compiled}
        if not options:  # the reference row: stock, float32, eager torch
            base = by_label[report["baseline"]]
            rows.append(("stock", runtime, precision, base["latency_ms"]["median"], 1.0, [1.0, 1.0]))
        for (name, _), label in zip(timed, labels):
            row = by_label[label]
            rows.append((name, runtime, precision, row["latency_ms"]["median"], row["speedup"], row["speedup_spread"]))
    lines = ["| model | runtime | precision | median ms | speedup vs stock float32 eager (p10-p90) |",
             "|---|---|---|---|---|"]
    for name, runtime, precision, ms, speedup, spread in rows:
        lines.append(f"| {name} | {runtime} | {precision} | {ms:.1f} | {speedup:.2f}x ({spread[0]:.2f}-{spread[1]:.2f}) |")
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
