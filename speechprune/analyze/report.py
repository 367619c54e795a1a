"""What ``analyze`` reports (``--json`` prints it, ``--out`` writes it), typed and versioned
(``io.versioned``). Its sections are JSON-ready dicts, described in docs/analyze.md; a section
that was not computed is None. ``prune --scores`` reads its ``gate_scores``."""

from __future__ import annotations

from dataclasses import dataclass

from ..folders.target import ModelReport
from ..io.versioned import Versioned

REPORT_FORMAT = 1


@dataclass
class AnalyzeReport(ModelReport, Versioned):
    WHAT = "analyze report"

    audio: dict | None  # the audio analyzed (source, files, seconds, crop_seconds, batches, skipped); with --data
    method: dict | None  # projections, the definitions of the statistics, the passes run; with --data
    heads: dict | None  # statistic -> layers x heads (drop_one_by_layer: x later layers); with --data
    gate_scores: dict | None  # importance per gated structure, in method.gates.gate_dict form; with --data
    run: dict | None  # what a prune run kept and what it costs; for a run
    teacher: dict | None  # similarity to --teacher per hidden state (cosine, l1, cka)
    format: int = REPORT_FORMAT
