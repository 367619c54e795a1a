"""Runtime x precision table: stock and pruned models in torch eager, torch.compile and ONNX
Runtime, float32 and int8, each timed by its own `speechprune bench` call, interleaved with the
stock model in float32 eager torch, so every speedup has the same reference.

    python benchmarks/deployment.py --stock STOCK --models NAME=FOLDER [NAME=FOLDER ...]
    python benchmarks/deployment.py --stock benchmarks/work/speed-budget/w2v2-base-random \\
        --models params=benchmarks/work/speed-budget/models/params0.72 \\
                 speed=benchmarks/work/speed-budget/models/params0.72-macs0.72 --out deployment.md

The models come from `benchmarks/speed_budget.py` (the method's one-shot choices from analyze
scores). int8 is dynamic quantization of the Linear layers (torch) or of MatMul (ONNX Runtime);
with `--calibration AUDIO`, int8-static rows add ONNX Runtime static int8 of the convolutions;
see docs/deploy.md. Benchmark alone: another CPU-heavy process makes the timings lie.

With `--quality DATA` every row also gets its quality, from `speechprune eval` run the way the
row runs (`--quantize int8`, `--runtime onnxruntime`): the probe's test accuracy, its change
against the same model in float32 eager torch, and the cosine of the last hidden state to that
model (eval's `quantization.fidelity`). DATA is a labelled folder (`FOLDER/<label>/*.wav`; eval's
seeded stratified split, or `--quality-test FOLDER`), or the quality benchmark's data folder
(`benchmarks/quality/work/data`): its keywords, trained on the training speakers and tested on
the held-out ones, as the benchmark's keyword probe is. eval does not compile, so the
torch.compile rows take the eager float32 accuracy, and their cosine is measured here: the
compiled forward against the eager one on the test clips.

    python benchmarks/deployment.py --stock benchmarks/quality/work/teacher \
        --models full-0.72=benchmarks/quality/work/models/full-0.72 --seconds 4 \
        --quality benchmarks/quality/work/data --out deployment.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# (runtime label, precision, bench options, eval options; None: eval cannot run it so)
VARIANTS = [
    ("torch eager", "float32", [], []),
    ("torch eager", "int8", ["--quantize", "int8"], ["--quantize", "int8"]),
    ("torch.compile", "float32", ["--compile"], None),
    ("ONNX Runtime", "float32", ["--runtime", "onnxruntime"], ["--runtime", "onnxruntime"]),
    ("ONNX Runtime", "int8", ["--runtime", "onnxruntime", "--quantize", "int8"],
     ["--runtime", "onnxruntime", "--quantize", "int8"]),
]
COMPILE_CLIPS = 16  # test clips the compiled forward is compared on, in one batch


def variants(args) -> list[tuple]:
    """VARIANTS, and ONNX Runtime static int8 (the convolutions too) when there is audio to calibrate
    it on (``--calibration``: bench's ``--data``; eval calibrates on its training clips)."""
    if not args.calibration:
        return VARIANTS
    static = ["--runtime", "onnxruntime", "--quantize", "int8-static"]
    return VARIANTS + [("ONNX Runtime", "int8-static", static + ["--data", args.calibration], static)]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stock", required=True, help="the dense model (reference: float32 eager torch)")
    p.add_argument("--models", nargs="+", default=[], metavar="NAME=FOLDER", help="shrunk model folders")
    p.add_argument("--seconds", default="10")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", help="also write the Markdown table here")
    p.add_argument("--quality", metavar="DATA", help="also probe every row with speechprune eval: a labelled folder, "
                   "or the quality benchmark's data folder (keywords, held-out speakers)")
    p.add_argument("--quality-test", metavar="FOLDER", help="with a labelled --quality folder: its test folder")
    p.add_argument("--calibration", metavar="AUDIO", help="also time ONNX Runtime static int8 (the convolutions "
                   "too), calibrated on this audio (bench --data: 16 clips chosen by the seed)")
    args = p.parse_args()
    if args.quality_test and not args.quality:
        p.error("--quality-test needs --quality")
    return args


def bench(folder: str, stock: str, options: list[str], args) -> dict:
    command = [sys.executable, "-m", "speechprune", "bench", folder, "--baseline", stock, "--device", "cpu",
               "--seconds", args.seconds, "--threads", str(args.threads), "--repeat", str(args.repeat), "--json",
               *options]
    print("$ speechprune " + " ".join(command[3:]), file=sys.stderr, flush=True)
    return json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)


