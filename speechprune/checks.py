"""Option checks that every command shares, done before any weights load, so that a typo costs
a second rather than the minutes a large model takes to load. (Output locations: ``io.outputs``.)"""

from __future__ import annotations

import math
import os

from .errors import UsageError
from .model.memory import activation_bytes
from .model.spec import min_samples


def check_positive(value: float, option: str) -> None:
    """``value`` is a finite number above 0 (inf and nan pass a bare ``> 0`` test one way or the other)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UsageError(f"{option} must be a finite positive number, got {value}")


# The largest values of whole-number options: beyond them a run would not end in any useful time
# (rounds, steps, epochs) or a seed would overflow torch's and numpy's generators (a 32-bit seed
# works in every one of them).
MAX_SEED = 2**32 - 1
MAX_STEPS = 10_000_000  # prune --steps, --final-steps: 500x the default
MAX_ROUNDS = 100_000  # bench --repeat, --warmup: calls per model and setting
MAX_PROJECTIONS = 1_000  # analyze --projections: a backward pass each, per batch
MAX_EPOCHS = 1_000_000  # eval --epochs: full-batch probe steps
MAX_BLOCK_STEP = 4_096  # bench --block-step: channels, wider than any layer


def check_count(value: int, option: str, *, least: int = 1, most: int) -> None:
    """``value`` is a whole number from ``least`` to ``most`` (usage error naming both), checked
    before anything loads: a huge count would run for ever, or overflow, long after loading."""
    if not (isinstance(value, int) and least <= value <= most):
        raise UsageError(f"{option} must be at least {least} and at most {most:,}, got {value}")


def check_seed(seed: int, option: str = "--seed") -> None:
    check_count(seed, option, least=0, most=MAX_SEED)


def check_long_enough(seconds: float, option: str, source: str, spec, sampling_rate: int) -> None:
    """Audio of ``seconds`` makes at least one frame of ``spec``'s CNN (an EncoderSpec)."""
    shortest = min_samples(spec)
    if round(seconds * sampling_rate) < shortest:
        raise UsageError(f"{option} {seconds:g} is too short for {source}: its CNN needs at least "
                         f"{math.ceil(shortest / sampling_rate * 1000) / 1000:.3f} s")


def available_memory_bytes() -> int:
    """Memory this machine can give a new allocation now: Linux's MemAvailable (free memory and
    caches it can drop), else the physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_in_memory(source: str, spec, sampling_rate: int, *, length: tuple[str, float], count: tuple[str, float],
                         per_input: float = 1.0, training: bool, weight_bytes: int, what: str) -> None:
    """One pass of inputs of ``length`` (its option and seconds), as many as ``count`` (its option
    and value) makes, fits in the memory available with ``weight_bytes`` of weights: the
    activations are ``model.memory.activation_bytes`` of ``spec`` (an EncoderSpec), with the
    backward pass's when ``training``. ``per_input``: how much of ``count``'s value one input is
    (``--batch``: 1; ``--batch-seconds``: the crop's seconds). Refused (usage error) naming the
    largest value of the count, else of the length, that fits; ``what`` is the pass in words."""
    (length_option, seconds), (count_option, value) = length, count
    available = available_memory_bytes()

    def fits(seconds: float, inputs: int) -> bool:
        samples = round(seconds * sampling_rate)
        return weight_bytes + activation_bytes(spec, samples, inputs, training=training) <= available

    inputs = max(1, round(value / per_input))
    if fits(seconds, inputs):
        return
    needed = weight_bytes + activation_bytes(spec, round(seconds * sampling_rate), inputs, training=training)
    most = _largest_count(lambda n: fits(seconds, n), inputs)
    longest = _longest(lambda s: fits(s, 1), min_samples(spec) / sampling_rate, seconds)
    if most:
        fix = f"lower {count_option} to at most {most * per_input:g}"
    elif longest:
        fix = f"lower {length_option} to at most {longest:g}" + (
            f" (with {count_option} {per_input:g})" if inputs > 1 else "")
    else:
        fix = f"free memory: the weights alone need {weight_bytes / 1e9:.3g} GB"
    raise UsageError(f"{length_option} {seconds:g} with {count_option} {value:g} needs at least {needed / 1e9:.3g} GB "
                     f"for {what} of {source}, more than the {available / 1e9:.3g} GB of memory available; {fix}")


def _largest_count(fits, above: int) -> int:
    """The largest whole number below ``above`` for which ``fits`` (monotone) holds; 0 when none does."""
    low, high = 0, above  # fits(low) (or low == 0), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _longest(fits, shortest: float, too_long: float) -> float | None:
    """The largest length in [shortest, too_long) for which ``fits`` (monotone) holds, rounded down
    to three significant digits; None when even ``shortest`` does not fit."""
    if not fits(shortest):
        return None
    low, high = shortest, too_long
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    step = 10 ** (math.floor(math.log10(low)) - 2)
    return max(math.floor(low / step) * step, shortest)
