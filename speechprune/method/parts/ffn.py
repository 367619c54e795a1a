"""The feed-forward block of a transformer layer: the block and its intermediate units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ...model.spec import EncoderSpec
from ..latency_steps import FFN
from .base import BlockPart, Number, Width, group_gates, kept_indices, scaled

if TYPE_CHECKING:
    from ..gates import GateValues


@dataclass
class FeedForwardSizes:
    block: Number  # the block is kept: output_dense's bias, its pre-LN norm
    runs: Number  # the block computes: kept, with a unit
    units: Number  # kept units of a kept block


@dataclass
class FeedForwardKept:
    block: bool
    units: torch.Tensor  # kept unit indices


class FeedForwardPart(BlockPart):
    """The FFN of layer l: the block ("ffn") and its intermediate units ("int"). A unit keeps
    (2 D + 1): a row of intermediate_dense with its bias, a column of output_dense; the block
    keeps output_dense's bias, and its LayerNorm in pre-LN layers."""

    gate_kinds = ("ffn", "int")
    coarse_kinds = ("ffn",)
    module, norm = "feed_forward", "final_layer_norm"

    def __init__(self, spec: EncoderSpec, l: int):
        self.name, self.l = f"ffn.{l}", l
        self.units, self.d = spec.layers[l].ffn_dim, spec.hidden_size
        self.pre_norm = spec.stable_layer_norm
        self.block_norm = 2 * self.d if self.pre_norm else 0

    def gates(self):
        return [("ffn", self.l, ()), ("int", self.l, (self.units,))]

    def gate_values(self, keep: GateValues) -> tuple[torch.Tensor, torch.Tensor]:
        return keep.value("ffn", self.l), keep.value("int", self.l, self.units)

    def expected_sizes(self, keep):
        block, units = self.gate_values(keep)
        return FeedForwardSizes(block, block * (1 - torch.prod(1 - units)), block * units.sum())

    def sizes(self, spec):
        layer = spec.layers[self.l]
        units = layer.ffn_dim if layer.ffn else 0
        return FeedForwardSizes(float(layer.ffn), float(units > 0), units)

    def params(self, s):
        return {self.name: (2 * self.d + 1) * s.units + s.block * (self.d + self.block_norm)}

    def macs(self, s, frames):
        return {self.name: 2 * frames.t * self.d * s.units}

    def latency(self, s, frames):
        return ("layer", self.l), {"ffn": s.runs, "ffn_macs": 2 * frames.t * self.d * s.units / 1e6}

    def step_factor(self, steps, s):
        return steps.factor(FFN, s.units)

    def decide(self, binary, decided):
        block, units = self.gate_values(binary)
        block = bool(block > 0)
        return FeedForwardKept(block, kept_indices(units) if block else torch.zeros(0, dtype=torch.long))

    def widths(self, kept, layout):
        gates = group_gates(layout, "int", self.l)
        if gates is None or not kept.block or not len(kept.units):  # a removed block has no width to round
            return []
        return [Width(self.name, gates, len(kept.units), self)]

    def resize(self, fields, where, width):
        fields["layers"][self.l]["ffn_dim"] = width

    def shape(self, kept, fields):
        fields["layers"][self.l]["ffn"] = kept.block
        self.resize(fields, None, len(kept.units))

    def slice_kept(self, state, kept: FeedForwardKept, soft, f):
        block, units = (v.detach().cpu().double() for v in self.gate_values(soft))
        for name in ("intermediate_dense.weight", "intermediate_dense.bias"):
            state[f + name] = state[f + name][kept.units]
        state[f + "output_dense.weight"] = scaled(state[f + "output_dense.weight"][:, kept.units],
                                                   block * units[kept.units], 1)
        state[f + "output_dense.bias"] = scaled(state[f + "output_dense.bias"], block.expand(self.d), 0)
