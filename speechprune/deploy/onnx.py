"""ONNX export of an encoder, checked with ONNX Runtime before it is kept.

The export goes through ``torch.export`` (``torch.onnx.export(dynamo=True)``) with dynamic
batch and time axes: the legacy TorchScript exporter records one trace and gives wrong results
at other lengths. The graph takes ``input_values`` (B, T) float32 and, for models fed padding
masks, ``attention_mask`` (B, T) int64, and returns ``last_hidden_state`` (B, T', D) (and, if
asked, ``hidden_states`` (L + 1, B, T', D)). Before the file is kept, ONNX Runtime runs it at
another batch size and length than the export example, and its outputs must match torch's
within ``RELATIVE_LIMIT``; otherwise nothing is written. onnx, onnxscript and onnxruntime are
the optional ``speechprune[onnx]`` extra.

``export_fixed`` exports any module at the fixed shapes of its example inputs, unchecked, for
timing (``bench --cost-model --runtime onnxruntime``): a cost table times hundreds of graphs, and
the dynamo exporter takes tens of seconds per graph where TorchScript's takes one or two.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..io.atomic import write_with
from ..io.batches import normalized
from ..io.synth import speechlike
from .sessions import io_names, session

ONNX_FILE = "model.onnx"  # its name in a shrunk model folder
RELATIVE_LIMIT = 1e-4  # max |onnx - torch| / max |torch| over every output, float32
EXAMPLE = (2, 1.0)  # batch, seconds of the input the graph is traced with
CHECK = (3, 1.37)  # another batch and length: dynamic axes must really be dynamic
PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def require_onnx() -> None:
    """One clear error (exit 1) when the optional ONNX packages are missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export and runtime need {', '.join(missing)}: pip install 'speechprune[onnx]'")


class EncoderGraph(nn.Module):
    """What is exported: the encoder's forward as plain tensors in, plain tensors out."""

    def __init__(self, model: nn.Module, hidden_states: bool):
        super().__init__()
        self.model = model
        self.hidden_states = hidden_states

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        out = self.model.encode(input_values, attention_mask)
        if self.hidden_states:
            return out.last_hidden_state, torch.stack(out.hidden_states)  # (B, T', D), (L + 1, B, T', D)
        return out.last_hidden_state


