"""Predicted latency: a cost table measured on one machine, and the latency of any shape of
the encoder predicted from it, in closed form (the currency of ``prune --speedup``).

A cost table holds, for one device, thread count, dtype, batch and input length, what each
structure costs there: non-negative coefficients of these features, fitted to timings by
``speechprune.bench.cost_model`` (``bench MODEL --cost-model FILE``):

  conv layer c       a_c * MACs_c + e_c * L_c * C_out           per layer: layer 0 (kernel 10,
                     + q_c * L_c * C_out^2 + g_c               one input channel) is bound by
                                                               elementwise work whose cost grows
                                                               faster than its size once the
                                                               activations leave the cache (the
                                                               C_out^2 term); the rest by matmuls
  feature projection a * MACs + g                               (its LayerNorm is linear in C too)
  positional conv    a constant (never pruned)
  transformer layer  c0 + a_block * [attention runs] + a_head * H + a_proj * projection MACs
                     + a_scores * T'^2 MACs + f_block * [FFN runs] + f_unit * FFN MACs
  whole encoder      scale * (sum of the parts) + overhead

MACs are those of ``macs.py``: projections at each head's stored widths, the two T'^2 products
at the layer's run-time width w (``LayerSpec.runtime_width``) for every head. Features are per input, in
millions; the coefficients absorb the batch. They are non-negative, so removing a structure
never predicts a slower model (the budget decision's threshold search relies on costs that
only fall). The scale and the overhead relate the parts, timed alone, to the whole encoder.

Format 2 tables and later also hold width steps (``latency_steps``): per part kind, measured factors of its
time against the smooth fit at multiples of the hardware's block step. ``predict_ms`` prices
each part at its smooth time times its step factor, so a width just inside a slow band costs
what the hardware makes it cost; ``expected_ms``, the differentiable expectation training
drives, stays smooth (docs/method.md, "Widths the hardware runs fast"). Format 1 tables (no
steps) still load: their predictions are the smooth fit. Format 3 tables say the runtime they were
measured in (``conditions.runtime``: torch or onnxruntime, ``conditions.quantize``: None or int8) and
carry the stock model's float32 eager torch time measured beside them (``reference``), so that a
prediction in that runtime is also a speedup against stock float32 eager torch
(``CostTable.stock_speedup``). Format 2 tables are eager torch, not quantized, without a reference.

``predict_ms`` prices any spec (a shrunk one: its padded widths). ``expected_ms`` is the same
sum in closed form in the gate values, like ``macs.macs_breakdown``: multilinear ("attention
runs" is mha * (1 - prod_h(1 - head_h * any_vo_h)), "FFN runs" is ffn * (1 - prod_u(1 -
unit_u))) except the conv C_out^2 term, whose expectation is (sum p)^2 + sum p (1 - p), exact
as well. The T'^2 term counts each head at its own widths, so it may underestimate where
heads of a layer differ in width (never over).
"""

from __future__ import annotations

import functools
import hashlib
import math
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch

from ..errors import UsageError
from ..io.outputs import write_json_file
from ..io.reading import read_text
from ..model.spec import EncoderSpec, LayerSpec
from .accounting import pruned_spec
from .budget import Budget
from .currencies import DEFAULT_TOLERANCE, LATENCY
from .gates import GateLayout, GateValues
from .latency_check import check_cost_table
from .latency_steps import Steps
from .parts import Frames, encoder_parts

TABLE_FORMAT = 3  # 3: with its runtime and the stock reference; 2 (still read): width steps; 1: the smooth fit alone
READABLE_FORMATS = (1, 2, 3)
CONDITIONS = ("device", "threads", "dtype", "batch", "seconds", "runtime", "quantize")  # what a prediction is valid for
EARLIER_CONDITIONS = {"runtime": "torch", "quantize": None}  # of format 1 and 2 tables, which do not say


# --- the table -----------------------------------------------------------------------------------


