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
    python benchmarks/speed_budget.py --budgets params:0.72+macs:0.72 latency:3 --score-seeds 0,1,2,3,4 --round-to auto
    python benchmarks/speed_budget.py --budgets latency:3 --score-seeds 0,1,2,3,4 --runtime onnxruntime --quantize int8

`--score-seeds` prunes every budget from several score sets: each seed generates its own audio
folder and `analyze` scores it, so the structures ranked differ while the budget stays. A budget
must hold across them, not on one lucky shape: the report then ends with each budget's lowest,
median and highest speedup and efficiency over the score sets. Seed 0 is the default single set
(its files keep their names: `audio/`, `scores.json`, `runs/NAME`).

Stages are cached in --work (model, audio, scores, cost table, runs, models); delete a file or
subfolder to redo it. `--stages-only` makes them and times nothing (on a shared machine: prepare
beside other work, then bench alone). With one --dtype, --seconds and --batch, `bench --cost-model` measures a
cost table for that setting first: `latency:X` items prune to a predicted speedup X with it,
and the final bench prints each model's predicted latency beside the measured one. Benchmark
alone: another CPU-heavy process makes the timings lie.

`--runtime onnxruntime [--quantize int8]` measures the table in that runtime, and benches the
students there against the dense model run the same way (`bench --baseline-runtime`): the
speedup a `latency:X` budget targets. Its tables and models carry the runtime in their names.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    p.add_argument("--score-seeds", default="0",
                   help="comma-separated seeds of the generated audio that analyze scores: one score set each")
    p.add_argument("--analyze-seconds", default="64", help="analyze --max-seconds of each score set")
    p.add_argument("--model", default=None,
                   help="a saved model folder to prune instead of the Base-size random one (e.g. a tiny one, to try the script)")
    p.add_argument("--round-to", default=None, help="prune --round-to (N, auto or none) [default: prune's]")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"],
                   help="runtime of the cost table and of every model benched, the dense baseline too")
    p.add_argument("--quantize", default=None, choices=["int8"], help="quantization in that runtime")
    p.add_argument("--stages-only", action="store_true",
                   help="make every cached stage (audio, scores, runs, models) and time nothing: the cost table "
                        "must exist; run again without it, alone, to bench")
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


def audio(folder: Path, seed: int = 0) -> Path:
    if not folder.exists():
        from speechprune.io.synth import write_corpus

        write_corpus(folder, n_files=24, seconds=(4.0, 8.0), seed=seed)
    return folder


def score_set(work: Path, model: Path, seed: int, args) -> tuple[Path, Path]:
    """(audio folder, analyze scores) of one seed; seed 0 keeps the single set's names."""
    suffix = f"-seed{seed}" if seed else ""
    data, scores = audio(work / f"audio{suffix}", seed), work / f"scores{suffix}.json"
    if not scores.exists():
        speechprune("analyze", str(model), "--data", str(data), "--no-drop-one", "--max-seconds", args.analyze_seconds,
                    "--device", args.device, "--out", str(scores), "--quiet")
    return data, scores


def spread(report: dict, models: dict[str, str]) -> str:
    """Markdown: per budget, the lowest, median and highest speedup and efficiency over its score
    sets (``models``: model folder name -> budget item)."""
    folder_of = {m["label"]: Path(m["source"]).name for m in report["models"]}  # labels carry runtime tags
    by_budget: dict[str, list[dict]] = {}
    for row in report["results"]:
        folder = folder_of[row["model"]]
        if folder in models and row["speedup"] is not None:
            by_budget.setdefault(models[folder], []).append(row)
    lines = ["| budget | score sets | speedup min / median / max | efficiency min / median / max |", "|---|---|---|---|"]
    for item, rows in by_budget.items():
        speedups = sorted(r["speedup"] for r in rows)
        efficiencies = sorted(r["efficiency"] for r in rows)
        lines.append(f"| {item} | {len(rows)} | {speedups[0]:.2f}x / {statistics.median(speedups):.2f}x / "
                     f"{speedups[-1]:.2f}x | {efficiencies[0]:.2f} / {statistics.median(efficiencies):.2f} / "
                     f"{efficiencies[-1]:.2f} |")
    return "\n".join(lines) + "\n"


