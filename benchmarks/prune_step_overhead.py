"""Overhead of one gated prune step over a plain distillation step (acceptance: <= 1.3x).

Both steps run on the same Base-size wav2vec2 architecture (``transformers.Wav2Vec2Config()``
defaults, random weights) and the same fixed-seed batch of noise:

* gated step: teacher forward (no grad, ``speechprune.prune.step.teacher_pass``) + the prune
  run's own step, ``speechprune.prune.step.train_step`` (prune phase, float32): ``GatedStudent``
  forward/backward with sampled hard-concrete STE gates on every structure (conv, mha, head,
  qk, vo, ffn, int) + the expected-size Lagrangian term + gradient clipping + AdamW step +
  multiplier step;
* plain step: teacher forward (no grad) + the same ``Encoder`` with ``masks=None``
  forward/backward + the same distillation heads and ``distill_loss`` + gradient clipping
  + AdamW step.

The steps are interleaved (gated, plain, gated, plain, ...) after warm-up so drift (thermal,
noisy neighbours) hits both alike; the report gives median and p90 of each, the ratio of
the medians and the spread of the per-round ratios, plus a per-phase breakdown (teacher,
student forward + loss, backward, optimizer).

    python benchmarks/prune_step_overhead.py                 # timing, ~3 min on 2 idle CPU cores
    python benchmarks/prune_step_overhead.py --json          # one JSON document on stdout
    python benchmarks/prune_step_overhead.py --profile       # torch.profiler of one gated (and one plain) step
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time

import torch

from speechprune.io.batches import Batch
from speechprune.method.distill import distill_loss
from speechprune.method.gates import GATE_KINDS, GateLayout
from speechprune.model.encoder import Encoder
from speechprune.model.families import FAMILIES
from speechprune.prune.config import PruneConfig
from speechprune.prune.distributed import Distributed
from speechprune.prune.job import build_budgets
from speechprune.prune.step import GRAD_CLIP, build_optimizers, build_student, teacher_pass, train_step

PHASES = ("teacher", "forward", "backward", "optimizer")


def parse_args(argv=None):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2, help="waveforms per batch (default 2)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds of audio per waveform (default 4)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--threads", type=int, default=cores, help=f"torch.set_num_threads (default all cores: {cores})")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps of each kind (default 3)")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds of one gated + one plain step (default 20)")
    p.add_argument("--structures", default=",".join(GATE_KINDS), help="gated structures (default all)")
    p.add_argument("--relaxed", action="store_true", help="relaxed hard-concrete gates instead of STE")
    p.add_argument("--params-only", action="store_true",
                   help="Lagrangian term of the parameter budget only (default: parameters and MACs, 0.7 each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS measurement during warm-up")
    p.add_argument("--json", action="store_true", help="print one JSON document (progress goes to stderr)")
    p.add_argument("--profile", action="store_true",
                   help="after warm-up, profile one gated and one plain step; print top ops by self CPU time")
    p.add_argument("--top", type=int, default=15, help="rows of the profile tables (default 15)")
    p.add_argument("--shapes", action="store_true", help="with --profile: also group ops by input shape")
    return p.parse_args(argv)


def _usage(cpu0: float, faults0: int, wall: float) -> dict:
    cpu = time.process_time() - cpu0
    # CPU time / (wall x threads): ~1 when the threads had the cores to themselves
    return {"cpu": cpu, "faults": _faults() - faults0, "share": cpu / (wall * torch.get_num_threads())}


def _faults() -> int:
    """Minor page faults of this process so far (fresh memory touched: big temporaries cost this)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Bench:
    """The teacher, the two students with their optimizers, and one fixed batch."""

    def __init__(self, args):
        import transformers

        torch.manual_seed(args.seed)
        hf_config = transformers.Wav2Vec2Config()
        self.family = FAMILIES["wav2vec2"]
        self.spec = self.family.spec_from_config(hf_config)
        # weights do not matter for time: a random-init Encoder, as the loaded one would be
        self.teacher = Encoder(self.spec).eval().requires_grad_(False)
        # as loading.inspect_model: Base (group-norm) models get no attention mask
        self.use_attention_mask = hf_config.feat_extract_norm == "layer"

        self.config = PruneConfig(model="bench", sparsity=0.7, macs_sparsity=None if args.params_only else 0.7,
                                  data="-", out="-",
                                  structures=args.structures.split(","), ste=not args.relaxed, seed=args.seed)
        self.config.validate()
        self.config.resolve(len(self.spec.layers))
        self.layout = GateLayout(self.spec, self.config.structures)
        self.budgets = build_budgets(self.config, self.spec, self.layout, args.sample_rate)
        self.step_index = self.config.warmup_steps // 2  # mid-ramp: a non-trivial target and lr = lr
        self.device, self.ranks = torch.device("cpu"), Distributed()

        # gated student: built by the same functions Pruning uses
        self.gated = build_student(self.teacher, self.layout, self.config)
        self.gates = self.gated.gates
        self.lambdas = torch.zeros(len(self.budgets), 2, requires_grad=True)
        self.gated_optimizers = build_optimizers(self.gated, self.lambdas, self.config, self.device)

        # plain student: the same student and heads, called without gates (masks=None)
        plain = build_student(self.teacher, self.layout, self.config)
        self.plain, self.plain_heads = plain.student, plain.heads
        plain_optimizers = build_optimizers(plain, torch.zeros(2, requires_grad=True), self.config, self.device)
        self.plain_weights, self.plain_opt = plain_optimizers.weights, plain_optimizers.optimizer

        g = torch.Generator().manual_seed(args.seed)
        samples = int(round(args.seconds * args.sample_rate))
        w = torch.randn(args.batch, samples, generator=g)
        waveforms = (w - w.mean(-1, keepdim=True)) / (w.std(-1, keepdim=True) + 1e-7)
        padding = torch.ones(args.batch, samples, dtype=torch.long)
        self.batch = Batch(waveforms, padding, args.batch * args.seconds)
        self.audio_seconds = args.batch * args.seconds
        self.gated_count = 0

    def _teacher(self):
        return teacher_pass(self.teacher, self.batch, self.device, use_attention_mask=self.use_attention_mask,
                            precision=self.config.precision)

    def gated_step(self) -> dict:
        """The prune run's step (prune phase, float32), minus data loading and logging to disk."""
        c0, f0 = time.process_time(), _faults()
        t0 = time.perf_counter()
        batch = self._teacher()
        t1 = time.perf_counter()
        self.gated_count += 1
        ends = {}
        # steps past mid-ramp: a fresh gate sample each step, the target about the same
        train_step(self.gated, self.gates, self.budgets, self.lambdas, self.gated_optimizers, batch,
                   step=self.step_index + self.gated_count, phase="prune", config=self.config, ranks=self.ranks,
                   mark=lambda part: ends.__setitem__(part, time.perf_counter()))
        t4 = time.perf_counter()
        t2, t3 = ends["forward"], ends["backward"]
        return {"total": t4 - t0, "teacher": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3,
                **_usage(c0, f0, t4 - t0)}

    def plain_step(self) -> dict:
        c0, f0 = time.process_time(), _faults()
        t0 = time.perf_counter()
        batch = self._teacher()
        t1 = time.perf_counter()
        out = self.plain(batch.waveforms, batch.model_mask, None)
        distill, pairs = distill_loss(out.hidden_states, batch.teacher.hidden_states, self.plain_heads,
                                      self.config.distill_weights, batch.frame_mask)
        pairs = torch.stack(pairs).detach()
        loss = distill.float()
        t2 = time.perf_counter()
        self.plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.plain_weights, GRAD_CLIP)
        self.plain_opt.step()
        _ = (loss.item(), distill.item(), pairs.tolist())
        t4 = time.perf_counter()
        return {"total": t4 - t0, "teacher": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3,
                **_usage(c0, f0, t4 - t0)}


