"""Option checks that every command shares, done before any weights load, so that a typo costs
a second rather than the minutes a large model takes to load. (Output locations: ``io.outputs``.)"""

from __future__ import annotations

import math
import os

from .errors import UsageError
from .model.spec import conv_lengths, min_samples


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


def memory_bytes() -> int:
    """Physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(seconds: float, batch: int, option: str, source: str, spec, sampling_rate: int) -> None:
    """One forward pass of ``batch`` inputs of ``seconds`` fits in memory: its waveforms and the
    first conv layer's float32 output (the largest activation of the CNN), before anything is allocated."""
    samples = round(seconds * sampling_rate)
    needed = 4 * batch * (samples + spec.conv_channels[0] * conv_lengths(spec, samples)[0])
    if needed > memory_bytes():
        raise UsageError(f"{option} {seconds:g} (batch {batch}) needs at least {needed / 1e9:.3g} GB for one forward "
                         f"pass of {source}, more than this machine's {memory_bytes() / 1e9:.3g} GB; give shorter audio")
