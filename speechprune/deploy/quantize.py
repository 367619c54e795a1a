"""How speechprune quantizes a model for inference; ``bench`` and ``eval`` both come here.

``int8``: torch's dynamic quantization of every ``nn.Linear`` (weights int8, activations
quantized per call from their observed range). The CNN, the positional convolution and the
norms stay float32: they are not Linear layers. Shrunk models call their projections as
modules at their stored widths, so the stock replacement modules drop in. Under ONNX Runtime
the same scheme is ORT's dynamic quantization of MatMul nodes (``quantize_onnx``).

``int8-static`` (ONNX Runtime only): the convolutions too, which are most of a pruned model's
CPU time. A convolution's activations cannot be quantized per call cheaply, so their ranges
are calibrated once, on audio (``calibration``), and written into the graph as QDQ pairs that
ORT fuses into int8 convolutions; the MatMul nodes stay dynamic int8 (faster than static
here, and no range to calibrate). The first convolution, which reads the waveform, stays
float32: quantizing it cost the quality benchmark's CTC teacher a cosine of 0.94 to float32 in
every hidden state, against 0.9998 without it, for a few milliseconds (one input channel).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from .calibration import CalibrationReader
from .onnx import quiet

SCHEMES = ("int8", "int8-static")
STATIC = ("int8-static",)  # calibrated on audio, in ONNX Runtime only
DESCRIPTIONS = {
    ("torch", "int8"): "dynamic int8: nn.Linear layers; CNN, positional conv and norms stay float32",
    ("onnxruntime", "int8"): "ORT dynamic int8: MatMul nodes; CNN, positional conv and norms stay float32",
    ("onnxruntime", "int8-static"): "ORT static int8 (QDQ, calibrated on --data): the convolutions but the first, "
                                    "positional conv included; MatMul nodes dynamic int8; the first conv and norms "
                                    "stay float32",
}


def check_scheme(scheme: str | None, device: torch.device, option: str = "--quantize", *, runtime: str = "torch",
                 data: str | None = None, runtime_option: str = "--runtime") -> None:
    """Refuse an unknown scheme, one this device or ``runtime`` (given as ``runtime_option``)
    cannot run, or a static one without ``data`` (``--data``) to calibrate on (before any weights load)."""
    if scheme is None:
        return
    if scheme not in SCHEMES:
        raise UsageError(f"{option} must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if device.type != "cpu":
        raise UsageError(f"{option} {scheme} runs on the CPU only (int8 kernels); use --device cpu")
    if scheme in STATIC and runtime != "onnxruntime":
        raise UsageError(f"{option} {scheme} is ONNX Runtime's static quantization: add {runtime_option} onnxruntime, "
                         f"or use {option} int8 in torch")
    if scheme in STATIC and data is None:
        raise UsageError(f"{option} {scheme} calibrates its activation ranges on audio: pass --data FOLDER "
                         "(speech files or a manifest)")


def describe(scheme: str | None, runtime: str = "torch") -> str | None:
    """What ``scheme`` quantizes under ``runtime``, in words (None: not quantized)."""
    return None if scheme is None else DESCRIPTIONS[(runtime, scheme)]


def quantize(module: nn.Module, scheme: str, *, inplace: bool = False) -> nn.Module:
    """``module`` (float32, on the CPU) with its Linear layers quantized by ``scheme``.

    ``inplace=True`` swaps the layers inside ``module`` itself, so that code holding it (a
    prune run's masked forward) runs quantized; otherwise a quantized copy is returned.
    """
    if scheme not in SCHEMES or scheme in STATIC:
        raise ValueError(f"{scheme!r} is not a quantization scheme of torch's")
    target = module if inplace else copy.deepcopy(module)
    with warnings.catch_warnings():  # torch.ao announces its move to torchao; the API still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)


def quantize_onnx(source: str | Path, target: str | Path, scheme: str = "int8",
                  calibration: Sequence[np.ndarray] | None = None) -> None:
    """``source`` quantized by ``scheme`` under ONNX Runtime, to ``target``: ``int8``, ORT dynamic
    int8 of the MatMul nodes (the Linear layers); ``int8-static``, first the convolutions
    statically on the ranges ``calibration`` gives (clips (T,) as the model takes them,
    ``calibration.read_calibration``), then the MatMul nodes dynamically. Only ``target`` and
    temporary files are written."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}")
    if scheme in STATIC:
        if not calibration:
            raise ValueError(f"{scheme} needs calibration clips")
        with tempfile.TemporaryDirectory(prefix="speechprune-static-") as scratch:
            convolutions = Path(scratch) / "convolutions.onnx"
            _static_convolutions(Path(source), convolutions, calibration)
            _dynamic_matmuls(convolutions, Path(target))
        return
    _dynamic_matmuls(Path(source), Path(target))


def _dynamic_matmuls(source: Path, target: Path) -> None:
    """ORT dynamic int8 of the MatMul nodes of ``source`` (weights int8, activations per call), to ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)


def _static_convolutions(source: Path, target: Path, clips: Sequence[np.ndarray]) -> None:
    """The Conv nodes of ``source`` but the first (the waveform's) in QDQ int8 (activations uint8
    on ranges calibrated on ``clips``, weights int8 per output channel), to ``target``. ORT
    writes its augmented calibration graph to a temporary folder of its own."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    graph = onnx.load(str(source)).graph
    convolutions = [node.name for node in graph.node if node.op_type == "Conv"]  # in topological order
    reader = CalibrationReader(clips, takes_mask=any(node.name == "attention_mask" for node in graph.input))
    with quiet():
        quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=convolutions[:1], calibrate_method=CalibrationMethod.MinMax)
