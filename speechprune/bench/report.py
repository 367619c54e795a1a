"""What ``bench`` reports (``--json`` prints it), typed and versioned (``io.versioned``). Its
sections are JSON-ready dicts, described in docs/bench.md. ``--cost-model`` writes a cost table
instead (``method.latency.CostTable``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..io.versioned import Versioned

REPORT_FORMAT = 1


@dataclass
class BenchReport(Versioned):
    WHAT = "bench report"

    environment: dict  # versions, device, threads, dtypes, and how busy other processes kept the CPU
    method: dict  # warm-up, rounds, minimum time, seed, timer, compile mode, how MACs are counted
    baseline: str | None  # the baseline's label among the models; None without --baseline
    latency_table: str | None  # --latency-table
    models: list[dict]  # one per model, the baseline first: label, source, kind, size, runtime, quantization
    results: list[dict]  # one per model and setting: latency, throughput, memory, MACs, speedup, prediction
    format: int = REPORT_FORMAT
