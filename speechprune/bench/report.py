"""What ``bench`` reports (``--json`` prints it), typed and versioned (``io.versioned``). Its
sections are JSON-ready dicts, described in docs/bench.md. ``--cost-model`` writes a cost table
instead (``method.latency.CostTable``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FormatError
from ..io.versioned import Versioned
from .timing import speedup

# 3: speedup is the median of per-round ratios, speedup_of_medians the ratio of medians (format 2's speedup);
# 2: latency_reference, and each result's predicted_speedup_vs_stock; 1 and 2: still read
REPORT_FORMAT = 3
SPEEDUP_METHOD = ("median over rounds of the baseline's time / the model's in the same round (speedup_of_medians: "
                  "the baseline's median / the model's)")


@dataclass
class BenchReport(Versioned):
    WHAT = "bench report"

    environment: dict  # versions, device, threads, dtypes, and how busy other processes kept the CPU
    method: dict  # warm-up, rounds, minimum time, seed, timer, how speedups are taken, compile mode, MACs
    baseline: str | None  # the baseline's label among the models; None without --baseline
    latency_table: str | None  # --latency-table
    latency_reference: dict | None  # a format 3 table's runtime, its dense model's time there, and stock's
    models: list[dict]  # one per model, the baseline first: label, source, kind, size, runtime, quantization
    results: list[dict]  # one per model and setting: latency, throughput, memory, MACs, speedup, prediction
    format: int = REPORT_FORMAT

    @classmethod
    def from_dict(cls, data: dict) -> "BenchReport":
        """A report of this format, or of an older one: format 1 (before runtime tables: no
        reference, no predicted speedup against stock) or 2 (its speedup the ratio of medians)."""
        if isinstance(data, dict) and data.get("format") == 1:
            data = {**data, "format": 2, "latency_reference": None,
                    "results": [{"predicted_speedup_vs_stock": None, **row} for row in data.get("results", [])]}
        if isinstance(data, dict) and data.get("format") == 2:
            data = _paired(data)
        return super().from_dict(data)


def _paired(data: dict) -> dict:
    """A format 2 report as format 3: each speedup taken again from the rounds (``times_ms``) as
    the median of per-round ratios, its ratio of medians kept as ``speedup_of_medians``."""
    try:
        return {**data, "format": REPORT_FORMAT, "method": {**data["method"], "speedup": SPEEDUP_METHOD},
                "results": _paired_results(data["results"], data["baseline"])}
    except (KeyError, TypeError, ZeroDivisionError) as error:
        raise FormatError(f"bench report of format 2 without what its speedups are taken from ({error!r}): it is "
                          "damaged; make it again") from None


def _paired_results(results: list[dict], baseline: str | None) -> list[dict]:
    settings = ("seconds", "batch", "dtype", "compiled")
    baselines = {tuple(row[key] for key in settings): row["times_ms"] for row in results if row["model"] == baseline}
    paired = []
    for row in results:
        row = {**row, "speedup_of_medians": row["speedup"]}
        if row["speedup"] is not None:
            taken = speedup(baselines[tuple(row[key] for key in settings)], row["times_ms"])["speedup"]
            row["efficiency"] *= taken / row["speedup"]
            row["speedup"] = taken
        paired.append(row)
    return paired
