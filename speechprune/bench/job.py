"""The ``bench`` job: latency, throughput, memory and speedup of speech encoders, measured so
that the numbers can be trusted.

Reading order: check every option (nothing loaded yet), read what each model is from its
config files (and check that the inputs fit it), load the models, then for each setting
(dtype, eager or compiled, audio seconds, batch) time all models in interleaved rounds
(baseline, model, baseline, model, ...) so that machine drift hits them alike, and compute
each model's speedup as the baseline's median over its own.

What is timed is what users deploy: the stock ``transformers`` model for a stock folder or
hub id, ``speechprune.load`` for a shrunk folder, and, for a prune run, the dense encoder
multiplied by its current masks (dense compute: no speedup until it is shrunk). With
``--quantize`` the models under test are quantized after loading (``speechprune.quantize``),
and with ``--runtime onnxruntime`` they run as ONNX exports checked against torch
(``speechprune.onnx_export``); the baseline stays float32 torch unless ``--baseline-quantize``.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..checks import check_long_enough, check_positive
from ..deploy.onnx import export_onnx, quantize_onnx, require_onnx, session
from ..deploy.quantize import check_scheme, describe as describe_quantization, quantize
from ..errors import UsageError
from ..folders.target import Target, load_target, read_target
from ..io.progress import Reporter
from ..method.macs import macs
from ..model.device import DTYPES, resolve_device
from ..model.loading import from_pretrained
from ..model.spec import EncoderSpec

DEVICE_DTYPES = {"cpu": ("float32", "bfloat16"), "mps": ("float32", "float16"), "cuda": tuple(DTYPES)}
PARTS = ("cnn", "projection", "pos_conv", "layers")  # --breakdown; "other" is the rest of the forward
RUNTIMES = ("torch", "onnxruntime")
BUSY_LIMIT = 0.25  # cores kept busy by other processes while timing, above which the numbers are flagged


@dataclass
class BenchOptions:
    models: list[str]
    baseline: str | None = None
    device: str = "auto"
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    seconds: list[float] = field(default_factory=lambda: [10.0])
    batches: list[int] = field(default_factory=lambda: [1])
    threads: int | None = None  # None: every core this process may use
    warmup: int = 2  # untimed calls per model and setting
    repeat: int = 5  # at least this many timed rounds...
    min_time: float = 1.0  # ...and more until every model has this many seconds timed
    compile: bool = False  # also time each model under torch.compile (CUDA graphs on GPUs)
    breakdown: bool = False  # also time the parts of the forward pass separately
    seed: int = 0  # of the generated input audio
    quantize: str | None = None  # scheme of speechprune.quantize applied to the models under test
    baseline_quantize: str | None = None  # the same for the baseline (None: it stays float)
    runtime: str = "torch"  # or "onnxruntime": the models under test run as checked ONNX exports (the baseline in torch)
    latency_table: str | None = None  # cost table (``latency``): predicted latency beside the measured one


@dataclass
class BenchModel:
    label: str
    target: Target  # what its config files say: kind ("stock" | "shrunk" | "run"), spec, sampling rate
    note: str = ""
    module: torch.nn.Module | None = None  # holds the weights; its parts have transformers' names
    forward: Callable | None = None  # input_values (B, T) -> output
    params: int = 0
    file_bytes: int | None = None
    quantize: str | None = None  # scheme applied after loading
    runtime: str = "torch"

    source = property(lambda self: self.target.source)
    kind = property(lambda self: self.target.kind)
    spec = property(lambda self: self.target.spec)  # the architecture as computed (for a run: the dense one)
    sampling_rate = property(lambda self: self.target.sampling_rate)


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_options(options: BenchOptions) -> torch.device:
    """Refuse bad options before anything is read or loaded; returns the device."""
    if not options.models:
        raise UsageError("name at least one model to bench")
    for s in options.seconds:
        check_positive(s, "--seconds")
    for b in options.batches:
        if b < 1:
            raise UsageError(f"--batch must be a positive whole number, got {b}")
    if options.threads is not None and options.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {options.threads}")
    if options.warmup < 0 or options.repeat < 1 or not 0 <= options.min_time < math.inf:  # inf: timing never ends
        raise UsageError("--warmup must be >= 0, --repeat >= 1 and --min-time a finite number >= 0")
    device = resolve_device(options.device)
    for dtype in options.dtypes:
        if dtype not in DTYPES:
            raise UsageError(f"--dtype must be among {', '.join(DTYPES)}, got {dtype!r}")
        if dtype not in DEVICE_DTYPES[device.type]:
            raise UsageError(f"--dtype {dtype} is not supported on {device.type}; use {' or '.join(DEVICE_DTYPES[device.type])}")
        if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError("--dtype bfloat16: this GPU has no bfloat16 support; use float16 or float32")
    _check_quantization(options, device)
    _check_runtime(options, device)
    if options.latency_table:
        for option, given in (("--compile", options.compile), ("--quantize", options.quantize),
                              ("--runtime onnxruntime", options.runtime != "torch")):
            if given:  # the table times float eager torch calls
                raise UsageError(f"--latency-table predicts eager torch calls at the table's dtype; drop {option}")
    return device


def _check_runtime(options: BenchOptions, device: torch.device) -> None:
    if options.runtime not in RUNTIMES:
        raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {options.runtime!r}")
    if options.runtime == "torch":
        return
    if device.type != "cpu":
        raise UsageError("--runtime onnxruntime runs on the CPU (CPUExecutionProvider); use --device cpu")
    for given, option in ((options.dtypes != ["float32"], "--dtype"), (options.compile, "--compile"),
                          (options.breakdown, "--breakdown")):
        if given:
            raise UsageError(f"{option} does not apply to --runtime onnxruntime (float32 graphs, timed whole)")
    require_onnx()


def _check_quantization(options: BenchOptions, device: torch.device) -> None:
    check_scheme(options.quantize, device, "--quantize")
    check_scheme(options.baseline_quantize, device, "--baseline-quantize")
    if options.baseline_quantize and not options.baseline:
        raise UsageError("--baseline-quantize needs a --baseline to quantize")
    option = "--quantize" if options.quantize else "--baseline-quantize"
    if (options.quantize or options.baseline_quantize) and options.dtypes != ["float32"]:
        raise UsageError(f"{option} quantizes float32 models: drop --dtype {','.join(options.dtypes)}")
    if (options.quantize or options.baseline_quantize) and options.compile:
        raise UsageError(f"--compile does not apply to dynamically quantized models; drop --compile or {option}")


# --- what each model is (config files only), then its weights ----------------------------------


def describe(source: str) -> BenchModel:
    """What ``source`` is, without loading weights (``folders.target``), under its label."""
    folder = Path(source).expanduser()
    return BenchModel(folder.name if folder.exists() else source, read_target(source))


def check_inputs(models: list[BenchModel], baseline: BenchModel | None, seconds: list[float]) -> None:
    for model in models:
        if baseline is not None and model.sampling_rate != baseline.sampling_rate:
            raise UsageError(
                f"{model.source} takes {model.sampling_rate} Hz audio but --baseline {baseline.source} takes "
                f"{baseline.sampling_rate} Hz; compare models of the same sampling rate"
            )
        for s in seconds:
            check_long_enough(s, "--seconds", model.source, model.spec, model.sampling_rate)


def load(model: BenchModel, device: torch.device, threads: int | None = None) -> None:
    """Load the weights of ``model`` (float32, eval mode) onto ``device``, quantized if asked; fills
    module/forward/params/file_bytes."""
    if model.kind == "stock":
        _load_stock(model)
    else:
        _load_ours(model, device)
    model.module = model.module.to(device=device, dtype=torch.float32).eval()
    model.forward = model.forward or model.module
    model.params = sum(p.numel() for p in model.module.parameters())  # quantized layers hide theirs: count first
    if model.runtime == "onnxruntime":
        _load_onnxruntime(model, threads)
    elif model.quantize:  # in place: a prune run's forward holds the module
        quantize(model.module, model.quantize, inplace=True)
        model.note = f"{model.note}; {describe_quantization(model.quantize)}"


def _load_onnxruntime(model: BenchModel, threads: int | None) -> None:
    """Export ``model`` to ONNX (checked against torch), quantize it if asked, and time an ORT session of it.

    The graph takes input_values only, as every model is timed. The session holds the graph in
    memory, so the files go as soon as it is made.
    """
    import tempfile

    encoder, _, _ = load_target(model.target, torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="speechprune-bench-") as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(encoder, path, attention_mask=False, sampling_rate=model.sampling_rate)
        if model.quantize:
            quantize_onnx(path, Path(folder) / "int8.onnx")
            path = Path(folder) / "int8.onnx"
        runner = session(path, threads)
    model.forward = lambda waveforms: runner.run(None, {"input_values": waveforms.numpy()})[0]
    model.note = f"{model.note}; ONNX Runtime (CPU) of an ONNX export checked against torch"
    if model.quantize:
        model.note += f"; {describe_quantization(model.quantize, 'onnxruntime')}"


def _load_stock(model: BenchModel) -> None:
    info = model.target.info
    model.module, _ = from_pretrained(info)
    model.note = f"stock {info.family.base_class}" + (f" (encoder of a {info.architecture})" if info.takes_part else "")
    model.file_bytes = _weights_bytes(Path(info.path) if info.path else _hub_snapshot(info.source))


def _load_ours(model: BenchModel, device: torch.device) -> None:
    """A shrunk folder as ``speechprune.load`` gives it, or a prune run's dense encoder with its masks."""
    model.module, masks, snap = load_target(model.target, device)
    if snap is None:
        model.note = "shrunk by speechprune"
        model.file_bytes = _weights_bytes(Path(model.source))
        return
    encoder = model.module
    model.forward = lambda waveforms: encoder(waveforms, None, masks)
    state = "finished" if snap.finished else f"checkpoint at step {snap.step}"
    model.note = (f"prune run ({state}), timed in its masked form: it computes as much as the dense model; "
                  "`speechprune shrink` it for the speedup")


