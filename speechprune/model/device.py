"""Where a model runs: the device, the precision names of ``--dtype`` and ``--precision``, and autocast."""

from __future__ import annotations

import contextlib

import torch

from ..errors import UsageError

# The one precision vocabulary of every command (--dtype, --precision) and of what they store.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Short spellings that prune --precision took before 0.2 (and run folders stored): still accepted.
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# The precisions each kind of device runs (autocast in prune, weights cast in bench); a CUDA GPU
# runs bfloat16 only when it has it (check_precision asks).
DEVICE_DTYPES = {"cpu": ("float32", "bfloat16"), "mps": ("float32", "float16"), "cuda": tuple(DTYPES)}


def dtype_name(name: str) -> str:
    """The canonical spelling of a precision name (``fp32`` -> ``float32``); other names pass
    unchanged, for the option's own check to accept or refuse."""
    return DTYPE_ALIASES.get(name, name)


def check_precision_name(name: str, option: str) -> None:
    """Refuse (usage error) a ``name`` given to ``option`` (--precision, --dtype) that is no precision."""
    if name not in DTYPES:
        raise UsageError(f"{option} must be one of {', '.join(DTYPES)}, got {name!r}")


def resolve_device(name: str, local_rank: int = 0, *, cpu_only: bool = False) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a device that exists here.

    ``auto``, every command's default, is a CUDA GPU, else Apple's MPS, else the CPU; it is the
    CPU when the job asked for runs only there (``cpu_only``: int8 kernels, ONNX Runtime), so
    that the default never refuses an option. A device named outright is checked by the job."""
    name = name.strip().lower()
    if name == "auto" and cpu_only:
        return torch.device("cpu")
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


def check_precision(precision: str, device: torch.device, option: str) -> None:
    """Refuse (usage error) a precision ``device`` does not run (``DEVICE_DTYPES``), given to ``option``."""
    runs = DEVICE_DTYPES[device.type]
    if precision not in runs:
        raise UsageError(f"{option} {precision} is not supported on {device.type}; use {' or '.join(runs)}")
    if precision == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"{option} bfloat16: this GPU has no bfloat16 support; use float16 or float32")


def autocast(precision: str, device: torch.device):
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