class PeakRSS:
    """Peak resident memory during a block, sampled from /proc/self/statm (Linux), as a delta."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.delta = self.peak - self.start


def brief(t: dict) -> str:
    return (f"{t['total']:.3f} s (" + " ".join(f"{ph[0]} {t[ph]:.2f}" for ph in PHASES)
            + f"; {t['faults'] / 1000:.0f}k faults, cpu share {t['share']:.2f})")


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc), so peak-RSS deltas do not depend on order."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def quantile(values, q):
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(samples: list[dict]) -> dict:
    out = {}
    for key in ("total", *PHASES, "cpu", "faults"):
        values = [s[key] for s in samples]
        out[key] = {"median": statistics.median(values), "p90": quantile(values, 0.9),
                    "min": min(values), "max": max(values)}
    return out


def run_profile(bench: Bench, top: int, shapes: bool) -> None:
    from torch.profiler import ProfilerActivity, profile

    tables, shaped = {}, {}
    for name, step in (("gated", bench.gated_step), ("plain", bench.plain_step)):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=shapes) as prof:
            step()
        tables[name] = prof.key_averages()
        if shapes:
            shaped[name] = prof.key_averages(group_by_input_shape=True)
    gated = tables["gated"]
    total = sum(e.self_cpu_time_total for e in gated) / 1e3
    print(f"\n== gated step: top {top} ops by self CPU time (total self CPU {total:.0f} ms) ==")
    print(gated.table(sort_by="self_cpu_time_total", row_limit=top))

    # where the extra time goes: per-op self CPU, gated minus plain
    def by_key(events):
        return {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in events}

    g, p = by_key(tables["gated"]), by_key(tables["plain"])
    plain_total = sum(v[0] for v in p.values())
    rows = sorted(((g.get(k, (0, 0))[0] - p.get(k, (0, 0))[0], k) for k in set(g) | set(p)), reverse=True)
    print(f"== self CPU per op, gated minus plain (gated {total:.0f} ms, plain {plain_total:.0f} ms, "
          f"diff {total - plain_total:+.0f} ms): top {top} ==")
    print(f"{'op':<48}{'gated ms':>10}{'plain ms':>10}{'diff ms':>10}{'calls g/p':>14}")
    for diff, key in rows[:top]:
        gm, gc = g.get(key, (0.0, 0))
        pm, pc = p.get(key, (0.0, 0))
        print(f"{key[:47]:<48}{gm:>10.1f}{pm:>10.1f}{diff:>+10.1f}{f'{gc}/{pc}':>14}")
    if shapes:
        def by_shape(events):
            return {(e.key, str(e.input_shapes)): (e.self_cpu_time_total / 1e3, e.count) for e in events}

        g, p = by_shape(shaped["gated"]), by_shape(shaped["plain"])
        rows = sorted(((g.get(k, (0, 0))[0] - p.get(k, (0, 0))[0], k) for k in set(g) | set(p)), reverse=True)
        print(f"\n== self CPU per op and input shapes, gated minus plain: top {top} ==")
        print(f"{'op':<28}{'input shapes':<52}{'gated ms':>10}{'plain ms':>10}{'diff ms':>10}{'calls g/p':>12}")
        for diff, (key, shape) in rows[:top]:
            gm, gc = g.get((key, shape), (0.0, 0))
            pm, pc = p.get((key, shape), (0.0, 0))
            print(f"{key[:27]:<28}{shape[:51]:<52}{gm:>10.1f}{pm:>10.1f}{diff:>+10.1f}{f'{gc}/{pc}':>12}")


CLEAN_SHARE = 0.9  # a step whose process got less than this share of its threads' CPU time competed with others


def main(argv=None) -> int:
    args = parse_args(argv)
    out = sys.stderr if args.json else sys.stdout

    def log(*a):
        print(*a, file=out, flush=True)

    torch.set_num_threads(args.threads)
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    log(f"torch {env['torch']}, threads {env['threads']} (interop {env['interop_threads']}), "
        f"python {env['python']}, {env['cores']} cores; load average {load_average()}")

    env_load = load_average()
    bench = Bench(args)
    n_student = sum(p.numel() for p in bench.plain.parameters())
    log(f"wav2vec2 Base config (random weights): {len(bench.spec.layers)} layers, {bench.spec.hidden_size} hidden, "
        f"{n_student / 1e6:.1f}M params; {bench.layout.size} gates ({','.join(bench.layout.kinds)}, "
        f"{'STE' if bench.config.ste else 'relaxed'}); distill layers {bench.config.distill_layers}; "
        f"batch {args.batch} x {args.seconds:g} s; attention mask {'yes' if bench.use_attention_mask else 'no'}")

    memory = {}
    for i in range(args.warmup):
        for name, step in (("gated", bench.gated_step), ("plain", bench.plain_step)):
            measure = not args.no_memory and i == args.warmup - 1 and os.path.exists("/proc/self/statm")
            if measure:
                trim_heap()
                with PeakRSS() as rss:
                    t = step()
                memory[name] = rss.delta
            else:
                t = step()
            log(f"warm-up {i + 1}/{args.warmup} {name}: {brief(t)}")

    if args.profile:
        run_profile(bench, args.top, args.shapes)
        return 0

    gated, plain, ratios = [], [], []
    for r in range(args.rounds):
        # alternate which kind goes first, so neither always follows the other
        order = ((("gated", bench.gated_step), ("plain", bench.plain_step)) if r % 2 == 0
                 else (("plain", bench.plain_step), ("gated", bench.gated_step)))
        times = {}
        for name, step in order:
            times[name] = step()
        gated.append(times["gated"])
        plain.append(times["plain"])
        ratios.append(times["gated"]["total"] / times["plain"]["total"])
        log(f"round {r + 1}/{args.rounds}: gated {brief(times['gated'])}, plain {brief(times['plain'])}, "
            f"ratio {ratios[-1]:.3f}, load {load_average().split()[0]}")

    g, p = summarize(gated), summarize(plain)
    clean = [i for i in range(len(ratios)) if min(gated[i]["share"], plain[i]["share"]) >= CLEAN_SHARE]
    if clean:
        cg = statistics.median(gated[i]["total"] for i in clean)
        cp = statistics.median(plain[i]["total"] for i in clean)
        clean_result = {"rounds": len(clean), "gated_median": cg, "plain_median": cp, "ratio_of_medians": cg / cp,
                        "per_round_ratio_median": statistics.median(ratios[i] for i in clean),
                        "per_round_ratio_min": min(ratios[i] for i in clean),
                        "per_round_ratio_max": max(ratios[i] for i in clean)}
    else:
        clean_result = {"rounds": 0}
    ratio = g["total"]["median"] / p["total"]["median"]
    cpu_ratio = g["cpu"]["median"] / p["cpu"]["median"]
    load_end = load_average()
    spread = {"min": min(ratios), "p10": quantile(ratios, 0.1), "median": statistics.median(ratios),
              "p90": quantile(ratios, 0.9), "max": max(ratios)}
    result = {
        "benchmark": "prune_step_overhead",
        "env": env,
        "setup": {"family": "wav2vec2", "config": "Wav2Vec2Config() defaults", "params": n_student,
                  "gates": bench.layout.size, "structures": list(bench.layout.kinds), "ste": bench.config.ste,
                  "distill_layers": bench.config.distill_layers, "batch": args.batch, "seconds": args.seconds,
                  "warmup": args.warmup, "rounds": args.rounds, "seed": args.seed},
        "gated_s": g,
        "plain_s": p,
        "ratio_of_medians": ratio,
        "cpu_time_ratio_of_medians": cpu_ratio,
        "uncontended": {"min_cpu_share": CLEAN_SHARE, **clean_result},
        "load_average": {"start": env_load, "end": load_end},
        "per_round_ratio": spread,
        "target": 1.3,
        "pass": ratio <= 1.3,
        "audio_seconds_per_second": {"gated": bench.audio_seconds / g["total"]["median"],
                                     "plain": bench.audio_seconds / p["total"]["median"]},
        "peak_rss_delta_mb": {k: v / 2**20 for k, v in memory.items()} or None,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print()
    print(f"{'seconds per step':<18}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}")
    for name, s in (("gated", g), ("plain", p)):
        t = s["total"]
        print(f"{name:<18}{t['median']:>9.3f}{t['p90']:>9.3f}{t['min']:>9.3f}{t['max']:>9.3f}")
    print(f"\nmedian by phase (s){'':<1}" + "".join(f"{ph:>11}" for ph in PHASES))
    for name, s in (("gated", g), ("plain", p)):
        print(f"{name:<20}" + "".join(f"{s[ph]['median']:>11.3f}" for ph in PHASES))
    print(f"{'gated - plain':<20}" + "".join(f"{g[ph]['median'] - p[ph]['median']:>+11.3f}" for ph in PHASES))
    print(f"process CPU time per step (median): gated {g['cpu']['median']:.3f} s, plain {p['cpu']['median']:.3f} s, "
          f"ratio {cpu_ratio:.3f}")
    print(f"minor page faults per step (median): gated {g['faults']['median']:,.0f}, plain {p['faults']['median']:,.0f}")
    print(f"\nratio of medians (gated / plain): {ratio:.3f}  (target <= 1.3: {'PASS' if ratio <= 1.3 else 'FAIL'})")
    print(f"per-round ratios: min {spread['min']:.3f}, p10 {spread['p10']:.3f}, median {spread['median']:.3f}, "
          f"p90 {spread['p90']:.3f}, max {spread['max']:.3f}  ({args.rounds} rounds)")
    if clean_result["rounds"]:
        c = clean_result
        print(f"uncontended rounds only (cpu share >= {CLEAN_SHARE} in both steps: {c['rounds']}/{args.rounds}): "
              f"gated {c['gated_median']:.3f} s, plain {c['plain_median']:.3f} s, ratio of medians "
              f"{c['ratio_of_medians']:.3f}, per-round ratios {c['per_round_ratio_min']:.3f}.."
              f"{c['per_round_ratio_max']:.3f} (median {c['per_round_ratio_median']:.3f})")
    if clean_result["rounds"] < args.rounds:
        print(f"WARNING: {args.rounds - clean_result['rounds']} of {args.rounds} rounds competed with other processes "
              f"for the CPU (load average {env_load} -> {load_end}); medians and interleaving absorb some of it, "
              "rerun on an idle machine for a clean number")
    if memory:
        print("peak RSS delta during one warm-up step: "
              + ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in memory.items())
              + f"; process max RSS {result['max_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
