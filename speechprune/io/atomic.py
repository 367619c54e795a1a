"""Write files so that a crash or Ctrl-C never leaves a half-written one behind.

Everything is written to a temporary name in the same folder, flushed to disk, then renamed
over the final name (rename is atomic on POSIX file systems). Temporaries are named
``.NAME.XXXXXXXX.speechprune-tmp`` so that ``remove_stale_temporaries`` can find the ones a
killed writer left, and never anything else. Written files and folders get the modes the
umask allows (0666/0777 & ~umask), like any file the user writes, not mkstemp's private 0600.

JSON is written strictly: NaN and infinities become null, never the bare ``NaN`` that other
JSON readers reject.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from ..errors import DiskFullError

TEMP_SUFFIX = ".speechprune-tmp"
ASIDE_SUFFIX = ".speechprune-old"  # an output folder moved aside while its replacement moves in
_TEMP_TOKEN = "[a-z0-9_]{8}"  # tempfile's random part


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def temp_dir(dest: Path) -> Path:
    """A new empty folder next to ``dest`` (mode 0777 & ~umask), to be renamed to ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=TEMP_SUFFIX, dir=dest.parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def remove_stale_temporaries(dest: Path) -> list[Path]:
    """Delete the temporaries of ``dest`` (files or folders) that a killed writer left next to it;
    an old ``dest`` that ``swap_folder`` had moved aside when it was killed is put back, if no
    new one took its place.

    Call only while holding ``dest``'s lock (``speechprune.io.outputs.OutputLock``): then no live
    writer owns them. Returns what was removed.
    """
    dest = Path(dest)
    suffixes = "|".join(re.escape(suffix) for suffix in (TEMP_SUFFIX, ASIDE_SUFFIX))
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.{_TEMP_TOKEN}({suffixes})")
    removed = []
    if dest.parent.is_dir():
        for entry in sorted(dest.parent.iterdir()):
            if not pattern.fullmatch(entry.name):
                continue
            if entry.name.endswith(ASIDE_SUFFIX) and not dest.exists():
                entry.rename(dest)  # killed between the two renames of swap_folder: the old folder stays
                continue
            remove(entry)
            removed.append(entry)
    return removed


def remove(entry: Path) -> None:
    """Delete the file, folder or symbolic link ``entry``; a link is deleted, never what it points to."""
    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def swap_folder(new: Path, dest: Path) -> None:
    """Put the folder ``new`` in place of the folder ``dest``: ``dest`` is renamed aside first and
    deleted only once ``new`` is in place. An error between the two renames puts it back; a
    kill leaves it aside, where ``remove_stale_temporaries`` finds it and puts it back."""
    new, dest = Path(new), Path(dest)
    if not dest.exists():
        new.rename(dest)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=ASIDE_SUFFIX, dir=dest.parent))
    aside.rmdir()  # a fresh name: rename needs it free
    dest.rename(aside)
    try:
        new.rename(dest)
    except BaseException:
        aside.rename(dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file that then replaces it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        with disk_full_names(path):
            write(Path(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # after writing: safetensors recreates the file as 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def disk_full_names(path: Path):
    """A disk-full error raised inside becomes ``DiskFullError`` naming ``path`` (nested: the outermost
    name wins, e.g. the checkpoint rather than its temporary file)."""
    try:
        yield
    except DiskFullError as error:
        error.path = path
        raise
    except Exception as error:
        if is_disk_full(error):
            raise DiskFullError(path) from error
        raise


def is_disk_full(error: BaseException) -> bool:
    """True for the ways a full disk shows up: OSError ENOSPC (Python), torch.save's
    ``[enforce fail at inline_container.cc ...] file write failed`` (its zip writer hides the
    errno), and safetensors' ``SafetensorError: ... (os error 28)``."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(error)
    if isinstance(error, RuntimeError) and "inline_container.cc" in text and ("write" in text or "unexpected pos" in text):
        return True
    return type(error).__name__ == "SafetensorError" and ("os error 28" in text or "No space left" in text)


def finite_json(data):
    """``data`` with every NaN or infinite float replaced by None (JSON null)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_json(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(value) for value in data]
    return data


def dumps(data, indent: int | None = 2) -> str:
    """Strict JSON text (non-finite numbers as null; ``allow_nan=False`` proves none slipped through)."""
    return json.dumps(finite_json(data), indent=indent, allow_nan=False)


def write_text(path: Path, text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, data) -> None:
    write_text(path, dumps(data) + "\n")


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses non-contiguous tensors and tensors sharing memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def write_torch(path: Path, obj) -> None:
    write_with(path, lambda tmp: torch.save(obj, tmp))
