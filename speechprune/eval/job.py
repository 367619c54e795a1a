"""The ``eval`` job: how well a (pruned) encoder's frozen features classify the user's labelled
audio, with a SUPERB-style probe (``speechprune.eval.probe``), and how close it stays to its teacher.

Reading order: check every option (``options.check_options``, nothing read yet), read what the
model (and teacher) is from config files, scan the labelled folders, pick and split the clips and
read their audio (``labelled.prepare_data``), then load weights, compute pooled features and fit
the probes (``sections``). Every problem with the options or the data is found before any weights
load. The report is a ``report.EvalReport`` (schema in docs/eval.md), made once from its sections.

With ``--quantize`` or ``--runtime onnxruntime`` the model probed is the deployed one (torch
dynamic int8, or an ONNX Runtime session of a checked export with hidden states, float32, ORT
int8, or ORT static int8 calibrated on training clips), and the float32 torch model is the
reference its hidden states are compared with.
"""

from __future__ import annotations

import time

import torch

from .. import __version__
from ..checks import check_fits_in_memory
from ..deploy.calibration import calibration_clips
from ..deploy.runtime import OnnxEncoder, deployed_session
from ..deploy.quantize import STATIC, quantize
from ..errors import UsageError
from ..folders.target import Target, check_teacher, load_target, model_fields, read_target
from ..io.outputs import holding, write_json_file
from ..io.progress import Reporter
from ..method.accounting import spec_parameter_count
from ..model.memory import FLOAT_BYTES
from .labelled import LabelledData, prepare_data
from .options import EvalOptions, check_options
from .report import EvalReport
from .sections import Passes, method_section, probe_section, quantization_section, teacher_section

__all__ = ["EvalOptions", "check_options", "evaluate"]


class _Clock:
    """Wall time per phase, in seconds (the report's ``time_seconds``)."""

    def __init__(self):
        self.started = self.mark = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = round(now - self.mark, 3)
        self.mark = now

    def total(self) -> dict:
        return {**self.seconds, "total": round(time.perf_counter() - self.started, 3)}


def _read_targets(options: EvalOptions) -> tuple[Target, Target | None]:
    """What the model and the teacher are, from their config files (no weights)."""
    target = read_target(options.model)
    if options.runtime != "torch" and target.kind == "run":
        raise UsageError(f"--runtime {options.runtime} takes models, not prune runs: shrink {options.model} first")
    teacher_target = read_target(options.teacher) if options.teacher else None
    if teacher_target is not None:
        check_teacher(target, teacher_target)
    weights = sum(FLOAT_BYTES * spec_parameter_count(t.spec) for t in (target, teacher_target) if t is not None)
    check_fits_in_memory(options.model, target.spec, target.sampling_rate,
                         length=("--max-seconds-per-clip", options.max_seconds_per_clip),
                         count=("--batch-seconds", options.batch_seconds), per_input=options.max_seconds_per_clip,
                         training=False, weight_bytes=weights, what="one pass")
    return target, teacher_target


def _deployed(net, target: Target, options: EvalOptions, data: LabelledData, reporter: Reporter):
    """(the model evaluated, its float32 torch reference or None, the ONNX graph's note or None).
    A static scheme calibrates on training clips, never on the test clips it is probed on."""
    if options.runtime == "onnxruntime":  # the ORT model is the one evaluated; float32 torch is the reference
        reporter.message(f"exporting {options.model} with hidden states for ONNX Runtime (or checking its model.onnx)")
        calibration = (calibration_clips(data.train.audio, normalize=target.normalize, seed=options.seed)
                       if options.quantize in STATIC else None)
        runner, graph = deployed_session(target, net, threads=torch.get_num_threads(), quantize=options.quantize,
                                         hidden_states=True, attention_mask=target.attention_mask,
                                         calibration=calibration)
        return OnnxEncoder(runner, net.spec), net, graph
    if options.quantize:  # the quantized model is the one evaluated; its float32 self is the reference
        return quantize(net, options.quantize), net, None
    return net, None, None


def evaluate(options: EvalOptions, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    clock = _Clock()
    device = check_options(options)
    with holding({"--out": options.out}):  # a second eval on it is refused now, not when it writes
        return _evaluate(options, device, clock, reporter)


def _evaluate(options: EvalOptions, device: torch.device, clock: _Clock, reporter: Reporter) -> dict:
    target, teacher_target = _read_targets(options)
    data = prepare_data(options, target, reporter)
    clock.lap("read_audio")

    reporter.message(f"loading {options.model} ({target.kind})")
    net, masks, _ = load_target(target, device)
    net, floats, graph = _deployed(net, target, options, data, reporter)
    clock.lap("load")
    section, forward, fits = probe_section(net, masks, target, data, options, device, reporter, "model")
    passes = Passes(student_forward=forward, classifier_fits=fits)
    clock.lap("probe")
    quantization = None
    if floats is not None:
        quantization, more = quantization_section(net, floats, masks, target, data.test, options, graph, device,
                                                  reporter)
        passes += more
        clock.lap("quantization")
    teacher = None
    if teacher_target is not None:
        reporter.message(f"loading teacher {options.teacher} ({teacher_target.kind})")
        teacher_net, _, _ = load_target(teacher_target, device)
        teacher, more = teacher_section(net, masks, target, teacher_net, teacher_target, data, options, device,
                                        reporter)
        passes += more
        clock.lap("teacher")
    report = EvalReport(speechprune=__version__, **model_fields(options.model, target, net.spec), seed=options.seed,
                        data=data.section, **section, teacher=teacher, runtime=options.runtime,
                        quantization=quantization, method=method_section(options), passes=passes.to_dict(),
                        time_seconds=clock.total())
    result = report.to_dict()
    if options.out:
        write_json_file(options.out, "--out", result)
        reporter.message(f"saved {options.out}")
    return result
