"""The ``bench`` job: latency, throughput, memory and speedup of speech encoders, measured so
that the numbers can be trusted.

Reading order: check every option (nothing loaded yet), read what each model is from its
config files (and check that the inputs fit it), load each model in a worker process of its
own (``worker``: models timed in one process disturb each other), then for each setting (dtype,
eager or compiled, audio seconds, batch) time all models in interleaved rounds (baseline,
model, baseline, model, ..., one worker computing at a time) so that machine drift hits them
alike, and compute each model's speedup as the median of its per-round ratios to the baseline.

What is timed is what users deploy: the stock ``transformers`` model for a stock folder or
hub id, ``speechprune.load`` for a shrunk folder, and, for a prune run, the dense encoder
multiplied by its current masks (dense compute: no speedup until it is shrunk); ``models``
loads them. With ``--quantize`` the models under test are quantized after loading
(``speechprune.deploy.quantize``), and with ``--runtime onnxruntime`` they run as ONNX exports
checked against torch (``speechprune.deploy.onnx``); the baseline stays float32 torch unless
``--baseline-quantize`` or ``--baseline-runtime``. A static scheme (``--quantize int8-static``)
calibrates on clips of ``--data``, read here once and sent to each worker. How the time is
taken: ``timing``.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import __version__
from ..checks import MAX_ROUNDS, check_count, check_positive, check_seed
from ..deploy.onnx import require_onnx
from ..deploy.calibration import read_calibration
from ..deploy.runtime import check_runtime
from ..deploy.quantize import STATIC, check_scheme, describe as describe_quantization
from ..errors import UsageError
from ..io.audio import scan_reported
from ..io.progress import Reporter
from ..method.latency import CostTable, check_architecture, check_conditions, predict_ms
from ..method.macs import macs
from ..model.device import DTYPES, check_precision, check_precision_name, dtype_name, resolve_device
from .allocator import allocator_policy
from .models import BenchModel, check_inputs, describe
from .report import SPEEDUP_METHOD, BenchReport
from .timing import UNSTEADY, all_cores, cpu_ticks, device_name, other_load, rounds, speedup, unsteady
from .worker import Worker, Workers

THREADS_PER_CORE = 4  # --threads above this many per core only wait on each other (100,000 crash torch)
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
    quantize: str | None = None  # scheme of speechprune.deploy.quantize applied to the models under test
    baseline_quantize: str | None = None  # the same for the baseline (None: it stays float)
    runtime: str = "torch"  # or "onnxruntime": the models under test run as checked ONNX exports
    baseline_runtime: str = "torch"  # the same for the baseline: its dense model in the runtime deployed
    latency_table: str | None = None  # cost table (``method.latency``): predicted latency beside the measured one
    data: str | None = None  # audio a static --quantize scheme calibrates on (``deploy.calibration``)

    def __post_init__(self) -> None:
        self.dtypes = [dtype_name(d) for d in self.dtypes]  # one spelling in the report, fp32 read as float32


def check_options(options: BenchOptions) -> torch.device:
    """Refuse bad options before anything is read or loaded; returns the device."""
    if not options.models:
        raise UsageError("name at least one model to bench")
    for s in options.seconds:
        check_positive(s, "--seconds")
    for b in options.batches:
        if b < 1:
            raise UsageError(f"--batch must be a positive whole number, got {b}")
    if options.threads is not None and not 1 <= options.threads <= THREADS_PER_CORE * all_cores():
        raise UsageError(f"--threads must be between 1 and {THREADS_PER_CORE * all_cores()} ({THREADS_PER_CORE} per core "
                         f"of the {all_cores()} this process may use), got {options.threads}")
    check_count(options.warmup, "--warmup", least=0, most=MAX_ROUNDS)
    check_count(options.repeat, "--repeat", most=MAX_ROUNDS)
    check_seed(options.seed)
    if not 0 <= options.min_time < math.inf:  # inf: timing never ends
        raise UsageError(f"give --min-time a finite number of seconds >= 0, got {options.min_time}")
    cpu_only = bool(options.quantize or options.baseline_quantize or "onnxruntime" in (options.runtime,
                                                                                       options.baseline_runtime))
    device = resolve_device(options.device, cpu_only=cpu_only)
    for dtype in options.dtypes:
        check_precision_name(dtype, "--dtype")
        check_precision(dtype, device, "--dtype")
    _check_quantization(options, device)
    _check_runtime(options.runtime, "--runtime", options, device)
    _check_runtime(options.baseline_runtime, "--baseline-runtime", options, device)
    if options.baseline_runtime != "torch" and not options.baseline:
        raise UsageError("--baseline-runtime is the runtime of the --baseline: name a --baseline, or drop it")
    if options.latency_table and options.compile:  # a table times eager calls
        raise UsageError("--latency-table predicts eager calls in the table's runtime; drop --compile")
    return device


def _check_runtime(runtime: str, name: str, options: BenchOptions, device: torch.device) -> None:
    """Refuse ``runtime`` (given as option ``name``) where it cannot run, or with options that only torch takes."""
    check_runtime(runtime, device, name)
    if runtime == "torch":
        return
    for given, option in ((options.dtypes != ["float32"], f"--dtype {','.join(options.dtypes)}"),
                          (options.compile, "--compile"), (options.breakdown, "--breakdown")):
        if given:
            raise UsageError(f"{option} does not apply to {name} {runtime} (float32 graphs, timed whole): "
                             f"drop {option.split()[0]}, or use {name} torch")
    require_onnx()


def _check_quantization(options: BenchOptions, device: torch.device) -> None:
    check_scheme(options.quantize, device, "--quantize", runtime=options.runtime, data=options.data)
    check_scheme(options.baseline_quantize, device, "--baseline-quantize", runtime=options.baseline_runtime,
                 data=options.data, runtime_option="--baseline-runtime")
    if options.data is not None and options.quantize not in STATIC and options.baseline_quantize not in STATIC:
        raise UsageError("--data is the audio --quantize int8-static calibrates on; drop it, or add "
                         "--runtime onnxruntime --quantize int8-static")
    if options.baseline_quantize and not options.baseline:
        raise UsageError("--baseline-quantize needs a --baseline to quantize")
    option = "--quantize" if options.quantize else "--baseline-quantize"
    if (options.quantize or options.baseline_quantize) and options.dtypes != ["float32"]:
        raise UsageError(f"{option} quantizes float32 models: drop --dtype {','.join(options.dtypes)}")
    if (options.quantize or options.baseline_quantize) and options.compile:
        raise UsageError(f"--compile does not apply to dynamically quantized models; drop --compile or {option}")


def bench(options: BenchOptions, reporter: Reporter | None = None) -> dict:
    """Time every model of ``options`` (and its baseline) in every setting; returns the report
    (``BenchReport.to_dict``)."""
    reporter = reporter or Reporter()
    device = check_options(options)
    baseline, models = _described(options)
    _calibrate(options, models, reporter)
    threads = options.threads or all_cores()
    table = _latency_table(options, models, device, threads, reporter) if options.latency_table else None
    results = []
    with Workers(models, device, threads, reporter) as workers:  # one process per model, each loaded once
        pids = tuple(worker.pid for worker in workers)
        started, ticks = time.monotonic(), cpu_ticks(pids)
        for dtype in options.dtypes:
            for compiled in (False, True) if options.compile else (False,):
                for seconds in options.seconds:
                    for batch in options.batches:
                        setting = dict(seconds=seconds, batch=batch, dtype=dtype, compiled=compiled)
                        results += _measure_setting(workers, baseline, setting, options, device, reporter, table)
        ticks_after = cpu_ticks(pids)
    others = other_load(ticks, ticks_after, time.monotonic() - started)
    if others is not None and others > BUSY_LIMIT:
        reporter.warning(f"other processes kept {others:.1f} cores busy on average while timing ({threads} threads "
                         "in use): the numbers are unreliable; rerun on an idle machine")
    return BenchReport(
        environment=environment(device, threads, options.dtypes) | {"other_processes_cpu_cores": others},
        method=_method(options, device),
        baseline=baseline.label if baseline else None,
        latency_table=options.latency_table,
        latency_reference=_reference(table),
        models=[
            {"label": m.label, "source": m.source, "kind": m.kind, "note": m.note, "params": m.params,
             "file_bytes": m.file_bytes, "sampling_rate": m.sampling_rate, "runtime": m.runtime,
             "quantize": m.quantize, "quantization": describe_quantization(m.quantize, m.runtime)}
            for m in models
        ],
        results=results,
    ).to_dict()


def _described(options: BenchOptions) -> tuple[BenchModel | None, list[BenchModel]]:
    """(the baseline or None, every model to time, the baseline first), read from their config
    files, each with its runtime, quantization and a label that tells it apart."""
    baseline = describe(options.baseline) if options.baseline else None
    models = ([baseline] if baseline else []) + [describe(source) for source in options.models]
    check_inputs(models, baseline, options.seconds, options.batches)
    for model in models:
        model.quantize = options.baseline_quantize if model is baseline else options.quantize
        model.runtime = options.baseline_runtime if model is baseline else options.runtime
        if model.runtime != "torch" and model.kind == "run":
            option = "--baseline-runtime" if model is baseline else "--runtime"
            raise UsageError(f"{option} {model.runtime} takes models, not prune runs: shrink {model.source} first")
        tags = ([model.runtime] if model.runtime != "torch" else []) + ([model.quantize] if model.quantize else [])
        if tags:
            model.label += f" [{' '.join(tags)}]"
    _unique_labels(models, baseline)
    return baseline, models


def _calibrate(options: BenchOptions, models: list[BenchModel], reporter: Reporter) -> None:
    """The clips of ``--data`` that each model a static scheme quantizes is calibrated on, read at
    its rate as it takes audio, with ``--seed`` (the audio scanned once, before any weights load)."""
    static = [model for model in models if model.quantize in STATIC]
    if not static:
        return
    corpus = scan_reported(options.data, reporter)
    read: dict[tuple[int, bool], list] = {}  # models that take audio alike share one read
    for model in static:
        taken = (model.sampling_rate, model.target.normalize)
        if taken not in read:
            read[taken] = read_calibration(corpus, sampling_rate=taken[0], normalize=taken[1], seed=options.seed)
        model.calibration = read[taken]


def _method(options: BenchOptions, device: torch.device) -> dict:
    """How the report's numbers were measured."""
    return {
        "warmup": options.warmup,
        "repeat": options.repeat,
        "min_time": options.min_time,
        "seed": options.seed,
        "rounds": ("interleaved: every model once per round, in the order of models, each in its own process; "
                   "with several models, each timed call right after an untimed one of the same model"),
        "speedup": SPEEDUP_METHOD,
        "timer": "time.perf_counter around each call" + ("" if device.type == "cpu" else ", device synchronised"),
        "inference_mode": True,
        "compile_mode": _compile_mode(device) if options.compile else None,
        "macs": "analytic, as the model runs: projections at each head's stored width, the attention "
                "products at the layer's run-time (widest) head width",
    }


