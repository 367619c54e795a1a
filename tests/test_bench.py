"""`speechprune bench`: the report's schema, speedup as the ratio of medians of interleaved
rounds, analytic MACs (against torch's FLOP counter and in how they scale with the input),
memory measurement, and clean errors before any weights load.

Benchmarks are not unit tests: nothing here depends on how fast this machine is.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import speechprune.bench.job as core
import speechprune.bench.timing as timing
from speechprune.bench.allocator import allocator_policy
from speechprune.bench.models import describe
from speechprune.bench.report import BenchReport
from speechprune.bench.worker import WorkerModel, Workers
from speechprune.cli.bench import plain
from speechprune.errors import FormatError, ModelError, SpeechpruneError
from speechprune.io.progress import Reporter
from speechprune.method.gates import GateLayout
from speechprune.method.macs import PARTS, macs
from speechprune.model.encoder import Encoder
from speechprune.model.families import FAMILIES
from speechprune.model.spec import frames
from speechprune.shrink.slicing import shrink_encoder
from helpers.commands import assert_clean_error, cli, run_captured
from helpers.models import build_model, edge_case_values

FAST = ["--device", "cpu", "--warmup", "1", "--repeat", "2", "--min-time", "0"]
ROW_KEYS = {"model", "seconds", "batch", "dtype", "compiled", "latency_ms", "times_ms", "audio_seconds_per_second",
            "real_time_factor", "peak_memory_bytes", "macs", "speedup", "speedup_spread", "speedup_of_medians", "efficiency",
            "breakdown_ms", "predicted_ms", "prediction_error", "predicted_speedup_vs_stock"}


@pytest.fixture(scope="module")
def models(model_dir, finished_run, shrunk_run) -> dict:
    """A stock tiny wav2vec2 folder, the shared finished run of it, and that run shrunk."""
    return {"stock": model_dir("wav2vec2"), "run": finished_run("wav2vec2", "base"),
            "shrunk": shrunk_run("wav2vec2", "base")}


@pytest.fixture(scope="module")
def report(models) -> tuple[dict, str]:
    """One --json bench of every kind of model against the stock one, 2 lengths x 2 batch sizes."""
    code, out, err = run_captured("bench", models["shrunk"], models["run"], "--baseline", models["stock"], *FAST,
                                  "--seconds", "0.5,1", "--batch", "1,2", "--breakdown", "--json")
    assert code == 0, err
    return json.loads(out), err


# ---------------------------------------------------------------- the report


def test_json_schema(report, models):
    data, err = report
    env = data["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["device_name"]
    assert env["threads"] == timing.all_cores() and env["dtypes"] == ["float32"]
    assert env["allocator"] == allocator_policy()
    assert data["method"]["warmup"] == 1 and data["method"]["repeat"] == 2 and data["method"]["inference_mode"]
    kinds = {m["kind"]: m for m in data["models"]}
    assert data["baseline"] == kinds["stock"]["label"] and data["baseline"].endswith(" (baseline)")
    assert data["latency_table"] is None and data["latency_reference"] is None
    assert list(kinds) == ["stock", "shrunk", "run"]
    assert kinds["shrunk"]["params"] < kinds["stock"]["params"] == kinds["run"]["params"]
    assert kinds["shrunk"]["file_bytes"] < kinds["stock"]["file_bytes"] and kinds["run"]["file_bytes"] is None
    assert "masked form" in kinds["run"]["note"]
    assert len(data["results"]) == 3 * 2 * 2  # models x seconds x batch
    for row in data["results"]:
        assert set(row) == ROW_KEYS
        assert row["latency_ms"]["min"] <= row["latency_ms"]["median"] <= row["latency_ms"]["p90"]
        audio = row["seconds"] * row["batch"]
        assert row["audio_seconds_per_second"] == pytest.approx(audio / row["latency_ms"]["median"] * 1e3)
        assert row["real_time_factor"] == pytest.approx(1 / row["audio_seconds_per_second"])
        assert row["peak_memory_bytes"] is None or row["peak_memory_bytes"] >= 0
        assert set(row["breakdown_ms"]) == {"cnn", "projection", "pos_conv", "layers", "other", "total"}
        assert all(v >= 0 for v in row["breakdown_ms"].values())
    assert "loading" in err  # progress on stderr, only the JSON document on stdout


def test_the_report_is_typed_and_versioned(report):
    data, _ = report
    assert list(data)[0] == "format" and data["format"] == 3
    typed = BenchReport.from_dict(data)
    assert typed.to_dict() == data and typed.results == data["results"]

    def as_format_2(row):  # its speedup was the ratio of medians, and efficiency followed it
        old = {k: v for k, v in row.items() if k != "speedup_of_medians"}
        if row["speedup"] is not None:
            old["speedup"] = row["speedup_of_medians"]
            old["efficiency"] = row["efficiency"] * row["speedup_of_medians"] / row["speedup"]
        return old

    method = {k: v for k, v in data["method"].items() if k != "speedup"}
    format_2 = data | {"format": 2, "method": method, "results": [as_format_2(row) for row in data["results"]]}
    format_1 = {k: v for k, v in format_2.items() if k != "latency_reference"} | {"format": 1}  # before runtime tables
    format_1["results"] = [{k: v for k, v in row.items() if k != "predicted_speedup_vs_stock"}
                           for row in format_2["results"]]
    for older in (format_2, format_1):
        read = BenchReport.from_dict(older).to_dict()
        assert read["format"] == 3 and read["method"] == data["method"]
        for got, row in zip(read["results"], data["results"]):
            assert got == row | {"speedup": pytest.approx(row["speedup"]), "efficiency": pytest.approx(row["efficiency"])}
    damaged = format_2 | {"results": [{k: v for k, v in row.items() if k != "times_ms"} for row in format_2["results"]]}
    with pytest.raises(FormatError, match="format 2 without what its speedups are taken from .*times_ms"):
        BenchReport.from_dict(damaged)
    before = {k: v for k, v in data.items() if k != "format"}  # what bench --json printed before it had a format
    with pytest.raises(FormatError, match="bench report of format None: this speechprune reads format 3"):
        BenchReport.from_dict(before)


def test_speedup_is_the_median_of_per_round_ratios_of_interleaved_rounds(report):
    data, _ = report
    settings = {}
    for row in data["results"]:
        settings.setdefault((row["seconds"], row["batch"]), []).append(row)
    for rows in settings.values():
        baseline = rows[0]
        assert baseline["model"] == data["baseline"] and baseline["speedup"] == 1.0
        for row in rows:
            assert len(row["times_ms"]) == len(baseline["times_ms"])  # one call of each model per round
            ratios = [b / m for b, m in zip(baseline["times_ms"], row["times_ms"])]
            assert row["speedup"] == pytest.approx(statistics.median(ratios))
            assert row["speedup_spread"] == pytest.approx(list(np.percentile(ratios, [10, 90])))
            of_medians = statistics.median(baseline["times_ms"]) / statistics.median(row["times_ms"])
            assert row["speedup_of_medians"] == pytest.approx(of_medians)
            assert row["efficiency"] == pytest.approx(row["speedup"] * row["macs"] / baseline["macs"])


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_interleaved_rounds_with_a_fake_clock():
    clock, calls = FakeClock(), []

    def model(name, cost):
        def run():
            calls.append(name)
            clock.now += cost
        return run

    runs = [model("A", 0.25), model("B", 0.0625)]  # exact in binary
    times = timing.interleaved(runs, warmup=2, repeat=3, min_time=0.0, clock=clock, sync=lambda: None)
    # 2 warm-up rounds, then 3 timed rounds; in each, a model's timed call follows an untimed one of its own
    assert calls == ["A", "B"] * 2 + ["A", "A", "B", "B"] * 3
    assert times == [[0.25] * 3, [0.0625] * 3]
    assert timing.speedup(times[0], times[1]) == {"speedup": 4.0, "speedup_spread": [4.0, 4.0], "speedup_of_medians": 4.0}
    calls.clear()  # one model alone: every call after the warm-up is timed
    assert timing.interleaved(runs[:1], warmup=1, repeat=3, min_time=0.0, clock=clock, sync=lambda: None) == [[0.25] * 3]
    assert calls == ["A"] * 4

    # --min-time: more rounds until the fastest model has been timed that long
    times = timing.interleaved(runs, warmup=0, repeat=1, min_time=0.5, clock=clock, sync=lambda: None)
    assert len(times[0]) == 8  # 8 x 0.0625 s


def test_speedup_and_spread_from_recorded_times():
    baseline = [1.0, 1.2, 0.9, 1.1, 5.0]  # one outlier round
    model = [0.5, 0.5, 0.45, 0.6, 0.5]
    estimates = timing.speedup(baseline, model)
    ratios = sorted([2.0, 2.4, 2.0, 1.1 / 0.6, 10.0])  # per round
    assert estimates["speedup"] == pytest.approx(2.0)  # their median: the outlier does not move it
    assert estimates["speedup_of_medians"] == pytest.approx(1.1 / 0.5)
    assert estimates["speedup_spread"] == pytest.approx([ratios[0] + 0.4 * (ratios[1] - ratios[0]),
                                                 ratios[3] + 0.6 * (ratios[4] - ratios[3])])


def test_a_machine_that_switches_speed_between_rounds_moves_the_medians_not_the_paired_ratios():
    def times(seconds, states):  # the machine runs 1.3x slower in its slow state ("S")
        return [seconds * (1.3 if state == "S" else 1.0) for state in states]

    # the model is 3x faster; each round's two calls share the machine's state
    estimates = timing.speedup(times(0.9, "FSFFS"), times(0.3, "FSFFS"))
    assert estimates["speedup"] == pytest.approx(3.0) and estimates["speedup_of_medians"] == pytest.approx(3.0)
    assert not timing.unsteady(estimates)
    # the machine switched in the middle of round 4: the baseline's median falls in the fast state,
    # the model's in the slow one, and the ratio of medians reads 2.31x
    estimates = timing.speedup(times(0.9, "FSFFS"), times(0.3, "FSFSS"))
    assert estimates["speedup"] == pytest.approx(3.0)  # four rounds of five in one state each
    assert estimates["speedup_of_medians"] == pytest.approx(0.9 / 0.39)
    assert timing.unsteady(estimates)


_FREED_AND_KEPT = """
import ctypes, sys
from speechprune.bench.allocator import steady_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
if sys.argv[1] == "steady":
    steady_allocator()
