"""Option checks that every command shares, done before any weights load, so that a typo costs
a second rather than the minutes a large model takes to load."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from .errors import OutputError, UsageError
from .macs import min_samples


def check_positive(value: float, option: str) -> None:
    """``value`` is a finite number above 0 (inf and nan pass a bare ``> 0`` test one way or the other)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"{option} must be a finite positive number, got {value}")


def check_long_enough(seconds: float, option: str, source: str, spec, sampling_rate: int) -> None:
    """Audio of ``seconds`` makes at least one frame of ``spec``'s CNN (an EncoderSpec)."""
    shortest = min_samples(spec)
    if round(seconds * sampling_rate) < shortest:
        raise UsageError(f"{option} {seconds:g} is too short for {source}: its CNN needs at least "
                         f"{math.ceil(shortest / sampling_rate * 1000) / 1000:.3f} s")


def check_out_path(path: str | os.PathLike, option: str = "--out", *, folder: bool) -> None:
    """Refuse an output location that cannot be written, before the work that would fill it.

    ``folder``: the command writes a folder at ``path`` (prune, shrink), else a file (analyze,
    eval). Every existing component above it must be a folder, and the nearest existing one
    must accept a new entry: that is tried for real (permissions, read-only mounts and
    pseudo file systems like /proc all answer differently to ``os.access``).
    """
    target = Path(path).expanduser()
    if target.exists():
        if folder and not target.is_dir():
            raise OutputError(f"{option} {path} is a file; choose a folder")
        if not folder and target.is_dir():
            raise OutputError(f"{option} {path} is a folder; give a file name")
    existing = target if folder and target.is_dir() else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, not a folder; choose another {option}")
    try:
        tempfile.TemporaryDirectory(prefix=".speechprune-write-test-", dir=existing).cleanup()
    except OSError as error:
        raise OutputError(f"{option} {path}: cannot write in {existing}, it does not accept new files "
                          f"({error.strerror or error}); choose another {option}") from error
