"""The parts of an encoder, each the one owner of its structure's rules.

A part (a conv layer, the feature projection, the positional convolution, the attention and
the FFN of each layer, and the never-pruned rest) declares in one place:

* ``gates``: its gate groups (kind, index, shape); the forward pass reads each group's values
  as the mask under the same (kind, index) (``model.masks``);
* its sizes, two ways: ``expected_sizes(keep)`` in closed form in gate values, multilinear
  (every term a product of independent gates), so that on keep probabilities it is the
  expectation and on 0/1 decisions the exact value; and ``sizes(spec)`` of a dense or shrunk
  spec as it runs, heads at their run-time width (``LayerSpec.runtime_width``, the one owner of
  padding and rounding);
* its costs, each one formula on those sizes, serving both: ``params``, ``macs`` and ``latency``
  (the features of the cost table, ``method.latency``). A cost is a dict whose keys' first word
  is the component it is reported under ("cnn", "projection", "attention", "ffn", "fixed";
  for MACs "pos_conv" too);
* ``decide``: what 0/1 decisions keep (indices), ``shape``: the fields of the shrunk spec that
  makes, and ``slice``: its weights cut to exactly that, soft gate values folded into the
  weights that consume them.

Everything that walks the encoder is a loop over ``encoder_parts(spec)``: the gate layout, the
parameter count (``accounting``), MACs (``macs``), latency (``latency``), ``pruned_spec`` and
``shrink``. Adding a structure is adding a part (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...model.spec import EncoderSpec
from .attention import AttentionPart, RelativePositionPart
from .base import Frames, Number, Part
from .cnn import ConvPart, ProjectionPart
from .ffn import FeedForwardPart
from .fixed import FramePart, LayerFramePart, PositionalConvPart

if TYPE_CHECKING:
    from ..gates import GateValues

__all__ = ["Decided", "Frames", "PART_TYPES", "Part", "cost_terms", "decide_parts", "encoder_parts"]

# every kind of part, in the order of the forward pass: their gate kinds, in this order, are GATE_KINDS
PART_TYPES = (ConvPart, ProjectionPart, PositionalConvPart, FramePart, LayerFramePart, AttentionPart, FeedForwardPart,
              RelativePositionPart)


def encoder_parts(spec: EncoderSpec) -> list[Part]:
    """Every part of an encoder of ``spec``, in the order of the forward pass (and of the gates)."""
    parts: list[Part] = [ConvPart(spec, c) for c in range(len(spec.conv_channels))]
    parts += [ProjectionPart(spec), PositionalConvPart(spec), FramePart(spec)]
    attention = []
    for l in range(len(spec.layers)):
        attention.append(AttentionPart(spec, l))
        parts += [LayerFramePart(spec, l), attention[-1], FeedForwardPart(spec, l)]
    if spec.num_buckets:
        parts.append(RelativePositionPart(spec, attention))
    return parts


def cost_terms(spec: EncoderSpec, keep: GateValues | None, cost) -> dict[str, Number]:
    """Every part's terms of ``cost(part, sizes)``: of the gate values ``keep`` (expected sizes),
    or with ``keep`` None of ``spec`` itself, as it runs."""
    terms: dict[str, Number] = {}
    for part in encoder_parts(spec):
        terms.update(cost(part, part.sizes(spec) if keep is None else part.expected_sizes(keep)))
    return terms


@dataclass
class Decided:
    """What 0/1 decisions keep, part by part (``kept``, by part name), and the shrunk encoder's
    spec that makes: ``pruned_spec`` is its ``spec``, and ``shrink`` slices to exactly it."""

    kept: dict
    spec: EncoderSpec


def decide_parts(spec: EncoderSpec, values: GateValues) -> Decided:
    """What gate values > 0 keep of the dense ``spec``."""
    binary = values.layout.values((values.flat.detach().cpu() > 0).double())
    parts = encoder_parts(spec)
    kept: dict = {}
    for part in parts:
        kept[part.name] = part.decide(binary, kept)
    fields = spec.to_dict()
    for part in parts:
        part.shape(kept[part.name], fields)
    return Decided(kept, EncoderSpec.from_dict(fields))
