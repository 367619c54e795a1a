"""How much of a shrunk model's speedup is speechprune's runtime rather than pruning: the same
dense weights timed in stock transformers and in speechprune's encoder (the code every shrunk
folder runs), in interleaved rounds after warm-up, under `torch.inference_mode`.

    python benchmarks/runtime_gain.py                                   # Base-size, random weights
    python benchmarks/runtime_gain.py --model facebook/wav2vec2-base --seconds 10 --json

Every speedup `bench` reports is against stock transformers, so this factor is inside them;
divide by it for the gain of pruning alone. Benchmark alone: another CPU-heavy process makes
the timings lie.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import transformers

from speechprune.bench.timing import interleaved, speedup
from speechprune.model.loading import inspect_model, load_encoder


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="benchmarks/work/speed-budget/w2v2-base-random",
                   help="hub id or folder (default: the Base-size model of benchmarks/speed_budget.py)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    info = inspect_model(args.model)
    loaded = load_encoder(info)
    stock = getattr(transformers, info.family.base_class).from_pretrained(args.model).eval()
    waveform = torch.randn(1, round(args.seconds * info.audio.sampling_rate), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        difference = (stock(waveform).last_hidden_state - loaded.encoder(waveform).last_hidden_state).abs().max()
        times = interleaved([lambda: stock(waveform), lambda: loaded.encoder(waveform)], warmup=2,
                            repeat=args.repeat, min_time=1.0, clock=time.perf_counter, sync=lambda: None)
    estimates = speedup(times[0], times[1])
    report = {
        "model": args.model, "seconds": args.seconds, "threads": args.threads, "torch": torch.__version__,
        "stock_ms": statistics.median(times[0]) * 1e3, "speechprune_ms": statistics.median(times[1]) * 1e3,
        "runtime_gain": estimates["speedup"], "spread": estimates["speedup_spread"], "max_abs_difference": float(difference),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{args.model}, {args.seconds:g} s, batch 1, float32, {args.threads} threads: stock transformers "
              f"{report['stock_ms']:.0f} ms, speechprune runtime {report['speechprune_ms']:.0f} ms: "
              f"{report['runtime_gain']:.2f}x ({report['spread'][0]:.2f}-{report['spread'][1]:.2f}); "
              f"outputs differ by at most {difference:.1e}")


if __name__ == "__main__":
    main()
