"""How fast `speechprune.io.synth.speechlike` makes speech-like audio: the demo's and the tests'
corpora are generated on the fly, so 10 s of audio should take well under half a second on one
core (it filters frame by frame in the frequency domain, with no loop over samples).

    python benchmarks/synth_speed.py                 # 10 s at 16 kHz, median of 5 runs
    python benchmarks/synth_speed.py --seconds 60 --repeat 3

Benchmark alone: another CPU-heavy process makes the timings lie.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from speechprune.io.synth import speechlike


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio seconds per call")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    times = []
    for seed in range(args.repeat):
        start = time.perf_counter()
        speechlike(args.seconds, args.sample_rate, np.random.default_rng(seed))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"{args.seconds:g} s of speech-like audio at {args.sample_rate} Hz: {median * 1e3:.0f} ms "
          f"(median of {args.repeat}; {args.seconds / median:.0f}x real time)")


if __name__ == "__main__":
    main()
