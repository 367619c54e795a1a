"""How speechprune quantizes a model for inference; ``bench`` and ``eval`` both come here.

One scheme today, ``int8``: torch's dynamic quantization of every ``nn.Linear`` (weights int8,
activations quantized per call from their observed range). The CNN, the positional
convolution and the norms stay float32: they are not Linear layers. Shrunk models call
their projections as modules at their stored widths, so the stock replacement modules drop
in. Under ONNX Runtime the same scheme is ORT's dynamic quantization of MatMul nodes
(``quantize_onnx``).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from .onnx import quiet

SCHEMES = ("int8",)
DESCRIPTIONS = {
    ("torch", "int8"): "dynamic int8: nn.Linear layers; CNN, positional conv and norms stay float32",
    ("onnxruntime", "int8"): "ORT dynamic int8: MatMul nodes; CNN, positional conv and norms stay float32",
}


def check_scheme(scheme: str | None, device: torch.device, option: str = "--quantize") -> None:
    """Refuse an unknown scheme, or one this device cannot run (before any weights load)."""
    if scheme is None:
        return
    if scheme not in SCHEMES:
        raise UsageError(f"{option} must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if device.type != "cpu":
        raise UsageError(f"{option} {scheme} runs on the CPU only (dynamic int8 kernels); use --device cpu")


def describe(scheme: str | None, runtime: str = "torch") -> str | None:
    """What ``scheme`` quantizes under ``runtime``, in words (None: not quantized)."""
    return None if scheme is None else DESCRIPTIONS[(runtime, scheme)]


def quantize(module: nn.Module, scheme: str, *, inplace: bool = False) -> nn.Module:
    """``module`` (float32, on the CPU) with its Linear layers quantized by ``scheme``.

    ``inplace=True`` swaps the layers inside ``module`` itself, so that code holding it (a
    prune run's masked forward) runs quantized; otherwise a quantized copy is returned.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}")
    target = module if inplace else copy.deepcopy(module)
    with warnings.catch_warnings():  # torch.ao announces its move to torchao; the API still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)


def quantize_onnx(source: str | Path, target: str | Path) -> None:
    """ORT dynamic int8 quantization of the MatMul nodes of ``source`` (the Linear layers), to ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
