"""The processes of a run: torch.distributed ranks as torchrun sets them, and what they agree on."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
