"""The sections of the ``eval`` report that need a loaded model, each made by one function that
returns it with the passes it ran (``Passes``): a model's probes (``probe_section``), the
deployed model against its float32 torch self (``quantization_section``), and the teacher's probes
with the student's hidden-state fidelity to it (``teacher_section``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..deploy.quantize import describe as describe_quantization
from ..folders.target import Target
from ..io.progress import Reporter
from ..model.compare import compare_hidden_states, require_finite
from .features import FrozenFeatures, batch_groups, clip_batches
from .labelled import Clips, LabelledData
from .options import EvalOptions
from .probe import fit_classifier

METHOD = {
    "features": "per clip and hidden state (0 = input of layer 1, k = output of layer k): mean over real "
                "frames of layer_norm(h) per frame, no affine; frozen encoder",
    "probe": "softmax(w) weighted sum over the hidden states (w = 0 at start) -> linear layer; cross-entropy, "
             "Adam, full batch up to 4096 clips",
}


@dataclass
class Passes:
    """Forward passes and probe fits actually run (the report's ``passes``)."""

    student_forward: int = 0
    teacher_forward: int = 0
    float32_forward: int = 0
    classifier_fits: int = 0

    def __add__(self, other: Passes) -> Passes:
        return Passes(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def to_dict(self) -> dict:
        return asdict(self)


def method_section(options: EvalOptions) -> dict:
    """How features and probes are made, and their settings."""
    return {**METHOD, "epochs": options.epochs, "lr": options.lr, "weight_decay": options.weight_decay,
            "batch_seconds": options.batch_seconds,
            "chance": "test accuracy of always answering the most common training label"}


def ran_as(scheme: str | None, runtime: str) -> str:
    """How the evaluated model ran, in a few words: "int8", "onnxruntime float32", "onnxruntime int8"."""
    return scheme if runtime == "torch" else f"{runtime} {scheme or 'float32'}"


def probe_section(net, masks, target: Target, data: LabelledData, options: EvalOptions, device, reporter: Reporter,
                  who: str) -> tuple[dict, int, int]:
    """(probe section, forward passes, classifier fits) for one model: pooled features of every clip,
    one probe over all hidden states, and with per_layer one probe per state."""
    clips, train, test = data.train.audio + data.test.audio, data.train, data.test
    passes = len(batch_groups([len(c) for c in clips], batch_seconds=options.batch_seconds,
                              sampling_rate=target.sampling_rate, same_length=not target.attention_mask))
    reporter.message(f"{who}: features of {len(clips)} clips in {passes} forward pass(es)")
    features = FrozenFeatures(net, attention_mask=target.attention_mask, normalize=target.normalize,
                              sampling_rate=target.sampling_rate, masks=masks, batch_seconds=options.batch_seconds,
                              device=device, progress=reporter.message).pooled(clips)  # (N, L + 1, D)
    require_finite(features, f"{who} {options.teacher if who == 'teacher' else options.model}")
    train_x, test_x = features[: len(train.audio)], features[len(train.audio):]
    fit = {"classes": data.classes, "seed": options.seed, "epochs": options.epochs, "lr": options.lr,
           "weight_decay": options.weight_decay}
    reporter.message(f"{who}: fitting the probe ({options.epochs} epochs)")
    section = {"probe": fit_classifier(train_x, train.labels, test_x, test.labels, **fit).to_dict(),
               "per_layer_accuracy": None, "best_layer": None}
    fits = 1
    if options.per_layer:
        reporter.message(f"{who}: fitting one probe per hidden state ({features.shape[1]})")
        accuracy = [fit_classifier(train_x[:, k : k + 1], train.labels, test_x[:, k : k + 1], test.labels, **fit).accuracy
                    for k in range(features.shape[1])]
        fits += len(accuracy)
        best = int(np.argmax(accuracy))
        section["per_layer_accuracy"] = accuracy
        section["best_layer"] = {"state": best, "accuracy": accuracy[best]}
    return section, passes, fits


def _test_batches(test: Clips, target: Target, batch_seconds: float, same_length: bool | None = None) -> list:
    """The test clips in padded batches as ``target`` takes them (equal lengths unless it uses a padding mask)."""
    same_length = not target.attention_mask if same_length is None else same_length
    return [batch for _, batch in clip_batches(test.audio, batch_seconds=batch_seconds, sampling_rate=target.sampling_rate,
                                               normalize=target.normalize, same_length=same_length)]


def quantization_section(deployed, floats, masks, target: Target, test: Clips, options: EvalOptions, graph, device,
                         reporter: Reporter) -> tuple[dict, Passes]:
    """The scheme and runtime, and the hidden-state fidelity of the ``deployed`` model to ``floats``,
    its float32 torch self, on the test clips."""
    reporter.message(f"comparing the hidden states of the {ran_as(options.quantize, options.runtime)} model "
                     "with float32 torch")
    fidelity = compare_hidden_states(deployed, floats, _test_batches(test, target, options.batch_seconds),
                                     student_mask=target.attention_mask, teacher_mask=target.attention_mask,
                                     device=device, student_masks=masks, teacher_masks=masks)
    passes = fidelity.pop("passes")
    section = {"scheme": options.quantize, "runtime": options.runtime,
               "quantized": describe_quantization(options.quantize, options.runtime), "graph": graph,
               "fidelity": {**fidelity, "clips": len(test.audio)}}
    return section, Passes(student_forward=passes["student_forward"], float32_forward=passes["teacher_forward"])


def teacher_section(net, masks, target: Target, teacher, teacher_target: Target, data: LabelledData,
                    options: EvalOptions, device, reporter: Reporter) -> tuple[dict, Passes]:
    """The teacher's own probes, and the hidden-state fidelity of ``net`` to it on the test clips,
    both models fed the student's input."""
    section, forward, fits = probe_section(teacher, None, teacher_target, data, options, device, reporter, "teacher")
    both_masked = target.attention_mask and teacher_target.attention_mask
    batches = _test_batches(data.test, target, options.batch_seconds, same_length=not both_masked)
    fidelity = compare_hidden_states(net, teacher, batches, student_mask=target.attention_mask,
                                     teacher_mask=teacher_target.attention_mask, device=device,
                                     student_masks=masks, progress=reporter.message)
    passes = fidelity.pop("passes")
    section = {"model": options.teacher, "kind": teacher_target.kind, **section,
               "fidelity": {**fidelity, "clips": len(data.test.audio)}}
    return section, Passes(student_forward=passes["student_forward"],
                           teacher_forward=forward + passes["teacher_forward"], classifier_fits=fits)
