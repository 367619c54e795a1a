"""Where a model runs: device, dtype names, numeric precision, and torch.distributed (torchrun) ranks."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UsageError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}  # --dtype names
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "Distributed":
        """Ranks as set by torchrun (RANK, WORLD_SIZE, LOCAL_RANK); a single process otherwise."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank (e.g. one rank got Ctrl-C)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def agree(self, tensors: list[torch.Tensor]) -> bool:
        """True if every rank holds bit-identical ``tensors`` (checked through a checksum)."""
        if not self.enabled:
            return True
        flat = torch.cat([t.detach().double().flatten().cpu() for t in tensors])
        checksum = torch.stack([flat.sum(), (flat * torch.arange(1, len(flat) + 1, dtype=flat.dtype)).sum()])
        gathered = [torch.zeros_like(checksum) for _ in range(self.world_size)]
        dist.all_gather(gathered, checksum)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


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
