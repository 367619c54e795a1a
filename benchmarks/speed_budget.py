"""Speed of the method's own one-shot choices under each budget, through the command line.

A Base-size wav2vec2 with random weights (`transformers.Wav2Vec2Config()`, saved with
`save_pretrained`) is scored by `speechprune analyze --no-drop-one` on generated speech,
then pruned in one shot from those scores (`prune --steps 0 --scores`) under each budget,
shrunk, and timed against the stock model with `speechprune bench` (interleaved rounds).
The structures removed are the method's choices: analyze's gradient importance per unit of
budget, never random scores.

    python benchmarks/speed_budget.py                       # CPU, 10 s, batch 1, float32, all cores
    python benchmarks/speed_budget.py --budgets params:0.72 macs:0.72 params:0.72+macs:0.72
    python benchmarks/speed_budget.py --work /tmp/speed --json
    python benchmarks/speed_budget.py --device cuda --dtype float32,bfloat16 --batch 1,8

Stages are cached in --work (model, audio, scores, cost table, runs, models); delete a file or
subfolder to redo it. With one --dtype, --seconds and --batch, `bench --cost-model` measures a
cost table for that setting first: `latency:X` items prune to a predicted speedup X with it,
and the final bench prints each model's predicted latency beside the measured one. Benchmark
alone: another CPU-heavy process makes the timings lie.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_BUDGETS = ["params:0.72", "macs:0.72", "params:0.72+macs:0.72", "latency:3", "params:0.72+latency:3",
                   "macs:0.5", "latency:2"]
OPTIONS = {"params": "--sparsity", "macs": "--macs-sparsity", "latency": "--speedup"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="benchmarks/work/speed-budget", help="cache folder of every stage")
    p.add_argument("--budgets", nargs="+", default=DEFAULT_BUDGETS,
                   help="one pruned model per item: params:S, macs:S, latency:X (speedup) or several joined by +")
    p.add_argument("--device", default="cpu", help="device of analyze and bench: cpu, cuda")
    p.add_argument("--dtype", default="float32", help="bench precisions, e.g. float32,bfloat16")
    p.add_argument("--seconds", default="10")
    p.add_argument("--batch", default="1")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads of bench")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the bench report as JSON")
    return p.parse_args()


def speechprune(*args: str, capture: bool = False) -> str:
    """Run one speechprune command; its progress goes to our stderr."""
    command = [sys.executable, "-m", "speechprune", *args]
    print("$ speechprune " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE if capture else None, text=True)
    return done.stdout if capture else ""


def base_model(folder: Path) -> Path:
    if not (folder / "config.json").exists():
        import torch
        import transformers

        torch.manual_seed(0)
        transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).save_pretrained(folder)
    return folder


def audio(folder: Path) -> Path:
    if not folder.exists():
        from speechprune.io.synth import write_corpus

        write_corpus(folder, n_files=24, seconds=(4.0, 8.0), seed=0)
    return folder


def budget_options(item: str, table: Path) -> list[str]:
    """'params:0.72+latency:3' -> ['--sparsity', '0.72', '--speedup', '3', '--latency-table', TABLE]."""
    options = []
    for part in item.split("+"):
        name, value = part.split(":")
        options += [OPTIONS[name], value] + (["--latency-table", str(table)] if name == "latency" else [])
    return options


def main() -> None:
    args = parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = base_model(work / "w2v2-base-random")
    data = audio(work / "audio")
    scores = work / "scores.json"
    if not scores.exists():
        speechprune("analyze", str(model), "--data", str(data), "--no-drop-one", "--max-seconds", "64",
                    "--device", args.device, "--out", str(scores), "--quiet")
    # the cost table of this machine and setting (latency budgets, and predictions beside measurements)
    table = work / f"cost-table-{args.device}-{args.dtype}-{args.seconds}s-b{args.batch}-t{args.threads}.json"
    single = "," not in args.dtype + args.seconds + args.batch
    if not single and any("latency" in item for item in args.budgets):
        sys.exit("error: latency budgets need one --dtype, --seconds and --batch (the cost table's setting)")
    if single and not table.exists():
        speechprune("bench", str(model), "--cost-model", str(table), "--device", args.device, "--dtype", args.dtype,
                    "--seconds", args.seconds, "--batch", args.batch, "--threads", str(args.threads), "--quiet")
    shrunk = []
    for item in args.budgets:
        name = item.replace(":", "").replace("+", "-")
        run, folder = work / "runs" / name, work / "models" / name
        if not (run / "summary.json").exists():
            speechprune("prune", str(model), *budget_options(item, table), "--steps", "0", "--scores", str(scores),
                        "--data", str(data), "--out", str(run), "--overwrite", "--quiet")
        if not (folder / "config.json").exists():
            speechprune("shrink", str(run), "--out", str(folder), "--quiet")
        shrunk.append(str(folder))
    report = speechprune("bench", *shrunk, "--baseline", str(model), "--device", args.device, "--dtype", args.dtype,
                         "--seconds", args.seconds, "--batch", args.batch, "--threads", str(args.threads),
                         "--repeat", str(args.repeat), *(["--latency-table", str(table)] if single else []),
                         *(["--json"] if args.json else []), capture=True)
    print(report, end="")
    if args.json:
        (work / "bench.json").write_text(report)


if __name__ == "__main__":
    main()
