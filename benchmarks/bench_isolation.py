"""Do models benched together disturb each other? Each model's speedup against the baseline,
measured three ways on the same machine:

- one process (before): every model loaded into this process and timed in interleaved rounds,
  as `bench` did before it had worker processes;
- together (after): one `bench MODEL... --baseline BASE`, each model in a worker process of its own;
- alone: one `bench MODEL --baseline BASE` per model, the reference the other two should match.

    python benchmarks/bench_isolation.py benchmarks/work/speed-budget/models/* \
        --baseline benchmarks/work/speed-budget/w2v2-base-random          # after speed_budget.py
    python benchmarks/bench_isolation.py A B C D --baseline BASE --seconds 10 --threads 2 --json

Isolation holds when "together" is within a few percent of "alone" for every model (issue 19
asks for 3 %). Benchmark alone: another CPU-heavy process makes the timings lie.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from speechprune.bench.job import BenchOptions, bench
from speechprune.bench.models import describe, load
from speechprune.bench.timing import interleaved, speedup


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="models under test (folders or hub ids)")
    p.add_argument("--baseline", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def in_one_process(args) -> list[float]:
    """Speedup of each model with every model and the baseline in this process (the old way)."""
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    models = [describe(source) for source in [args.baseline, *args.models]]
    for model in models:
        load(model, device, args.threads)
    runs = []
    for model in models:
        waveforms = torch.randn(1, round(args.seconds * model.sampling_rate), generator=torch.Generator().manual_seed(0))
        runs.append(lambda forward=model.forward, waveforms=waveforms: forward(waveforms))
    with torch.inference_mode():
        times = interleaved(runs, warmup=args.warmup, repeat=args.repeat, min_time=args.min_time,
                            clock=time.perf_counter, sync=lambda: None)
    return [speedup(times[0], spent)["speedup"] for spent in times[1:]]


def with_bench(args, models: list[str]) -> list[float]:
    """Speedup of each of ``models`` from one `bench` call (worker processes) against the baseline."""
    options = BenchOptions(models=models, baseline=args.baseline, device="cpu", seconds=[args.seconds],
                           threads=args.threads, warmup=args.warmup, repeat=args.repeat, min_time=args.min_time)
    rows = bench(options)["results"]
    return [row["speedup"] for row in rows[1:]]  # the baseline's row first


def main() -> None:
    args = parse_args()
    before = in_one_process(args)
    together = with_bench(args, args.models)
    alone = [with_bench(args, [model])[0] for model in args.models]
    rows = [{"model": model, "one_process": b, "together": t, "alone": a,
             "one_process_vs_alone": b / a - 1, "together_vs_alone": t / a - 1}
            for model, b, t, a in zip(args.models, before, together, alone)]
    if args.json:
        print(json.dumps({"baseline": args.baseline, "seconds": args.seconds, "threads": args.threads,
                          "torch": torch.__version__, "rows": rows}, indent=1))
        return
    print(f"speedup against {args.baseline}, {args.seconds:g} s, batch 1, float32, {args.threads} threads")
    print("| model | one process (before) | together, one process each (after) | alone | before vs alone | after vs alone |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['one_process']:.2f}x | {row['together']:.2f}x | {row['alone']:.2f}x | "
              f"{row['one_process_vs_alone']:+.1%} | {row['together_vs_alone']:+.1%} |")


if __name__ == "__main__":
    main()