# --- quality --------------------------------------------------------------------------------


def quality_data(args, scratch: Path) -> tuple[str, str | None, str, str]:
    """(--data, --test-data, the metric's name, how the split was made) for eval."""
    data = Path(args.quality).expanduser().resolve()
    if (data / "dataset.json").is_file() and (data / "keywords").is_dir():
        # the quality benchmark: keywords/<word>/<speaker>.wav, split by the speakers' own split
        split = {s["id"]: s["split"] for s in json.loads((data / "dataset.json").read_text())["speakers"]}
        for word in sorted(p for p in (data / "keywords").iterdir() if p.is_dir()):
            for clip in sorted(word.glob("*.wav")):
                part = scratch / ("test" if split[clip.stem] == "test" else "train") / word.name
                part.mkdir(parents=True, exist_ok=True)
                (part / clip.name).symlink_to(clip)
        held = sum(1 for part in split.values() if part == "test")
        return (str(scratch / "train"), str(scratch / "test"), "keyword acc",
                f"keywords of {data}, trained on {len(split) - held} speakers and tested on the {held} held out")
    test = str(Path(args.quality_test).expanduser().resolve()) if args.quality_test else None
    how = f"test clips from {test}" if test else "eval's seeded stratified split (0.25 of each label held out)"
    return str(data), test, "probe acc", f"labels of {data}, {how}"


def evaluate(folder: str, train: str, test: str | None, options: list[str], args) -> dict:
    command = [sys.executable, "-m", "speechprune", "eval", folder, "--data", train,
               *(["--test-data", test] if test else []), "--device", "cpu", "--no-per-layer", "--json", "-q", *options]
    print("$ speechprune " + " ".join(command[3:]), file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}  # torch's threads, and ORT's (eval gives it torch's)
    return json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout)


