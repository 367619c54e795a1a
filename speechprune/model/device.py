"""Where a model runs: the device, the dtype names of ``--dtype``, and the autocast precision of ``--precision``."""

from __future__ import annotations

import contextlib

import torch

from ..errors import UsageError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}  # --dtype names
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a device that exists here."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError("--device mps: no Apple GPU (MPS) available here; use --device cpu or auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA GPU available here; use --device cpu or auto")
        index = local_rank % torch.cuda.device_count() if name == "cuda" else _cuda_index(name)
        return torch.device("cuda", index)
    raise UsageError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


def _cuda_index(name: str) -> int:
    try:
        index = int(name.split(":", 1)[1])
    except ValueError:
        raise UsageError(f"--device {name!r} is not a device; use cuda:N with N a GPU number") from None
    if not 0 <= index < torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here (cuda:0..)")
    return index


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 is not supported on the CPU; use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError("--precision bf16: this GPU has no bfloat16 support; use fp16 or fp32")


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
