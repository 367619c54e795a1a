"""Training throughput (audio seconds per second of a prune step) with and without drawing the
next batch on a background thread (`speechprune prune --prefetch`, the default, against
`--no-prefetch`), through the command line.

A Base-size wav2vec2 with random weights is pruned for a few steps on generated speech, in two
corpora: 16 kHz WAV (LibriSpeech-like: reading is cheap) and 48 kHz FLAC (decoding and
resampling to 16 kHz cost more). Runs alternate A B B A per corpus, and the figure is the median
`audio_seconds_per_second` of metrics.jsonl over the steps after the first two. The batches are
the same either way (tests/test_audio.py checks it), so only the time changes.

    python benchmarks/prefetch.py                          # CPU, 4 s crops, 16 s batches, 6 steps
    python benchmarks/prefetch.py --device cuda --steps 30 --batch-seconds 64

Benchmark alone: another CPU-heavy process makes the timings lie.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_budget import base_model  # noqa: E402  (the same Base-size random model)

CORPORA = {"16 kHz WAV": (16000, "WAV"), "48 kHz FLAC": (48000, "FLAC")}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="benchmarks/work/prefetch", help="cache of the model and the audio")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--crop-seconds", default="4")
    p.add_argument("--batch-seconds", default="16")
    p.add_argument("--files", type=int, default=60, help="files per corpus, 20 s each")
    return p.parse_args()


def corpus(folder: Path, rate: int, fmt: str, files: int) -> Path:
    if not folder.exists():
        from speechprune.io.synth import speechlike

        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(files):
            sf.write(folder / f"{i:03d}.{fmt.lower()}", speechlike(20.0, rate, rng), rate, format=fmt)
    return folder


def throughput(model: Path, data: Path, prefetch: bool, args) -> float:
    with tempfile.TemporaryDirectory(prefix="speechprune-prefetch-") as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "speechprune", "prune", str(model), "--sparsity", "0.5", "--data", str(data),
                   "--steps", str(args.steps), "--crop-seconds", args.crop_seconds, "--batch-seconds",
                   args.batch_seconds, "--device", args.device, "--out", str(out), "-q",
                   "--prefetch" if prefetch else "--no-prefetch"]
        print("$ speechprune " + " ".join(command[3:]), file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(m["audio_seconds_per_second"] for m in metrics[2:] if m["phase"] == "prune")


def main() -> None:
    args = parse_args()
    work = Path(args.work)
    model = base_model(work / "w2v2-base-random")
    rows = []
    for name, (rate, fmt) in CORPORA.items():
        data = corpus(work / f"audio-{rate}-{fmt.lower()}", rate, fmt, args.files)
        runs = {True: [], False: []}
        for prefetch in (False, True, True, False):  # A B B A: drift hits both alike
            runs[prefetch].append(throughput(model, data, prefetch, args))
        off, on = statistics.mean(runs[False]), statistics.mean(runs[True])
        rows.append(f"| {name} | {off:.1f} | {on:.1f} | {on / off:.2f}x |")
    print(f"audio s/s of a Base prune step ({args.device}, {args.crop_seconds} s crops, {args.batch_seconds} s "
          f"batches, median of steps 3-{args.steps}, mean of two runs each)")
    print("| corpus | --no-prefetch | --prefetch | ratio |\n|---|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