def _latency_table(options: BenchOptions, models: list[BenchModel], device: torch.device, threads: int,
                   reporter: Reporter) -> CostTable:
    """--latency-table, refused unless it was measured for these models under this setting, in the
    runtime of the models under test."""
    table = CostTable.read(options.latency_table)
    for seconds in options.seconds:  # several values: the one that is not the table's is named
        for batch in options.batches:
            for dtype in options.dtypes:
                check_conditions(table, {"device": device.type, "threads": threads, "dtype": dtype, "batch": batch,
                                         "seconds": seconds, "runtime": options.runtime, "quantize": options.quantize})
    for model in models:
        check_architecture(table, model.spec, model.sampling_rate, model.source, dense=model.kind != "shrunk")
    if table.conditions["device_name"] != device_name(device):
        reporter.warning(f"--latency-table was measured on {table.conditions['device_name']}, this is "
                         f"{device_name(device)}: expect larger prediction errors")
    return table


def _reference(table: CostTable | None) -> dict | None:
    """What a table of format 3 says of its runtime: its dense model's time there, and the stock
    model's in float32 eager torch, measured in the same rounds."""
    if table is None or table.reference is None:
        return None
    r = table.reference
    return {"runtime": table.runtime, "dense_ms": r["table_dense_ms"], "stock": r["model"],
            "stock_dense_ms": r["dense_ms"], "stock_speedup": r["dense_ms"] / r["table_dense_ms"]}


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