def generated_inputs(batch: int, seconds: float, sampling_rate: int, attention_mask: bool,
                     seed: int) -> dict[str, torch.Tensor]:
    """Generated speech (B, T), normalised; the last row padded after half its length when masks are used."""
    rng = np.random.default_rng(seed)
    samples = round(seconds * sampling_rate)
    audio = np.stack([speechlike(samples / sampling_rate, sampling_rate, rng)[:samples] for _ in range(batch)])
    audio = normalized(audio)
    inputs = {"input_values": torch.from_numpy(audio.astype(np.float32))}
    if attention_mask:
        mask = torch.ones(batch, samples, dtype=torch.long)
        mask[-1, samples // 2 :] = 0
        inputs["input_values"][-1, samples // 2 :] = 0
        inputs["attention_mask"] = mask
    return inputs


def export_onnx(model: nn.Module, path: str | Path, *, attention_mask: bool, sampling_rate: int,
                hidden_states: bool = False) -> dict:
    """Export ``model`` (an ``EncoderModules`` model, float32, CPU) to ``path``, checked against torch.

    Returns what was written: inputs, outputs, and the measured max relative error.
    """
    require_onnx()
    from torch.export import Dim

    path = Path(path)
    graph = EncoderGraph(model.eval(), hidden_states)
    example = generated_inputs(*EXAMPLE, sampling_rate, attention_mask, seed=0)
    names = list(example)
    outputs = ["last_hidden_state"] + (["hidden_states"] if hidden_states else [])
    dynamic = {name: {0: Dim.DYNAMIC, 1: Dim.DYNAMIC} for name in names}
    with quiet(), torch.no_grad():
        program = torch.onnx.export(graph, (), kwargs=example, dynamo=True, input_names=names, output_names=outputs,
                                    dynamic_shapes=dynamic, verbose=False)
    measured = {}

    def save_checked(tmp: Path) -> None:
        program.save(str(tmp), external_data=False)  # one file (models up to 2 GB)
        measured["error"] = check_onnx(session(tmp, threads=None), graph,
                                       generated_inputs(*CHECK, sampling_rate, attention_mask, seed=1))
        if not measured["error"] < RELATIVE_LIMIT:
            raise ExportError(f"the ONNX export differs from the torch model by {measured['error']:.1e} relative on "
                              f"another input length (limit {RELATIVE_LIMIT:.0e}); nothing was written")

    write_with(path, save_checked)
    return {"path": str(path), "inputs": names, "outputs": outputs, "max_relative_error": measured["error"],
            "bytes": path.stat().st_size}


class _Fixed(nn.Module):
    """``module`` called on the tensors it is given, with None at the positions ``absent``; an
    encoder's output reduced to its last hidden state."""

    def __init__(self, module: nn.Module, absent: set[int]):
        super().__init__()
        self.module, self.absent = module, absent

    def forward(self, *tensors: torch.Tensor):
        given = iter(tensors)
        out = self.module(*(None if i in self.absent else next(given) for i in range(len(tensors) + len(self.absent))))
        return getattr(out, "last_hidden_state", out)


def export_fixed(module: nn.Module, inputs: tuple, path: str | Path) -> list[str]:
    """Export ``module`` (float32, CPU) called on ``inputs`` (tensors, or None for an optional input
    it is not given) to ``path`` at exactly those shapes, with TorchScript's exporter; returns the
    graph's input names, ``input_i`` for the i-th tensor (one the graph does not read is left out)."""
    require_onnx()
    absent = {i for i, x in enumerate(inputs) if x is None}
    tensors = tuple(x for x in inputs if x is not None)
    names = [f"input_{i}" for i in range(len(tensors))]
    with quiet(), torch.no_grad():
        torch.onnx.export(_Fixed(module.eval(), absent), tensors, str(path), dynamo=False, input_names=names)
    return names


def recheck(runner, model: nn.Module, sampling_rate: int) -> float:
    """An export written before (``shrink --onnx``, ``export-onnx``), open in ``runner`` (an ORT
    session), checked against ``model``'s weights now as an export is: the max relative error
    on a fresh input. A file left over from other weights fails the check."""
    names, outputs = io_names(runner)
    graph = EncoderGraph(model.eval(), hidden_states="hidden_states" in outputs)
    inputs = generated_inputs(*CHECK, sampling_rate, attention_mask="attention_mask" in names, seed=2)
    return check_onnx(runner, graph, inputs)


def check_onnx(runner, graph: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Max relative error of ``runner``'s (an ORT session's) outputs against torch's, over every output."""
    pairs = paired_outputs(runner, graph, inputs)
    if pairs is None:
        return float("inf")
    return max_relative_error(pairs)


def paired_outputs(runner, graph: nn.Module,
                   inputs: dict[str, torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(ORT's output, torch's) of each output of ``graph`` on ``inputs``; None when a shape differs
    (a graph of another architecture)."""
    with torch.no_grad():
        expected = graph(**inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = runner.run(None, {name: value.numpy() for name, value in inputs.items()})
    if len(got) != len(expected) or any(g.shape != tuple(e.shape) for g, e in zip(got, expected)):
        return None
    return [(g, e.numpy()) for g, e in zip(got, expected)]


def max_relative_error(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """max |got - expected| / max |expected|, the largest over the (got, expected) pairs."""
    return max(float(np.abs(g - e).max() / max(np.abs(e).max(), 1e-12)) for g, e in pairs)


@contextlib.contextmanager
def quiet():
    """Keep stderr ours: the exporter's and the quantizer's notes (decompositions, a missing
    torchvision, "consider pre-processing") are warnings and log records, not problems."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