@dataclass
class CostTable:
    conditions: dict  # device (type), device_name, threads, dtype, batch, seconds
    architecture: dict  # ``architecture(spec, sampling_rate)`` of the measured model
    coefficients: dict  # conv: [per layer {name: ms per unit}], projection, pos_conv, layer, scale, overhead
    fit: dict  # per group of timed shapes: measured and fitted ms, relative residual
    provenance: dict  # model, speechprune, torch, date, warm-up and repeats, seconds the measurement took, passes
    widths: dict | None = None  # format 2: block step, what it came from, sweeps (``latency_steps``); None: format 1
    reference: dict | None = None  # format 3: the stock model's float32 eager torch time (``stock_speedup``)
    format: int = TABLE_FORMAT

    def __post_init__(self) -> None:
        # the format follows the content: an older table read back is of its format (and hashes as it did)
        self.format = 1 if self.widths is None else 2 if self.reference is None else TABLE_FORMAT

    def condition(self, name: str):
        """A condition of the table; a format 1 or 2 table's runtime is eager torch, not quantized."""
        return self.conditions.get(name, EARLIER_CONDITIONS.get(name))

    @property
    def runtime(self) -> str:
        return runtime_label(self.conditions)

    def stock_speedup(self, predicted: float) -> float | None:
        return stock_speedup(self.reference, predicted)

    @property
    def samples(self) -> int:
        return round(self.conditions["seconds"] * self.architecture["sampling_rate"])

    @cached_property
    def steps(self) -> Steps | None:
        """The width steps; None for a format 1 table."""
        return Steps.of(self.widths)

    def to_dict(self) -> dict:
        data = asdict(self)
        for section in ("widths", "reference"):  # absent from the older formats
            if data[section] is None:
                del data[section]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "CostTable":
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"not a cost table of format {' or '.join(map(str, READABLE_FORMATS))}")
        sections = ("conditions", "architecture", "coefficients", "fit", "provenance")
        later = {1: (), 2: ("widths",), 3: ("widths", "reference")}[data["format"]]
        missing = [name for name in sections + later if name not in data]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        check_cost_table(data)
        return cls(**{name: data[name] for name in sections + later})

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def read(cls, path: str) -> "CostTable":
        try:
            return cls.from_dict(json.loads(read_text(path)))
        except (OSError, ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise UsageError(
                f"cannot read --latency-table {path}: {error}; write one with speechprune bench MODEL --cost-model FILE"
            ) from None

    def write(self, path: str | Path) -> None:
        write_json_file(path, "--cost-model", self.to_dict())


def runtime_label(conditions: dict) -> str:
    """The runtime a table's predictions are for, in words: "torch float32", "onnxruntime int8", ..."""
    runtime, quantize = (conditions.get(name, EARLIER_CONDITIONS[name]) for name in ("runtime", "quantize"))
    return f"{runtime} {quantize or conditions['dtype']}"


def stock_speedup(reference: dict | None, predicted: float) -> float | None:
    """Speedup of a model predicted at ``predicted`` ms in a table's runtime against the stock model
    in float32 eager torch: the runtime's dense model against stock (the table's ``reference``, both
    measured in the same rounds), times the predicted speedup against that dense model (None
    without a reference: a table of format 1 or 2)."""
    if reference is None:
        return None
    return reference["dense_ms"] / reference["table_dense_ms"] * reference["table_dense_predicted_ms"] / predicted


def architecture(spec: EncoderSpec, sampling_rate: int) -> dict:
    """What a table is valid for. Read from any spec of the model: a shrunk spec keeps the dense
    conv channel counts in ``conv_norm_channels``."""
    return {
        "family": spec.family,
        "sampling_rate": sampling_rate,
        "hidden_size": spec.hidden_size,
        "layers": len(spec.layers),
        "heads": spec.num_heads,
        "head_dim": spec.head_dim,
        "ffn_size": max(layer.ffn_dim for layer in spec.layers),
        "pre_layer_norm": spec.stable_layer_norm,
        "conv_channels": list(spec.conv_norm_channels),
        "conv_kernels": list(spec.conv_kernels),
        "conv_strides": list(spec.conv_strides),
        "pos_conv": [spec.pos_conv_kernel, spec.pos_conv_groups],
    }


def check_architecture(table: CostTable, spec: EncoderSpec, sampling_rate: int, model: str, dense: bool = True) -> None:
    """Refuse a table measured for another architecture, naming the first field that differs.
    ``dense=False`` (a shrunk model): its FFN size is the pruned one, so it is not compared."""
    ours = architecture(spec, sampling_rate)
    for name, value in table.architecture.items():
        if name == "ffn_size" and not dense:
            continue
        if ours.get(name) != value:
            raise UsageError(
                f"--latency-table was measured for {name} {value}, but {model} has {ours.get(name)}; "
                f"measure a table for this model with speechprune bench MODEL --cost-model FILE"
            )
    predicted = predict_ms(table, spec)
    if not 0 < predicted < math.inf:  # NaN fails too
        raise UsageError(f"--latency-table predicts {predicted} ms for {model}: its coefficients are out of range; "
                         "measure it again with speechprune bench MODEL --cost-model FILE")


def check_conditions(table: CostTable, setting: dict) -> None:
    """Refuse a table measured under other conditions than ``setting`` (same keys, ``CONDITIONS``)."""
    for name in CONDITIONS:
        if table.condition(name) != setting[name]:
            raise UsageError(
                f"--latency-table was measured with {name} {table.condition(name) or 'none'}, this bench runs with "
                f"{setting[name] or 'none'}; bench with the table's setting or measure a table for this one"
            )


# --- prediction ----------------------------------------------------------------------------------
# Each part's features are its ``latency`` (``method/parts/``); one function per part serves the fit
# (``bench.cost_model``), ``predict_ms`` (integers) and ``expected_ms`` (gate tensors).


def unit_features(spec: EncoderSpec, frames: Frames, keep: GateValues | None = None) -> dict[tuple, dict]:
    """The features of each unit the cost table times, ("conv", c), ("projection",), ("pos_conv",)
    and ("layer", l), its parts' features together: of the gate values ``keep`` (in closed form),
    or with ``keep`` None of ``spec`` as it runs."""
    units: dict[tuple, dict] = {}
    for part in encoder_parts(spec):
        timed = part.latency(part.sizes(spec) if keep is None else part.expected_sizes(keep), frames)
        if timed is not None:
            units.setdefault(timed[0], {}).update(timed[1])
    return units


@functools.cache
def coefficient_names() -> dict[str, tuple[str, ...]]:
    """The coefficients a table holds for each kind of unit ("conv", "projection", "pos_conv",
    "layer"): the names of its parts' features, read off the units of a one-layer encoder (every
    encoder's units have the same features), so that the parts are their one owner."""
    layer = LayerSpec(heads=[0], qk_dim=2, vo_dim=2, ffn_dim=2)
    spec = EncoderSpec(family="wav2vec2", hidden_size=2, num_heads=1, head_dim=2, conv_channels=[2], conv_kernels=[2],
                       conv_strides=[1], conv_bias=False, conv_norm="group", conv_act="gelu", hidden_act="gelu",
                       layer_norm_eps=1e-5, stable_layer_norm=False, feat_proj_layer_norm=True, pos_conv_kernel=2,
                       pos_conv_groups=1, pos_conv_batch_norm=False, masked_spec_embed=False, layers=[layer])
    return {unit[0]: tuple(features) for unit, features in unit_features(spec, Frames.of(spec, 8)).items()}


def unit_coefficients(coefficients: dict, unit: tuple) -> dict:
    """A unit's coefficients: one set per conv layer, one shared by every transformer layer."""
    return coefficients["conv"][unit[1]] if unit[0] == "conv" else coefficients[unit[0]]


def dot(coefficients: dict, features: dict):
    return sum(coefficients[name] * value for name, value in features.items())


def _units_ms(coefficients: dict, units: dict[tuple, dict]):
    return sum(dot(unit_coefficients(coefficients, unit), features) for unit, features in units.items())


def predict_ms(table: CostTable, spec: EncoderSpec) -> float:
    """Predicted latency of an encoder of shape ``spec`` (dense or shrunk) under the table's
    conditions, each part at its width steps (a format 2 table)."""
    coefficients = table.coefficients
    return coefficients["scale"] * parts_ms(coefficients, spec, table.samples, table.steps) + coefficients["overhead"]


def parts_ms(coefficients: dict, spec: EncoderSpec, samples: int, steps: Steps | None = None) -> float:
    """Sum of the parts of ``spec`` as timed alone: each part's smooth time, times its step
    factor with ``steps``."""
    frames, total = Frames.of(spec, samples), 0.0
    for part in encoder_parts(spec):
        sizes = part.sizes(spec)
        timed = part.latency(sizes, frames)
        if timed is not None:
            ms = dot(unit_coefficients(coefficients, timed[0]), timed[1])
            total += ms * (part.step_factor(steps, sizes) if steps else 1.0)
    return float(total)


def expected_ms(table: CostTable, spec: EncoderSpec, keep: GateValues) -> torch.Tensor:
    """Scalar: ``predict_ms`` in closed form in the gates (expected latency on keep
    probabilities, differentiable); equal to it on 0/1 decisions whose heads share one width."""
    coefficients, ref = table.coefficients, keep.flat
    total = _units_ms(coefficients, unit_features(spec, Frames.of(spec, table.samples), keep))
    return coefficients["scale"] * torch.as_tensor(total, dtype=ref.dtype, device=ref.device) + coefficients["overhead"]


def latency_budget(table: CostTable, spec: EncoderSpec, layout: GateLayout, speedup: float,
                   tolerance: float = DEFAULT_TOLERANCE) -> Budget:
    """Predicted latency divided by ``speedup`` (``--speedup``)."""

    def expected(values: GateValues) -> torch.Tensor:
        return expected_ms(table, spec, values)

    def exact(values: GateValues) -> float:
        return predict_ms(table, pruned_spec(spec, values))

    reference = {"reference": table.reference} if table.reference else {}  # the summary's speedup against stock
    return Budget(LATENCY, predict_ms(table, spec), 1 - 1 / speedup, tolerance, expected, exact,
                  record={"speedup": speedup, "table_sha256": table.sha256, "conditions": table.conditions, **reference})
