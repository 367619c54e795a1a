"""Size and speed of a shrunk Base-size wav2vec2 against the stock dense model.

A Base-size `transformers.Wav2Vec2Config()` with random weights is pruned to the target in
one shot: every gate gets a random score (seeded), and the budget decision of
`speechprune.decision` keeps the best-scored structures until the exact parameter count
lands on the target. The result is shrunk, written as a model folder, and loaded back with
`speechprune.load`. It is then timed against the stock `transformers.Wav2Vec2Model`, in the
same process, in interleaved rounds (dense, shrunk, dense, shrunk, ...) after warm-up, under
`torch.inference_mode`.

    python benchmarks/shrink_speed.py                          # CPU, 10 s of audio, batch 1, float32
    python benchmarks/shrink_speed.py --device cuda --dtype bfloat16 --batch 8
    python benchmarks/shrink_speed.py --json

Random scores scatter the cuts over every layer and give most heads their own width, which
is the least favourable case for the shrunk model's attention layout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

import speechprune
from speechprune.folders.shrunk import write_model_folder
from speechprune.method.budget import params_budget
from speechprune.method.decision import decide
from speechprune.method.gates import GateLayout
from speechprune.model.families import FAMILIES
from speechprune.shrink.slicing import shrink_encoder


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sparsity", type=float, default=0.72)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", metavar="DIR", help="also save both models as DIR/dense and DIR/shrunk (for speechprune bench)")
    return p.parse_args()


def timed(model, waveforms, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(waveforms)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    config = transformers.Wav2Vec2Config()
    stock = transformers.Wav2Vec2Model(config).eval()
    family = FAMILIES["wav2vec2"]
    spec = family.spec_from_config(config)
    layout = GateLayout(spec)
    scores = torch.randn(layout.size, generator=torch.Generator().manual_seed(args.seed))
    budget = params_budget(spec, layout, args.sparsity)
    decision = decide(layout, [budget], scores)
    small_spec, small_state = shrink_encoder(spec, family.to_encoder_keys(stock.state_dict()), layout,
                                             decision.keep.double())

    with tempfile.TemporaryDirectory() as folder:
        keep = Path(args.keep) if args.keep else Path(folder)
        write_model_folder(keep / "shrunk", small_spec, small_state, dtype="float32", card="benchmark", provenance={},
                           preprocessor={}, overwrite=True)
        shrunk = speechprune.load(keep / "shrunk").eval()
        file_bytes = (keep / "shrunk" / "model.safetensors").stat().st_size
        stock.save_pretrained(keep / "dense")
        dense_bytes = (keep / "dense" / "model.safetensors").stat().st_size

    models = {"dense": stock.to(device, dtype), "shrunk": shrunk.to(device, dtype)}
    waveforms = torch.randn(args.batch, int(args.seconds * 16000), generator=torch.Generator().manual_seed(1))
    waveforms = waveforms.to(device, dtype)
    times = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(args.warmup):
            for model in models.values():
                timed(model, waveforms, device)
        for _ in range(args.rounds):
            for name, model in models.items():
                times[name].append(timed(model, waveforms, device))

    median = {name: statistics.median(t) for name, t in times.items()}
    ratios = sorted(d / s for d, s in zip(times["dense"], times["shrunk"]))
    widths = [sorted(set(layer.head_widths()[0])) for layer in small_spec.layers]
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": args.threads,
        "dtype": args.dtype,
        "input": f"{args.batch} x {args.seconds:g} s",
        "params_dense": sum(p.numel() for p in stock.parameters()),
        "params_shrunk": sum(p.numel() for p in shrunk.parameters()),
        "file_mb_dense": round(dense_bytes / 1e6, 1),
        "file_mb_shrunk": round(file_bytes / 1e6, 1),
        "latency_ms_dense": round(median["dense"] * 1e3, 1),
        "latency_ms_shrunk": round(median["shrunk"] * 1e3, 1),
        "speedup": round(median["dense"] / median["shrunk"], 2),
        "speedup_spread": [round(ratios[0], 2), round(ratios[-1], 2)],
        "shape": {
            "conv_channels": small_spec.conv_channels,
            "heads": [len(layer.heads) for layer in small_spec.layers],
            "ffn_units": [layer.ffn_dim for layer in small_spec.layers],
            "distinct_qk_widths_per_layer": [len(w) for w in widths],
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
