"""What ``eval`` reports (``--json`` prints it, ``--out`` writes it), typed and versioned
(``io.versioned``). Its sections are JSON-ready dicts, described in docs/eval.md."""

from __future__ import annotations

from dataclasses import dataclass

from ..folders.target import ModelReport
from ..io.versioned import Versioned

REPORT_FORMAT = 1


@dataclass
class EvalReport(ModelReport, Versioned):
    WHAT = "eval report"

    data: dict  # the labelled audio: sources, split, classes, clips per label, seconds, what was skipped
    probe: dict  # the probe over every hidden state (probe.ClassifierProbe.to_dict())
    per_layer_accuracy: list[float] | None  # test accuracy of a probe per hidden state; None with --no-per-layer
    best_layer: dict | None  # the state whose probe did best, and its accuracy; None with --no-per-layer
    teacher: dict | None  # with --teacher: its own probe, and the student's hidden-state fidelity to it
    runtime: str  # torch or onnxruntime: how the probed model ran
    quantization: dict | None  # with --quantize or --runtime onnxruntime: the scheme, and the fidelity to float32 torch
    method: dict  # how features and probes are made, and their settings
    passes: dict  # forward passes and probe fits actually run
    time_seconds: dict  # wall time per phase (the one section that differs between equal runs)
    format: int = REPORT_FORMAT