def _measure_setting(workers: list[Worker], baseline: BenchModel | None, setting: dict, options: BenchOptions,
                     device: torch.device, reporter: Reporter, table: CostTable | None = None) -> list[dict]:
    seconds, batch, dtype, compiled = setting["seconds"], setting["batch"], setting["dtype"], setting["compiled"]
    if compiled:
        reporter.message(f"compiling for {seconds:g} s x {batch} {dtype} (the warm-up calls compile)")
    for worker in workers:
        worker.ask("prepare", seconds, batch, dtype, _compile_mode(device) if compiled else None, options.seed)
    # CUDA graphs are recorded on the first calls after compiling: warm up past them
    warmup = max(options.warmup, 3) if compiled else options.warmup
    timers = [lambda worker=worker: worker.ask("time") for worker in workers]
    times = rounds(timers, warmup=warmup, repeat=options.repeat, min_time=options.min_time)
    name = f"{seconds:g} s x {batch} {dtype}" + (" compiled" if compiled else "")
    reporter.message(f"{name}: {len(times[0])} rounds")

    rows, unsteady_models = [], []
    for worker, spent in zip(workers, times):
        model = worker.model
        median = statistics.median(spent)
        row = {
            "model": model.label,
            **setting,
            "latency_ms": {"median": median * 1e3, "p90": float(np.percentile(spent, 90)) * 1e3, "min": min(spent) * 1e3},
            "times_ms": [t * 1e3 for t in spent],
            "audio_seconds_per_second": batch * seconds / median,
            "real_time_factor": median / (batch * seconds),
            # CUDA graphs allocate their memory once, when recorded: a per-call peak says nothing there
            "peak_memory_bytes": None if compiled and device.type == "cuda" else worker.ask("memory"),
            "macs": macs(model.spec, round(seconds * model.sampling_rate), batch)["total"],
            "speedup": None,
            "speedup_spread": None,
            "speedup_of_medians": None,
            "efficiency": None,
            "breakdown_ms": None,
            "predicted_ms": None,
            "prediction_error": None,
            "predicted_speedup_vs_stock": None,
        }
        if table is not None and (model.runtime, model.quantize) == (options.runtime, options.quantize):
            row["predicted_ms"] = predict_ms(table, model.spec)  # not for a baseline in another runtime
            row["prediction_error"] = row["predicted_ms"] / (median * 1e3) - 1
            row["predicted_speedup_vs_stock"] = table.stock_speedup(row["predicted_ms"])
        if baseline is not None:
            row.update(speedup(times[0], spent))
            if unsteady(row):
                unsteady_models.append(model.label)
            baseline_macs = macs(baseline.spec, round(seconds * baseline.sampling_rate), batch)["total"]
            row["efficiency"] = row["speedup"] / (baseline_macs / row["macs"])
        if options.breakdown and not compiled:  # hooks would break compiled graphs
            parts = worker.ask("breakdown", options.repeat)
            row["breakdown_ms"] = {name: value * 1e3 for name, value in parts.items()}
        rows.append(row)
    if unsteady_models:
        reporter.warning(f"{name}: the machine changed speed between rounds (the ratio of medians is more than "
                         f"{UNSTEADY:.0%} from the median of per-round ratios for {', '.join(unsteady_models)}); "
                         "the speedups pair the calls of each round, but rerun on a steady machine for latencies")
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
        "allocator": allocator_policy(),
    }
