"""A quantized ONNX file to deploy (``export-onnx --quantize``), checked against torch before it is kept.

The float32 export comes first, checked as every export is (``onnx.export_onnx``: within
``RELATIVE_LIMIT`` of torch); it is then quantized exactly as ``bench`` and ``eval`` quantize a
graph (``quantize.quantize_onnx``: ``int8``, or ``int8-static`` on calibration clips). An int8
graph cannot be within 1e-4 of float32, so its check is another one: ONNX Runtime runs it on the
export's check input (another batch and length than the export example, one row padded when the
graph takes a mask) and each frame's hidden state is compared with torch float32 by its cosine.
The graph is kept when the mean over frames, in its worst hidden state, reaches the scheme's
``COSINE_FLOOR``; the max relative error is measured and reported, not limited.

The floors sit far above what a broken graph gives and below what a correct one gives, measured
on the test suite's tiny random models, stock and shrunk, of every family and style: a graph of
other weights of the same architecture gives a mean cosine of -0.10 to 0.05; ``int8`` at least
0.9999; ``int8-static`` at least 0.999 for Large-style models and 0.86 to 0.94 for Base-style
ones, whose random unnormalised convs each lose some (a trained model loses far less: 0.9998 for
the quality benchmark's CTC teacher, docs/deploy.md). A floor checks that the graph computes the
model, not that its quality suits a task: probe that with ``eval --runtime onnxruntime --quantize``.

The scheme is written into the graph's metadata (``sessions.QUANTIZE_KEY``), so a quantized
file put where a float32 export is expected is recognised (``runtime.deployed_session``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ..errors import ExportError
from ..io.atomic import write_with
from .onnx import CHECK, ONNX_FILE, EncoderGraph, export_onnx, generated_inputs, max_relative_error, paired_outputs
from .quantize import describe, quantize_onnx
from .sessions import QUANTIZE_KEY, session

# The least mean cosine per frame to torch float32, in the graph's worst hidden state, of a kept graph.
COSINE_FLOOR = {"int8": 0.99, "int8-static": 0.7}


def quantized_file(scheme: str) -> str:
    """The name of a model folder's quantized export, beside its float32 model.onnx."""
    return f"model.{scheme}.onnx"


def export_quantized(model: nn.Module, path: str | Path, scheme: str, calibration: Sequence[np.ndarray] | None, *,
                     attention_mask: bool, sampling_rate: int, hidden_states: bool = False) -> dict:
    """Export ``model`` (an ``EncoderModules`` model, float32, CPU) to ``path`` quantized by
    ``scheme`` (a static one calibrated on ``calibration``, clips as the model takes them), kept
    only when it passes the check above; ExportError (nothing written) otherwise.

    Returns what was written: inputs, outputs, the scheme, the cosine and the max relative error.
    """
    path = Path(path)
    measured = {}
    with tempfile.TemporaryDirectory(prefix="speechprune-onnx-") as scratch:
        float32 = Path(scratch) / ONNX_FILE
        written = export_onnx(model, float32, attention_mask=attention_mask, sampling_rate=sampling_rate,
                              hidden_states=hidden_states)

        def save_checked(tmp: Path) -> None:
            quantize_onnx(float32, tmp, scheme, calibration)
            _mark(tmp, scheme)
            measured.update(_fidelity(session(tmp, threads=None), model, sampling_rate, attention_mask, hidden_states))
            if not measured["mean"] >= COSINE_FLOOR[scheme]:
                raise ExportError(f"the {scheme} graph's hidden states have a mean cosine of {measured['mean']:.3f} to "
                                  f"the torch model's (floor {COSINE_FLOOR[scheme]}): it does not compute this model; "
                                  "nothing was written")

        write_with(path, save_checked)
    return {"path": str(path), "inputs": written["inputs"], "outputs": written["outputs"],
            "max_relative_error": measured["error"], "bytes": path.stat().st_size, "quantize": scheme,
            "quantization": describe(scheme, "onnxruntime"),
            "cosine": {"mean": measured["mean"], "min": measured["min"], "floor": COSINE_FLOOR[scheme]}}


def _mark(path: Path, scheme: str) -> None:
    """Write ``scheme`` into the graph's metadata, keeping what ONNX Runtime's quantizer wrote there."""
    import onnx

    graph = onnx.load(str(path))
    props = {prop.key: prop.value for prop in graph.metadata_props} | {QUANTIZE_KEY: scheme}
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(path))


def _fidelity(runner, model: nn.Module, sampling_rate: int, attention_mask: bool, hidden_states: bool) -> dict:
    """The quantized graph in ``runner`` against ``model`` in torch float32 on the export's check input:
    ``mean``, the least over hidden states (the last, and every one when the graph outputs them) of
    the mean cosine per real frame; ``min``, the least cosine of any real frame; ``error``, the max
    relative error over every output."""
    inputs = generated_inputs(*CHECK, sampling_rate, attention_mask, seed=1)
    pairs = paired_outputs(runner, EncoderGraph(model.eval(), hidden_states), inputs)
    if pairs is None:
        raise ExportError("the quantized graph's outputs have other shapes than the torch model's; nothing was written")
    last = pairs[0][1]  # (B, T', D)
    real = np.ones(last.shape[:2], dtype=bool)  # (B, T'): frames that read real samples, not padding
    if attention_mask:
        real = model.frame_mask(inputs["attention_mask"], last.shape[1]).numpy()
    states = [pairs[0]] + (list(zip(*pairs[1])) if hidden_states else [])  # each (B, T', D), quantized and float32
    cosines = [_cosines(got, expected)[real] for got, expected in states]
    return {"mean": min(float(c.mean()) for c in cosines), "min": min(float(c.min()) for c in cosines),
            "error": max_relative_error(pairs)}


def _cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """The cosine of each frame, (B, T', D) -> (B, T')."""
    norms = np.maximum(np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1), 1e-12)
    return (got * expected).sum(-1) / norms
