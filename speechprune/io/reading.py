"""Reading a file that may be anything: a FIFO or a device named like a file would block its
reader for ever (or never end), so every file speechprune reads as text is opened without
blocking and refused unless it is a regular file, with an ``OSError`` that the reader's
``except OSError`` turns into its one line naming the file and the fix."""

from __future__ import annotations

import errno
import json
import os
import stat


def is_regular_file(path: str | os.PathLike) -> bool:
    """``path`` (links followed) is a regular file: not a folder, FIFO, socket or device."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_bytes(path: str | os.PathLike, size: int = -1) -> bytes:
    """The first ``size`` bytes (-1: all) of the regular file ``path``; OSError for anything else
    (a missing file or a link to nothing: FileNotFoundError; a folder, FIFO or device: EINVAL)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (a folder, FIFO or device)", str(path))
    with open(fd, "rb") as handle:  # closes fd
        return handle.read(size)


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """The text of the regular file ``path`` (OSError otherwise, as ``read_bytes``)."""
    return read_bytes(path).decode(encoding)


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object (a dict) in the regular file ``path``; OSError as ``read_text``, ValueError
    for text that is not JSON or JSON that is not an object (a list, a string, null)."""
    data = json.loads(read_text(path))
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__ if data is not None else 'null'}, not an object")
    return data