def _weights_bytes(folder: Path | None) -> int | None:
    """Size of the weights in ``folder``: its .safetensors files, else its .bin files."""
    if folder is None or not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files) or None


def _hub_snapshot(repo: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["*.safetensors", "*.bin"], local_files_only=True))
    except Exception:  # not in the local cache: the file size is simply not reported
        return None


# --- measuring ---------------------------------------------------------------------------------


def interleaved(runs: list[Callable[[], object]], *, warmup: int, repeat: int, min_time: float,
                clock: Callable[[], float], sync: Callable[[], None]) -> list[list[float]]:
    """Seconds per call of each of ``runs``, timed in rounds: runs[0], runs[1], ..., runs[0], ...

    At least ``repeat`` rounds, and more until each run has ``min_time`` seconds timed, so that
    short calls are repeated until their median is stable. ``sync`` waits for the device
    (CUDA kernels are asynchronous), before the clock is read on both ends.
    """
    for _ in range(warmup):
        for run in runs:
            run()
    sync()
    times: list[list[float]] = [[] for _ in runs]
    while len(times[0]) < repeat or min(sum(t) for t in times) < min_time:
        for run, spent in zip(runs, times):
            start = clock()
            run()
            sync()
            spent.append(clock() - start)
    return times


def device_sync(device: torch.device) -> Callable[[], None]:
    """What waits for ``device`` to finish its queued work (CUDA and MPS run asynchronously)."""
    return {"cuda": lambda: torch.cuda.synchronize(device), "mps": torch.mps.synchronize}.get(device.type, lambda: None)


