"""Write files so that a crash or Ctrl-C never leaves a half-written one behind.

Everything is written to a temporary name in the same folder, flushed to disk, then renamed
over the final name (rename is atomic on POSIX file systems).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file


def _write_via_temp(path: Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    _write_via_temp(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses non-contiguous tensors and tensors sharing memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    _write_via_temp(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def write_torch(path: Path, obj) -> None:
    _write_via_temp(path, lambda tmp: torch.save(obj, tmp))


def write_file(path: Path, write: Callable[[Path], None]) -> None:
    """Any file: ``write(tmp)`` writes (and may check) it under a temporary name; an exception leaves nothing."""
    _write_via_temp(path, write)
