"""What a cost table (``latency.CostTable``) must hold before anything is predicted from it: its
reader's checks, in one place, so a damaged or hand-edited table is refused when it is read
(before any timing or training), naming the field.

Every coefficient is a finite number >= 0 (the budget decision relies on costs that only fall
as structures go), ``scale`` is above 0, every part of the encoder has its coefficients (one
set per conv layer of the table's architecture), and the conditions and architecture hold
numbers in range; a format 2 table's width steps have a whole block step and, per sweep,
increasing whole widths with one factor > 0 and one measured time each; a format 3 table's runtime
is torch or onnxruntime, its quantization none or int8, and its reference times are above 0. A table that passes is still refused by ``latency.check_architecture``
when it was measured for another model, or predicts no finite positive latency for it.
"""

from __future__ import annotations

import math

ARCHITECTURE_COUNTS = ("sampling_rate", "hidden_size", "layers", "heads", "head_dim", "ffn_size")
RUNTIMES = ("torch", "onnxruntime")  # conditions.runtime of a format 3 table
QUANTIZATIONS = (None, "int8")  # its conditions.quantize
REFERENCE_TIMES = ("dense_ms", "table_dense_ms", "table_dense_predicted_ms")
LARGEST = 1e12  # no count or coefficient of a real table comes near this (ms per million MACs, channels, ...)


def _number(value, field: str, *, positive: bool = False, whole: bool = False) -> float:
    """``value`` as a finite number >= 0 (> 0 with ``positive``; an integer with ``whole``) and at most LARGEST."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        raise ValueError(f"{field} is {value!r}, not a {'whole ' if whole else ''}number")
    if not math.isfinite(value) or value < 0 or (positive and value <= 0) or value > LARGEST:
        bound = "above 0" if positive else "0 or more"
        raise ValueError(f"{field} is {value!r}; it must be a finite number {bound} (at most {LARGEST:g})")
    return value


def _part(coefficients: dict, names: tuple[str, ...], field: str) -> None:
    if not isinstance(coefficients, dict):
        raise ValueError(f"{field} is {type(coefficients).__name__}, not an object of coefficients")
    missing = [name for name in names if name not in coefficients]
    if missing:
        raise ValueError(f"{field} lacks {', '.join(missing)}")
    for name in names:
        _number(coefficients[name], f"{field}.{name}")


def check_cost_table(data: dict) -> None:
    """Raise ValueError naming the first field of the table ``data`` (its JSON form) that is
    missing, of the wrong type or out of range. The coefficients each kind of unit must have are
    the features its parts name (``latency.coefficient_names``)."""
    from .latency import coefficient_names  # latency reads tables through this module

    names = coefficient_names()
    for section in ("conditions", "architecture", "coefficients", "fit", "provenance"):
        if not isinstance(data[section], dict):
            raise ValueError(f"{section} is {type(data[section]).__name__}, not an object")
    conditions, architecture, coefficients = data["conditions"], data["architecture"], data["coefficients"]
    for name in ("device", "dtype", "threads", "batch", "seconds"):
        if name not in conditions:
            raise ValueError(f"conditions lacks {name}")
    for name in ("threads", "batch"):
        _number(conditions[name], f"conditions.{name}", positive=True, whole=True)
    _number(conditions["seconds"], "conditions.seconds", positive=True)
    for name in ARCHITECTURE_COUNTS + ("conv_channels",):
        if name not in architecture:
            raise ValueError(f"architecture lacks {name}")
    for name in ARCHITECTURE_COUNTS:
        _number(architecture[name], f"architecture.{name}", positive=True, whole=True)
    if not isinstance(architecture["conv_channels"], list) or not architecture["conv_channels"]:
        raise ValueError(f"architecture.conv_channels is {architecture['conv_channels']!r}, not a list of channel counts")

    for name in ("conv", "projection", "pos_conv", "layer", "scale", "overhead"):
        if name not in coefficients:
            raise ValueError(f"coefficients lacks {name}")
    conv, layers = coefficients["conv"], len(architecture["conv_channels"])
    if not isinstance(conv, list) or len(conv) != layers:
        count = len(conv) if isinstance(conv, list) else type(conv).__name__
        raise ValueError(f"coefficients.conv has {count} entries for {layers} conv layers")
    for c, part in enumerate(conv):
        _part(part, names["conv"], f"coefficients.conv[{c}]")
    for unit in ("projection", "pos_conv", "layer"):
        _part(coefficients[unit], names[unit], f"coefficients.{unit}")
    _number(coefficients["scale"], "coefficients.scale", positive=True)
    _number(coefficients["overhead"], "coefficients.overhead")
    if data.get("format", 1) >= 2:
        _check_widths(data["widths"])
    if data.get("format", 1) >= 3:
        _check_runtime(conditions, data["reference"])


def _check_runtime(conditions: dict, reference) -> None:
    """A format 3 table's runtime, quantization and stock reference."""
    if conditions.get("runtime") not in RUNTIMES:
        raise ValueError(f"conditions.runtime is {conditions.get('runtime')!r}, not one of {', '.join(RUNTIMES)}")
    if "quantize" not in conditions or conditions["quantize"] not in QUANTIZATIONS:
        raise ValueError(f"conditions.quantize is {conditions.get('quantize')!r}, not null or int8")
    if not isinstance(reference, dict):
        raise ValueError(f"reference is {type(reference).__name__}, not an object")
    for name in REFERENCE_TIMES:
        if name not in reference:
            raise ValueError(f"reference lacks {name}")
        _number(reference[name], f"reference.{name}", positive=True)


def _check_widths(widths) -> None:
    """The width steps of a format 2 table (``latency_steps``)."""
    if not isinstance(widths, dict):
        raise ValueError(f"widths is {type(widths).__name__}, not an object")
    for name in ("block", "block_from", "seconds", "steps"):
        if name not in widths:
            raise ValueError(f"widths lacks {name}")
    _number(widths["block"], "widths.block", positive=True, whole=True)
    _number(widths["seconds"], "widths.seconds")
    if not isinstance(widths["steps"], dict):
        raise ValueError(f"widths.steps is {type(widths['steps']).__name__}, not an object of sweeps")
    for name, sweep in widths["steps"].items():
        field = f"widths.steps.{name}"
        if not isinstance(sweep, dict) or any(not isinstance(sweep.get(k), list) for k in ("widths", "factor", "measured_ms")):
            raise ValueError(f"{field} needs lists widths, factor and measured_ms")
        if not sweep["widths"] or not len(sweep["widths"]) == len(sweep["factor"]) == len(sweep["measured_ms"]):
            raise ValueError(f"{field} needs one factor and one measured_ms per width, and at least one width")
        for i, width in enumerate(sweep["widths"]):
            _number(width, f"{field}.widths[{i}]", positive=True, whole=True)
            _number(sweep["factor"][i], f"{field}.factor[{i}]", positive=True)
            _number(sweep["measured_ms"][i], f"{field}.measured_ms[{i}]")
        if any(a >= b for a, b in zip(sweep["widths"], sweep["widths"][1:])):
            raise ValueError(f"{field}.widths must increase")