def speedup(baseline: list[float], model: list[float]) -> tuple[float, list[float]]:
    """Baseline median / model median, and the spread: the 10th and 90th percentiles of the
    per-round ratios (each round's baseline and model calls ran back to back)."""
    ratios = [b / m for b, m in zip(baseline, model)]
    return statistics.median(baseline) / statistics.median(model), [float(p) for p in np.percentile(ratios, [10, 90])]


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


def cpu_ticks() -> tuple[int, int] | None:
    """(busy clock ticks of the whole machine, ticks of this process) on Linux, else None.

    Their difference over the timed rounds is the CPU that other processes took meanwhile: with
    every core in use by the benchmark, anything else running makes its numbers unreliable.
    Steal time (a hypervisor running other machines on these cores) counts as busy.
    """
    try:
        cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[11:13]  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    idle = cpu[3] + cpu[4]  # idle, iowait
    return sum(cpu) - idle, int(own[0]) + int(own[1])


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


# --- the job -------------------------------------------------------------------------------------


def bench(options: BenchOptions, reporter: Reporter | None = None,
          clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time every model of ``options`` (and its baseline) in every setting; returns the report."""
    reporter = reporter or Reporter()
    device = check_options(options)
    baseline = describe(options.baseline) if options.baseline else None
    models = ([baseline] if baseline else []) + [describe(source) for source in options.models]
    check_inputs(models, baseline, options.seconds)
    for model in models:
        model.quantize = options.baseline_quantize if model is baseline else options.quantize
        model.runtime = "torch" if model is baseline else options.runtime
        if model.runtime != "torch" and model.kind == "run":
            raise UsageError(f"--runtime {model.runtime} takes models, not prune runs: shrink {model.source} first")
        tags = ([model.runtime] if model.runtime != "torch" else []) + ([model.quantize] if model.quantize else [])
        if tags:
            model.label += f" [{' '.join(tags)}]"
    _unique_labels(models, baseline)

    threads = options.threads or all_cores()
    predict = _latency_predictor(options, models, device, threads, reporter) if options.latency_table else None
    torch.set_num_threads(threads)
    for model in models:
        reporter.message(f"loading {model.source}")
        load(model, device, threads)
    sync = device_sync(device)

    results = []
    started, ticks = time.monotonic(), cpu_ticks()
    with torch.inference_mode():
        for dtype in options.dtypes:
            for model in models:  # in place: weight values do not matter for timing
                model.module.to(DTYPES[dtype])
            for compiled in (False, True) if options.compile else (False,):
                for seconds in options.seconds:
                    for batch in options.batches:
                        setting = dict(seconds=seconds, batch=batch, dtype=dtype, compiled=compiled)
                        results += _measure_setting(models, baseline, setting, options, device, clock, sync, reporter,
                                                    predict)
    others = other_load(ticks, cpu_ticks(), time.monotonic() - started)
    if others is not None and others > BUSY_LIMIT:
        reporter.warning(f"other processes kept {others:.1f} cores busy on average while timing ({threads} threads "
                         "in use): the numbers are unreliable; rerun on an idle machine")
    return {
        "environment": environment(device, threads, options.dtypes) | {"other_processes_cpu_cores": others},
        "method": {
            "warmup": options.warmup,
            "repeat": options.repeat,
            "min_time": options.min_time,
            "seed": options.seed,
            "rounds": "interleaved: every model once per round, in the order of models",
            "timer": "time.perf_counter around each call" + ("" if device.type == "cpu" else ", device synchronised"),
            "inference_mode": True,
            "compile_mode": _compile_mode(device) if options.compile else None,
            "macs": "analytic, as the model runs: projections at each head's stored width, the attention "
                    "products at the layer's run-time (widest) head width",
        },
        "baseline": baseline.label if baseline else None,
        "latency_table": options.latency_table,
        "models": [
            {"label": m.label, "source": m.source, "kind": m.kind, "note": m.note, "params": m.params,
             "file_bytes": m.file_bytes, "sampling_rate": m.sampling_rate, "runtime": m.runtime,
             "quantize": m.quantize, "quantization": describe_quantization(m.quantize, m.runtime)}
            for m in models
        ],
        "results": results,
    }


def _latency_predictor(options: BenchOptions, models: list[BenchModel], device: torch.device, threads: int,
                       reporter: Reporter) -> Callable[[EncoderSpec], float]:
    """Predicted ms of a spec from --latency-table, refused unless the table was measured for
    these models under this setting."""
    from ..method.latency import CostTable, check_architecture, check_conditions, predict_ms

    table = CostTable.read(options.latency_table)
    for seconds in options.seconds:  # several values: the one that is not the table's is named
        for batch in options.batches:
            for dtype in options.dtypes:
                check_conditions(table, {"device": device.type, "threads": threads, "dtype": dtype, "batch": batch,
                                         "seconds": seconds})
    for model in models:
        check_architecture(table, model.spec, model.sampling_rate, model.source, dense=model.kind != "shrunk")
    if table.conditions["device_name"] != device_name(device):
        reporter.warning(f"--latency-table was measured on {table.conditions['device_name']}, this is "
                         f"{device_name(device)}: expect larger prediction errors")
    return lambda spec: predict_ms(table, spec)


def _unique_labels(models: list[BenchModel], baseline: BenchModel | None) -> None:
    if baseline is not None:
        baseline.label += " (baseline)"
    seen: dict[str, int] = {}
    for model in models:
        seen[model.label] = seen.get(model.label, 0) + 1
        if seen[model.label] > 1:
            model.label += f" #{seen[model.label]}"


def _compile_mode(device: torch.device) -> str:
    # small GPU batches are bound by kernel launches: CUDA graphs replay them in one go
    return "reduce-overhead" if device.type == "cuda" else "default"


def _measure_setting(models, baseline, setting, options, device, clock, sync, reporter, predict=None) -> list[dict]:
    seconds, batch, dtype, compiled = setting["seconds"], setting["batch"], setting["dtype"], setting["compiled"]
    if compiled:
        torch._dynamo.reset()  # code compiled for earlier settings would count against the recompile limit
        reporter.message(f"compiling for {seconds:g} s x {batch} {dtype} (the warm-up calls compile)")
    runs = []
    for model in models:
        samples = round(seconds * model.sampling_rate)
        generator = torch.Generator().manual_seed(options.seed)
        waveforms = torch.randn(batch, samples, generator=generator).to(device, DTYPES[dtype])  # (B, T)
        forward = model.forward
        if compiled:
            forward = torch.compile(forward, mode=_compile_mode(device))
        runs.append(lambda forward=forward, waveforms=waveforms: forward(waveforms))
    # CUDA graphs are recorded on the first calls after compiling: warm up past them
    warmup = max(options.warmup, 3) if compiled else options.warmup
    times = interleaved(runs, warmup=warmup, repeat=options.repeat, min_time=options.min_time, clock=clock, sync=sync)
    name = f"{seconds:g} s x {batch} {dtype}" + (" compiled" if compiled else "")
    reporter.message(f"{name}: {len(times[0])} rounds")

    rows = []
    for model, run, spent in zip(models, runs, times):
        median = statistics.median(spent)
        row = {
            "model": model.label,
            **setting,
            "latency_ms": {"median": median * 1e3, "p90": float(np.percentile(spent, 90)) * 1e3, "min": min(spent) * 1e3},
            "times_ms": [t * 1e3 for t in spent],
            "audio_seconds_per_second": batch * seconds / median,
            "real_time_factor": median / (batch * seconds),
            # CUDA graphs allocate their memory once, when recorded: a per-call peak says nothing there
            "peak_memory_bytes": None if compiled and device.type == "cuda" else peak_memory(run, device),
            "macs": macs(model.spec, round(seconds * model.sampling_rate), batch)["total"],
            "speedup": None,
            "speedup_spread": None,
            "efficiency": None,
            "breakdown_ms": None,
            "predicted_ms": None,
            "prediction_error": None,
        }
        if predict is not None:
            row["predicted_ms"] = predict(model.spec)
            row["prediction_error"] = row["predicted_ms"] / (median * 1e3) - 1
        if baseline is not None:
            row["speedup"], row["speedup_spread"] = speedup(times[0], spent)
            baseline_macs = macs(baseline.spec, round(seconds * baseline.sampling_rate), batch)["total"]
            row["efficiency"] = row["speedup"] / (baseline_macs / row["macs"])
        if options.breakdown and not compiled:  # hooks would break compiled graphs
            parts = part_times(model.module, run, rounds=options.repeat, clock=clock, sync=sync)
            row["breakdown_ms"] = {name: value * 1e3 for name, value in parts.items()}
        rows.append(row)
    return rows


def environment(device: torch.device, threads: int, dtypes: list[str]) -> dict:
    import transformers

    return {
        "speechprune": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": threads,
        "dtypes": list(dtypes),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu" and sys.platform.startswith("linux"):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine()
