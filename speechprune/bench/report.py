"""What ``bench`` reports (``--json`` prints it), typed and versioned (``io.versioned``). Its
sections are JSON-ready dicts, described in docs/bench.md. ``--cost-model`` writes a cost table
instead (``method.latency.CostTable``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..io.versioned import Versioned

REPORT_FORMAT = 2  # 2: latency_reference, and each result's predicted_speedup_vs_stock; 1: still read


@dataclass
class BenchReport(Versioned):
    WHAT = "bench report"

    environment: dict  # versions, device, threads, dtypes, and how busy other processes kept the CPU
    method: dict  # warm-up, rounds, minimum time, seed, timer, compile mode, how MACs are counted
    baseline: str | None  # the baseline's label among the models; None without --baseline
    latency_table: str | None  # --latency-table
    latency_reference: dict | None  # a format 3 table's runtime, its dense model's time there, and stock's
    models: list[dict]  # one per model, the baseline first: label, source, kind, size, runtime, quantization
    results: list[dict]  # one per model and setting: latency, throughput, memory, MACs, speedup, prediction
    format: int = REPORT_FORMAT

    @classmethod
    def from_dict(cls, data: dict) -> "BenchReport":
        """A report of this format, or of format 1 (before runtime tables: no reference, no
        predicted speedup against stock)."""
        if isinstance(data, dict) and data.get("format") == 1:
            data = {**data, "format": REPORT_FORMAT, "latency_reference": None,
                    "results": [{"predicted_speedup_vs_stock": None, **row} for row in data.get("results", [])]}
        return super().from_dict(data)
