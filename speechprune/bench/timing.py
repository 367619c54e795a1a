"""How bench measures: seconds per call in interleaved rounds, the speedup and its spread, peak
memory per call, the time of each part of the forward pass, and the CPU that other processes
took meanwhile. Also used by ``cost_model``, which times parts of the encoder the same way."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

UNSTEADY = 0.03  # ratio of medians this far from the per-round ratios: rounds ran in different states
PARTS = ("cnn", "projection", "pos_conv", "layers")  # --breakdown; "other" is the rest of the forward


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu" and sys.platform.startswith("linux"):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine()


def device_sync(device: torch.device) -> Callable[[], None]:
    """What waits for ``device`` to finish its queued work (CUDA and MPS run asynchronously)."""
    return {"cuda": lambda: torch.cuda.synchronize(device), "mps": torch.mps.synchronize}.get(device.type, lambda: None)


def interleaved(runs: list[Callable[[], object]], *, warmup: int, repeat: int, min_time: float,
                clock: Callable[[], float], sync: Callable[[], None], paced_by: int | None = None) -> list[list[float]]:
    """Seconds per call of each of ``runs`` in this process, timed in ``rounds``. ``sync`` waits for
    the device (CUDA kernels are asynchronous), before the clock is read on both ends."""
    for _ in range(warmup):
        for run in runs:
            run()
    sync()
    return rounds([lambda run=run: timed_call(run, clock, sync) for run in runs], warmup=0, repeat=repeat,
                  min_time=min_time, paced_by=paced_by)


def rounds(timers: list[Callable[[], float]], *, warmup: int, repeat: int, min_time: float,
           paced_by: int | None = None) -> list[list[float]]:
    """Seconds per call of each of ``timers`` (each times one call of its model and returns its
    seconds), in rounds: timers[0], timers[1], ..., timers[0], ..., after ``warmup`` untimed rounds.

    At least ``repeat`` rounds, and more until each has ``min_time`` seconds timed, so that short
    calls are repeated until their median is stable; with ``paced_by``, until that timer has (the
    longest call of a width sweep: its short widths are compared per round, not by their medians).

    With several timers, each timed call follows an untimed call of the same model, so that it
    runs as a model called back to back does, not as the other models left the machine: their
    thread pools still spinning on the cores, its own asleep, its weights out of the caches. A
    small student timed in turn with eight other models at 2 threads took 16-18 ms without it, 9 ms
    with it.
    """
    for _ in range(warmup):
        for timer in timers:
            timer()
    times: list[list[float]] = [[] for _ in timers]
    paced = times if paced_by is None else [times[paced_by]]
    while len(times[0]) < repeat or min(sum(t) for t in paced) < min_time:
        for timer, spent in zip(timers, times):
            if len(timers) > 1:
                timer()
            spent.append(timer())
    return times


def timed_call(run: Callable[[], object], clock: Callable[[], float], sync: Callable[[], None]) -> float:
    """Seconds of one call of ``run``, the device synchronised before the clock is read at its end."""
    start = clock()
    run()
    sync()
    return clock() - start


def speedup(baseline: list[float], model: list[float]) -> dict:
    """How many times faster ``model`` ran than ``baseline``, from the same interleaved rounds, as
    the report's fields.

    ``speedup`` is the median of the per-round ratios (baseline / model of one round): a round's
    two calls ran seconds apart, in the same state of the machine, so a state shared by a round
    cancels. The ratio of medians (``speedup_of_medians``) does not: on a machine that switches
    speed between rounds, the baseline's median and the model's can each land in another state.
    The two agree in a steady run; ``speedup_spread`` is the 10th and 90th percentiles of the
    per-round ratios.
    """
    ratios = [b / m for b, m in zip(baseline, model)]
    return {"speedup": statistics.median(ratios),
            "speedup_spread": [float(p) for p in np.percentile(ratios, [10, 90])],
            "speedup_of_medians": statistics.median(baseline) / statistics.median(model)}


def unsteady(estimates: dict, tolerance: float = UNSTEADY) -> bool:
    """Whether ``estimates`` (``speedup``'s) say the machine changed speed between rounds: the ratio
    of medians more than ``tolerance`` away from the median of per-round ratios."""
    return abs(estimates["speedup_of_medians"] / estimates["speedup"] - 1) > tolerance


def peak_memory(run: Callable[[], object], device: torch.device) -> int | None:
    """Bytes of memory one call adds at its peak: allocated GPU memory, or resident CPU memory
    (Linux: the kernel's high-water mark, reset just before). None where it cannot be measured."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu" or not os.path.exists("/proc/self/clear_refs"):
        return None
    _release_free_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    except OSError:
        return None
    before = _status_kib("VmRSS")
    run()
    return (_status_kib("VmHWM") - before) * 1024


def _release_free_heap() -> None:
    # glibc keeps freed memory of earlier calls; hand it back so that it does not hide this call's peak
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field_name: str) -> int:
    return int(re.search(rf"^{field_name}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M).group(1))


def cpu_ticks(pids: tuple[int, ...] = ()) -> tuple[int, int] | None:
    """(busy clock ticks of the whole machine, ticks of this process and of ``pids``, its workers)
    on Linux, else None.

    Their difference over the timed rounds is the CPU that other processes took meanwhile: with
    every core in use by the benchmark, anything else running makes its numbers unreliable.
    Steal time (a hypervisor running other machines on these cores) counts as busy.
    """
    try:
        cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = 0
        for pid in ("self", *pids):
            utime, stime = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
            own += int(utime) + int(stime)
    except (OSError, ValueError, IndexError):
        return None
    idle = cpu[3] + cpu[4]  # idle, iowait
    return sum(cpu) - idle, own


def other_load(before: tuple[int, int] | None, after: tuple[int, int] | None, seconds: float) -> float | None:
    """Cores kept busy by other processes on average between two ``cpu_ticks`` readings."""
    if before is None or after is None or seconds <= 0:
        return None
    ticks = (after[0] - before[0]) - (after[1] - before[1])
    return max(ticks, 0) / os.sysconf("SC_CLK_TCK") / seconds


def part_times(module: torch.nn.Module, run: Callable[[], object], *, rounds: int,
               clock: Callable[[], float], sync: Callable[[], None]) -> dict[str, float]:
    """Median seconds per call of each part in ``PARTS`` and of the whole call ("total"),
    timed with hooks on the modules (every part name is the same in transformers and here)."""
    parts = {
        "cnn": [module.feature_extractor],
        "projection": [module.feature_projection],
        "pos_conv": [module.encoder.pos_conv_embed],
        "layers": list(module.encoder.layers),
    }
    spent = {name: [] for name in (*PARTS, "total")}
    started: dict[int, float] = {}
    current = dict.fromkeys(PARTS, 0.0)

    def pre_hook(part, *_):
        sync()
        started[id(part)] = clock()

    def post_hook(name):
        def hook(part, *_):
            sync()
            current[name] += clock() - started.pop(id(part))
        return hook

    handles = []
    for name, modules in parts.items():
        for part in modules:
            handles += [part.register_forward_pre_hook(pre_hook), part.register_forward_hook(post_hook(name))]
    try:
        for _ in range(rounds):
            current.update(dict.fromkeys(PARTS, 0.0))
            start = clock()
            run()
            sync()
            spent["total"].append(clock() - start)
            for name in PARTS:
                spent[name].append(current[name])
    finally:
        for handle in handles:
            handle.remove()
    # per call, what no part covers (norms, masks, glue): never negative, unlike a difference of medians
    spent["other"] = [total - sum(spent[name][i] for name in PARTS) for i, total in enumerate(spent["total"])]
    return {name: statistics.median(values) for name, values in spent.items()}
