"""Option checks that every command shares, done before any weights load, so that a typo costs
a second rather than the minutes a large model takes to load. (Output locations: ``io.outputs``.)"""

from __future__ import annotations

import math

from .errors import UsageError
from .model.spec import min_samples


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