def compiled_cosine(folder: str, clips_folder: str, threads: int) -> tuple[float, int, int]:
    """(cosine, clips, frames): the last hidden state of the model under torch.compile, as bench
    compiles it, against its eager forward, on COMPILE_CLIPS clips of ``clips_folder`` (spread over
    its labels) cut to one length."""
    import torch

    from speechprune.bench.models import describe, load
    from speechprune.io.audio import load_audio, scan_audio
    from speechprune.io.batches import collate

    model = describe(folder)
    load(model, torch.device("cpu"), threads)
    torch.set_num_threads(threads)
    files = scan_audio(clips_folder, min_seconds=0.1).files
    files = files[:: max(1, len(files) // COMPILE_CLIPS)][:COMPILE_CLIPS]  # spread over the labels
    audio = [load_audio(f, model.sampling_rate) for f in files]
    batch = collate(audio, min(len(a) for a in audio), model.sampling_rate, model.target.normalize)  # no padding
    print(f"compiling {folder} to compare it with eager torch on {len(audio)} clips", file=sys.stderr, flush=True)
    with torch.inference_mode():
        eager = _last(model.forward(batch.waveforms))
        torch._dynamo.reset()
        compiled = _last(torch.compile(model.forward)(batch.waveforms))
    cosine = torch.nn.functional.cosine_similarity(compiled.float(), eager.float(), dim=-1)  # (B, T')
    return float(cosine.mean()), len(audio), cosine.numel()


def _last(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def quality(named: list[tuple[str, str]], args) -> tuple[dict, str, list[str]]:
    """{(model, runtime, precision): (accuracy, change against float32 eager or None, last-layer cosine)},
    the metric's name, and the notes under the table."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="deployment-quality-") as scratch:
        train, test, metric, split = quality_data(args, Path(scratch))
        compile_clips, compiled = None, []
        for name, folder in named:
            reference = None
            for runtime, precision, _, options in variants(args):
                if options is None:  # torch.compile: eager float32's probe, the compiled forward's measured cosine
                    cosine, compile_clips, _ = compiled_cosine(folder, test or train, args.threads)
                    results[(name, runtime, precision)] = (reference, None, cosine)  # None: eager's, reused
                    compiled.append(f"{name} {cosine:.6f}")
                    continue
                report = evaluate(folder, train, test, options, args)
                accuracy = report["probe"]["accuracy"]
                reference = accuracy if not options else reference
                fidelity = report["quantization"]["fidelity"] if report["quantization"] else None
                cosine = fidelity["cosine"][-1] if fidelity else 1.0  # float32 eager: the reference itself
                results[(name, runtime, precision)] = (accuracy, accuracy - reference, cosine)
    notes = [
        f"{metric}: `speechprune eval` probe (SUPERB weighted sum, linear head, seed 0) on {split}, with the model run "
        "as the row says (`--quantize int8`, `--runtime onnxruntime`); in brackets: points against the same model "
        "in float32 eager torch.",
        "cosine: last hidden state against the same model in float32 eager torch, mean over the test clips' real "
        "frames (eval's `quantization.fidelity`); 1 by definition on the float32 eager rows.",
        f"torch.compile float32: eval does not compile, so the {metric} is the eager float32 probe's; the cosine is "
        f"measured: compiled against eager forward on {compile_clips} {'test ' if test else ''}clips cut to one length "
        f"({', '.join(compiled)}).",
    ]
    return results, metric, notes


def main() -> None:
    args = parse_args()
    named = [("stock", args.stock)] + [tuple(item.split("=", 1)) for item in args.models]
    rows = []
    for runtime, precision, options, _ in variants(args):
        # every model under this runtime, the stock one too except where it is the reference itself,
        # each in its own bench call with the reference: another model's ONNX Runtime session in the
        # same process slowed the torch reference (a stock session: 1.0 -> 1.2-1.3 s on 2 cores)
        for name, folder in named:
            if not options and name == "stock":
                continue
            report = bench(folder, args.stock, options, args)
            compiled = "--compile" in options
            by_label = {r["model"]: r for r in report["results"] if r["compiled"] == compiled}
            if not rows:  # the reference row: stock, float32, eager torch, from the first call
                base = by_label[report["baseline"]]
                rows.append(("stock", "torch eager", "float32", base["latency_ms"]["median"], 1.0, [1.0, 1.0]))
            label = next(m["label"] for m in report["models"] if m["label"] != report["baseline"])
            row = by_label[label]
            rows.append((name, runtime, precision, row["latency_ms"]["median"], row["speedup"], row["speedup_spread"]))
    scores, metric, notes = quality(named, args) if args.quality else ({}, None, [])
    columns = ["model", "runtime", "precision", "median ms", "speedup vs stock float32 eager (p10-p90)"]
    columns += [metric, "cosine to float32 torch (last layer)"] if scores else []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, runtime, precision, ms, speedup, spread in rows:
        cells = [name, runtime, precision, f"{ms:.1f}", f"{speedup:.2f}x ({spread[0]:.2f}-{spread[1]:.2f})"]
        if scores:
            accuracy, change, cosine = scores[(name, runtime, precision)]
            cells += [f"{accuracy:.1%} ({'= eager' if change is None else f'{change * 100:+.1f}'})", f"{cosine:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines + ([""] + [f"- {note}" for note in notes] if notes else [])) + "\n"
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