def runtime_tag(args) -> str:
    """'' in torch float32, else '-onnxruntime-int8' and the like: tables and models of another
    runtime are cached apart from torch's."""
    return "".join(f"-{tag}" for tag in (args.runtime, args.quantize) if tag and tag != "torch")


def runtime_options(args, prefix: str = "--") -> list[str]:
    """bench's options that put a model (prefix "--") or the baseline ("--baseline-") in --runtime, --quantize."""
    return [f"{prefix}runtime", args.runtime] + ([f"{prefix}quantize", args.quantize] if args.quantize else [])


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
    model = Path(args.model) if args.model else base_model(work / "w2v2-base-random")
    seeds = [int(seed) for seed in args.score_seeds.split(",")]
    sets = {seed: score_set(work, model, seed, args) for seed in seeds}
    # the cost table of this machine and setting (latency budgets, and predictions beside measurements)
    deployed = runtime_tag(args)
    table = work / f"cost-table-{args.device}-{args.dtype}-{args.seconds}s-b{args.batch}-t{args.threads}{deployed}.json"
    in_runtime, baseline_in_runtime = runtime_options(args), runtime_options(args, "--baseline-")
    single = "," not in args.dtype + args.seconds + args.batch
    if not single and any("latency" in item for item in args.budgets):
        sys.exit("error: latency budgets need one --dtype, --seconds and --batch (the cost table's setting)")
    if args.stages_only and single and not table.exists():
        sys.exit(f"error: --stages-only times nothing, and {table} is missing; measure it first (without --stages-only)")
    if single and not table.exists():
        speechprune("bench", str(model), "--cost-model", str(table), "--device", args.device, "--dtype", args.dtype,
                    "--seconds", args.seconds, "--batch", args.batch, "--threads", str(args.threads), *in_runtime,
                    "--quiet")
    shrunk, budget_of = [], {}
    rounding = ["--round-to", args.round_to] if args.round_to else []
    if args.round_to == "auto" and not single:
        sys.exit("error: --round-to auto needs one --dtype, --seconds and --batch (the cost table's setting)")
    for item in args.budgets:
        for seed, (data, scores) in sets.items():
            name = item.replace(":", "").replace("+", "-") + (f"-r{args.round_to}" if args.round_to else "") + (
                deployed) + (f"-seed{seed}" if seed else "")
            run, folder = work / "runs" / name, work / "models" / name
            if not (run / "summary.json").exists():
                guide = ["--latency-table", str(table)] if args.round_to == "auto" and "latency" not in item else []
                speechprune("prune", str(model), *budget_options(item, table), *rounding, *guide, "--steps", "0",
                            "--scores", str(scores), "--data", str(data), "--out", str(run), "--overwrite", "--quiet")
            if not (folder / "config.json").exists():
                speechprune("shrink", str(run), "--out", str(folder), "--quiet")
            shrunk.append(str(folder))
            budget_of[folder.name] = item
    if args.stages_only:
        return
    several = len(seeds) > 1  # the spread over score sets is read from the JSON report
    report = speechprune("bench", *shrunk, "--baseline", str(model), *in_runtime, *baseline_in_runtime,
                         "--device", args.device, "--dtype", args.dtype,
                         "--seconds", args.seconds, "--batch", args.batch, "--threads", str(args.threads),
                         "--repeat", str(args.repeat), *(["--latency-table", str(table)] if single else []),
                         *(["--json"] if args.json or several else []), capture=True)
    if args.json or several:
        (work / "bench.json").write_text(report)
    print(report, end="")
    if several:
        print("\n" + spread(json.loads(report), budget_of), end="")


if __name__ == "__main__":
    main()