for mb in (16, 64):  # activations of 16 and 64 MB (over glibc's largest mmap threshold), made and freed
    libc.free(libc.malloc(mb << 20))
print(libc.mallinfo2().fordblks >> 20)  # MB of freed memory the process kept for the next call
"""
_GLIBC = pytest.mark.skipif(
    not allocator_policy().startswith("glibc keeping") or not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"),
    reason="glibc 2.33 or later only (mallopt, mallinfo2)")


@_GLIBC
def test_the_steady_allocator_keeps_freed_memory_for_the_next_call():
    """Under glibc's own rules freed activations of 16 and 64 MB go back to the system (the next call
    faults them in again, page by page); under bench's, the process keeps them."""
    kept = {}
    for policy in ("default", "steady"):
        done = subprocess.run([sys.executable, "-c", _FREED_AND_KEPT, policy], capture_output=True, text=True, check=True,
                              env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")})
        kept[policy] = int(done.stdout.split()[-1])
    assert kept["default"] == 0 and kept["steady"] >= 64


@_GLIBC
def test_a_user_allocator_setting_is_left_as_set(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert allocator_policy() == "glibc, as the environment sets it (MALLOC_*, GLIBC_TUNABLES)"
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    assert allocator_policy() == "jemalloc (LD_PRELOAD), as set"


def test_plain_output_is_a_table_with_the_header(report):
    data, _ = report
    text = plain(data)
    first = text.splitlines()[0]
    for word in (torch.__version__, "cpu", f"{timing.all_cores()} threads", "float32"):
        assert word in first
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 2 * (1 + len(data["results"]))  # main and breakdown tables, each with a header row
    assert "masked form" in text and "efficiency" in text


def test_human_output_goes_to_stdout_and_threads_are_reported(capsys, models):
    code, out, err = cli(capsys, "bench", models["shrunk"], *FAST, "--seconds", "0.5", "--threads", "1")
    assert code == 0, err
    assert "1 threads" in out and "| shrunk |" in out and "speedup" in out
    assert "loading" in err and "|" not in err


class InProcess:
    """``Workers`` without the processes: each model's ``WorkerModel`` in this process, asked directly."""

    def __init__(self, models, device, threads, reporter):
        self.models, self.device, self.threads = models, device, threads

    def __enter__(self):
        workers = []
        for model in self.models:
            served = WorkerModel(model.source, model.quantize, model.runtime, str(self.device), self.threads)
            vars(model).update(served.loaded())

            def ask(command, *arguments, served=served):
                with torch.inference_mode():
                    return getattr(served, command)(*arguments)
            workers.append(SimpleNamespace(model=model, pid=os.getpid(), ask=ask))
        return workers

    def __exit__(self, *exc):
        pass


def test_compile_adds_compiled_rows(monkeypatch, models):
    compiled = []

    def fake_compile(fn, mode=None):
        compiled.append(mode)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(core, "Workers", InProcess)  # the fake compile is this process's
    data = core.bench(core.BenchOptions(models=[str(models["shrunk"])], baseline=str(models["stock"]), device="cpu",
                                        seconds=[0.5], warmup=0, repeat=1, min_time=0, compile=True, breakdown=True))
    assert [(r["compiled"], r["breakdown_ms"] is None) for r in data["results"]] == [
        (False, False), (False, False), (True, True), (True, True)]  # hooks stay off compiled graphs
    assert compiled == ["default", "default"]  # each model once; CUDA graphs ("reduce-overhead") on GPUs only


def test_rounds_in_two_states_of_the_machine_are_named_in_one_warning(monkeypatch, models):
    # the baseline's median falls in the fast state, the shrunk model's in the slow one
    recorded = [[0.9, 1.17, 0.9, 0.9, 1.17], [0.3, 0.39, 0.3, 0.39, 0.39], [0.9, 1.17, 0.9, 0.9, 1.17]]
    monkeypatch.setattr(core, "rounds", lambda timers, **_: recorded)
    monkeypatch.setattr(core, "Workers", InProcess)
    warnings = []
    reporter = Reporter()
    reporter.warning = warnings.append
    data = core.bench(core.BenchOptions(models=[str(models["shrunk"]), str(models["run"])],
                                        baseline=str(models["stock"]), device="cpu", seconds=[0.5]), reporter)
    shrunk, run = data["results"][1:]
    assert shrunk["speedup"] == pytest.approx(3.0) and shrunk["speedup_of_medians"] == pytest.approx(0.9 / 0.39)
    assert run["speedup"] == run["speedup_of_medians"] == pytest.approx(1.0)
    assert len(warnings) == 1 and "changed speed between rounds" in warnings[0]
    assert warnings[0].split("per-round ratios for ")[1].split(")")[0] == shrunk["model"]  # only the unsteady one


# ---------------------------------------------------------------- one process per model


def test_every_model_is_timed_in_a_process_of_its_own_and_keeps_its_place(models):
    described = [describe(str(models[kind])) for kind in ("stock", "shrunk", "run")]
    with Workers(described, torch.device("cpu"), 1, Reporter()) as workers:
        pids = [worker.pid for worker in workers]
        assert len(set(pids)) == 3 and os.getpid() not in pids
        assert [worker.model for worker in workers] == described  # in the order of the models
        for worker in workers:
            assert is_running(worker.pid)
            worker.ask("prepare", 0.5, 1, "float32", None, 0)
            assert worker.ask("time") > 0
        assert described[1].params < described[0].params == described[2].params  # what loading found came back
        assert "masked form" in described[2].note
    assert not any(is_running(pid) for pid in pids)  # stopped on exit


def test_results_keep_the_order_and_names_of_the_models(report):
    data, _ = report
    labels = [model["label"] for model in data["models"]]
    assert [row["model"] for row in data["results"]] == labels * 4  # every setting, in the order of the models
    assert "own process" in data["method"]["rounds"]


def test_a_worker_that_dies_is_one_line_naming_the_model(models):
    described = [describe(str(models["shrunk"]))]
    with Workers(described, torch.device("cpu"), 1, Reporter()) as workers:
        os.kill(workers[0].pid, signal.SIGKILL)
        with pytest.raises(ModelError) as died:
            workers[0].ask("time")
    message = str(died.value)
    assert "\n" not in message and "shrunk" in message and "killed by SIGKILL" in message and "alone" in message


def test_workers_are_stopped_when_the_parent_is_interrupted(models):
    described = [describe(str(models["shrunk"])), describe(str(models["stock"]))]
    with pytest.raises(KeyboardInterrupt):
        with Workers(described, torch.device("cpu"), 1, Reporter()) as workers:
            pids = [worker.pid for worker in workers]
            raise KeyboardInterrupt  # Ctrl-C reaches the parent; the workers ignore it
    assert not any(is_running(pid) for pid in pids)


def test_an_error_in_a_worker_is_raised_in_the_parent_as_it_was(tmp_path, models):
    damaged = tmp_path / "damaged"
    shutil.copytree(models["shrunk"], damaged)
    (damaged / "model.safetensors").write_bytes(b"not weights" * 100)
    with pytest.raises(SpeechpruneError, match="damaged"):
        with Workers([describe(str(damaged))], torch.device("cpu"), 1, Reporter()):
            pass


def is_running(pid: int) -> bool:
    """The process ``pid`` runs (not a zombie), read from /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------- MACs


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_macs_equal_the_flop_counter_of_stock_and_shrunk_models(family):
    hf = build_model(family, "base", attn_implementation="eager")  # eager attention: matmuls the counter sees
    spec = FAMILIES[family].spec_from_config(hf.config)
    encoder = Encoder(spec).eval()
    encoder.load_state_dict(FAMILIES[family].to_encoder_keys(hf.state_dict()))
    values = edge_case_values(GateLayout(spec), seed=0)
    small_spec, state = shrink_encoder(spec, encoder.state_dict(), values.layout, values.flat)
    small = Encoder(small_spec).eval().requires_grad_(False)
    small.load_state_dict(state)
    x = torch.randn(2, 16000)
    hf.requires_grad_(False)
    # grad mode on (nothing requires grad): conv layer 0 takes its plain path, whose MACs are the
    # model's; its CPU inference path adds T' K^2 MACs of statistics (0.004 % of a Base model's)
    with sdpa_kernel(SDPBackend.MATH):
        counted = []
        for model in (hf, small):
            with FlopCounterMode(display=False) as counter:
                model(x)
            counted.append(counter.get_total_flops() // 2)  # a multiply-accumulate is 2 FLOPs
    assert counted[0] == macs(spec, 16000, batch=2)["total"]
    # ragged heads: projections at the stored widths, attention products padded to the widest head
    assert small_spec.layers[0].qk_dims is not None
    assert macs(small_spec, 16000, batch=2)["total"] == counted[1] < counted[0]


def test_macs_scale_linearly_except_attention_scores():
    spec = FAMILIES["wav2vec2"].spec_from_config(build_model("wav2vec2").config)
    lengths = [frames(spec, n) for n in (16000, 32000, 64000)]  # 49, 99, 199 frames
    counts = [macs(spec, n) for n in (16000, 32000, 64000)]
    for part in ("projection", "ffn"):  # exactly proportional to the frames
        assert [c[part] / t for c, t in zip(counts, lengths)] == pytest.approx([counts[0][part] / lengths[0]] * 3)
    for c, factor in zip(counts[1:], (2, 4)):  # the CNN: proportional to the samples, up to its edge frames
        assert c["cnn"] / counts[0]["cnn"] == pytest.approx(factor, rel=0.01)
    # attention: a T' + b T'^2, with b = per layer, the summed q/k and v/o widths (scores and weighted sum)
    b = sum(sum(layer.head_widths()[0]) + sum(layer.head_widths()[1]) for layer in spec.layers)
    a = (counts[0]["attention"] - b * lengths[0] ** 2) / lengths[0]
    for c, t in zip(counts, lengths):
        assert c["attention"] == a * t + b * t * t
    assert set(counts[0]) == {*PARTS, "total"} and counts[0]["total"] == sum(counts[0][p] for p in PARTS)
    assert macs(spec, 16000, batch=3)["total"] == 3 * counts[0]["total"]


# ---------------------------------------------------------------- memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident-memory peak is read from /proc")
def test_peak_memory_sees_a_temporary_allocation():
    def allocate():
        torch.ones(16_000_000).sum()  # 64 MB, touched, then freed

    peak = timing.peak_memory(allocate, torch.device("cpu"))
    assert 60e6 < peak < 200e6


# ---------------------------------------------------------------- errors, before any weights load


@pytest.mark.parametrize("args,words", [
    (["--seconds", "0"], ["--seconds", "positive"]),
    (["--seconds", "-1,5"], ["--seconds", "positive"]),
    (["--seconds", "1,x"], ["--seconds", "comma-separated"]),
    (["--seconds", "0.001"], ["--seconds", "too short"]),
    (["--batch", "0"], ["--batch", "positive"]),
    (["--batch", "1.5"], ["--batch"]),
    (["--threads", "0"], ["--threads"]),
    (["--threads", "100000"], ["--threads", "per core"]),  # torch crashed starting them
    (["--dtype", "float8"], ["--dtype", "float8"]),
    (["--dtype", "float16"], ["float16", "cpu"]),
    (["--dtype", "fp32,fp16"], ["--dtype float16", "cpu"]),  # the short spellings are aliases
    (["--device", "tpu"], ["--device", "tpu"]),
])
def test_bad_options_are_usage_errors(capsys, model_dir, no_loading, args, words):
    result = cli(capsys, "bench", model_dir("wav2vec2"), "--device", "cpu", *args)
    assert_clean_error(result, 2, *words)


def test_cuda_without_a_gpu(capsys, model_dir, no_loading, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_clean_error(cli(capsys, "bench", model_dir("wav2vec2"), "--device", "cuda"), 2, "--device cuda", "no CUDA GPU")


def test_options_are_checked_before_the_models(capsys, tmp_path, no_loading):
    assert_clean_error(cli(capsys, "bench", tmp_path / "missing", "--seconds", "0"), 2, "--seconds")


def test_baseline_with_another_sampling_rate(capsys, tmp_path, model_dir, no_loading):
    narrow = tmp_path / "narrow"
    shutil.copytree(model_dir("wav2vec2"), narrow)
    (narrow / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 8000}))
    result = cli(capsys, "bench", model_dir("wav2vec2"), "--baseline", narrow, "--device", "cpu")
    assert_clean_error(result, 2, "16000 Hz", "8000 Hz")


def test_missing_model(capsys, tmp_path):
    assert_clean_error(cli(capsys, "bench", tmp_path / "missing", "--device", "cpu"), 1, "does not exist")


def test_unknown_option_is_a_usage_error(capsys, model_dir):
    code, out, err = cli(capsys, "bench", model_dir("wav2vec2"), "--bogus", "1")
    assert code == 2 and "--bogus" in err and out == ""
