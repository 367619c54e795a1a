"""Does a cost table predict the shapes it has never seen, slow widths included?

Ten shrunk shapes of a Base-size wav2vec2 with random weights (`transformers.Wav2Vec2Config()`),
each cut from the dense model by gate values (`shrink.slicing.shrink_encoder`, as `shrink`
does), and saved as `shrink` saves a model. Three of them are built on purpose inside slow
bands of the oneDNN convolution (docs/bench.md, "Reading the steps"): conv layer 1 at 266 and
304 channels (17 and 19 blocks of 16) and conv layer 2 at 368 (23 blocks). One interleaved
`speechprune bench --latency-table T` times them against the stock model; the report adds, for
each shape, the same table's prediction without its width steps (the smooth fit alone), so
what the steps buy is visible.

    python benchmarks/step_predictions.py --work /tmp/sb               # CPU, 10 s, batch 1, all cores
    python benchmarks/step_predictions.py --work /tmp/sb --threads 2 --repeat 7 --json

The model, its cost table (measured first, with the setting's `bench --cost-model`, if the
folder lacks it: the name `speed_budget.py` gives it) and the shapes are cached in --work.
Benchmark alone: another CPU-heavy process makes the timings lie.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from speed_budget import base_model, speechprune

LAYERS = 12
# name: (conv channels per layer, per transformer layer (heads, q/k dims, v/o dims, FFN units);
# 0 heads removes the attention block, 0 units the FFN block)
SHAPES = {
    "ffn2048": ([512] * 7, [(12, 64, 64, 2048)] * LAYERS),
    "like-macs72": ([432, 256, 384, 448, 512, 512, 512],
                    [(0, 0, 0, 0), (0, 0, 0, 1328), (0, 0, 0, 0), (4, 64, 64, 1232), (0, 0, 0, 1248),
                     (0, 0, 0, 1248), (0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 1216), (3, 64, 64, 1184),
                     (2, 64, 64, 0), (0, 0, 0, 0)]),
    "slow-conv1-266": ([432, 266, 384, 448, 512, 512, 512], None),  # None: like-macs72's layers
    "slow-conv1-304": ([432, 304, 384, 448, 512, 512, 512], None),
    "slow-conv2-368": ([432, 256, 368, 448, 512, 512, 512], None),
    "conv384-heads6": ([384] * 7, [(6, 64, 64, 1024)] * 6 + [(0, 0, 0, 1024)] * 6),
    "conv256-no-attention": ([256] * 7, [(0, 0, 0, 768)] * LAYERS),
    "fine-heads": ([512] * 7, [(12, 32, 48, 3072)] * LAYERS),
    "conv320-half-ffn": ([320] * 7, [(12, 64, 64, 512 if l % 2 else 0) for l in range(LAYERS)]),
    "conv448-heads8": ([512] + [448] * 6, [(8, 64, 64, 2560)] * LAYERS),
}
SLOW = ("slow-conv1-266", "slow-conv1-304", "slow-conv2-368")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="benchmarks/work/speed-budget", help="cache folder (shared with speed_budget.py)")
    p.add_argument("--seconds", default="10")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads of bench")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--json", action="store_true", help="also write the bench report to WORK/step-predictions.json")
    return p.parse_args()


def shape_values(layout, conv: list[int], layers: list[tuple[int, int, int, int]]):
    """Gate values (0/1) that keep the first ``conv[c]`` channels of each conv layer and, per
    transformer layer, the first heads, q/k and v/o dims and FFN units."""
    values = layout.values(torch.ones(layout.size, dtype=torch.float64))
    for c, channels in enumerate(conv):
        values.get("conv", c)[channels:] = 0
    for l, (heads, qk, vo, units) in enumerate(layers):
        if heads == 0:
            values.get("mha", l).zero_()
        values.get("head", l)[heads:] = 0
        values.get("qk", l)[:, qk:] = 0
        values.get("vo", l)[:, vo:] = 0
        if units == 0:
            values.get("ffn", l).zero_()
        values.get("int", l)[units:] = 0
    return values


def write_shapes(model: Path, folder: Path) -> dict[str, Path]:
    """Every shape of SHAPES as a shrunk model folder under ``folder`` (kept when present)."""
    from speechprune.folders.shrunk import write_model_folder
    from speechprune.method.gates import GateLayout
    from speechprune.model.loading import inspect_model, load_encoder
    from speechprune.shrink.slicing import shrink_encoder

    dense = None
    paths = {}
    for name, (conv, layers) in SHAPES.items():
        paths[name] = out = folder / name
        if (out / "config.json").exists():
            continue
        dense = dense or load_encoder(inspect_model(str(model))).encoder
        layout = GateLayout(dense.spec)
        values = shape_values(layout, conv, layers or SHAPES["like-macs72"][1])
        small, state = shrink_encoder(dense.spec, dense.state_dict(), layout, values.flat)
        write_model_folder(out, small, state, dtype="float32", card=f"# {name}\n\nA shape of step_predictions.py.\n",
                           provenance={"shape": name}, preprocessor={"sampling_rate": 16000, "do_normalize": True,
                                                                     "return_attention_mask": False})
    return paths


def smooth_ms(table, folder: Path) -> float:
    """The table's prediction for the model in ``folder`` without its width steps."""
    from dataclasses import replace

    from speechprune.folders.target import read_target
    from speechprune.method.latency import predict_ms

    return predict_ms(replace(table, widths=None), read_target(str(folder)).spec)  # no widths: the smooth fit


def main() -> None:
    args = parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = base_model(work / "w2v2-base-random")
    table_path = work / f"cost-table-cpu-float32-{args.seconds}s-b1-t{args.threads}.json"
    if not table_path.exists():
        speechprune("bench", str(model), "--cost-model", str(table_path), "--device", "cpu", "--seconds", args.seconds,
                    "--threads", str(args.threads), "--quiet")
    shapes = write_shapes(model, work / "shapes")
    report = json.loads(speechprune("bench", *map(str, shapes.values()), "--baseline", str(model), "--device", "cpu",
                                    "--seconds", args.seconds, "--threads", str(args.threads), "--repeat",
                                    str(args.repeat), "--latency-table", str(table_path), "--json", capture=True))
    if args.json:
        (work / "step-predictions.json").write_text(json.dumps(report, indent=2) + "\n")
    from speechprune.method.latency import CostTable

    table = CostTable.read(str(table_path))
    rows = ["| shape | conv channels | GMACs | measured ms | predicted ms (error) | without steps (error) |",
            "|---|---|---|---|---|---|"]
    errors = {"steps": [], "smooth": []}
    for result in report["results"]:
        name = result["model"]
        if name not in shapes:  # the baseline
            continue
        measured, predicted = result["latency_ms"]["median"], result["predicted_ms"]
        smooth = smooth_ms(table, shapes[name])
        errors["steps"].append(abs(predicted / measured - 1))
        errors["smooth"].append(abs(smooth / measured - 1))
        label = f"**{name}**" if name in SLOW else name
        rows.append(f"| {label} | {SHAPES[name][0]} | {result['macs'] / 1e9:.2f} | {measured:.1f} | {predicted:.1f} "
                    f"({predicted / measured - 1:+.1%}) | {smooth:.1f} ({smooth / measured - 1:+.1%}) |")
    print("\n".join(rows))
    for kind, values in errors.items():
        print(f"{kind}: median |error| {statistics.median(values):.1%}, largest {max(values):.1%}")


if __name__ == "__main__":
    main()
