"""What every part of an encoder declares (``Part``), and the helpers they share.

See ``method/parts/__init__.py`` for the parts and what loops over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import torch

from ...model.spec import EncoderSpec, conv_lengths

if TYPE_CHECKING:  # gates.py builds its layout from the parts
    from ..gates import GateLayout, GateValues
    from ..latency_steps import Steps

Number = Union[torch.Tensor, float, int]  # a tensor of gate values' sizes, a number of a spec's
State = dict  # name -> tensor: an encoder's state dict, sliced in place


@dataclass(frozen=True)
class Frames:
    """Lengths of one input of ``samples`` through the CNN: per conv layer, and T' at the end."""

    lengths: list[int]

    @classmethod
    def of(cls, spec: EncoderSpec, samples: int) -> "Frames":
        return cls(conv_lengths(spec, samples))

    @property
    def t(self) -> int:
        return self.lengths[-1]


class Part:
    """One structure of the encoder; the defaults are those of a part without gates or costs."""

    name: str  # unique within an encoder
    gate_kinds: tuple[str, ...] = ()  # the kinds of its gates, in layout order
    # those of its kinds whose one gate removes a large, indivisible share of a budget (a whole
    # block, a head); the fine ones fill a gap in small steps (``prune.step``)
    coarse_kinds: tuple[str, ...] = ()

    def gates(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """(kind, index, shape) of each gate group, in layout order."""
        return []

    def expected_sizes(self, keep: GateValues):
        """Its sizes in closed form in the gate values ``keep``: multilinear, so exact on 0/1
        decisions and the expectation on keep probabilities."""
        return None

    def sizes(self, spec: EncoderSpec):
        """Its sizes in an encoder of ``spec`` (dense or shrunk), as it runs."""
        return None

    def params(self, sizes) -> dict[str, Number]:
        """Its parameters, keyed by component ("cnn.0", "attention.3", "fixed.pos_conv", ...)."""
        return {}

    def macs(self, sizes, frames: Frames) -> dict[str, Number]:
        """Its MACs for one input of ``frames``, keyed by component ("cnn", ..., "pos_conv")."""
        return {}

    def latency(self, sizes, frames: Frames) -> tuple[tuple, dict] | None:
        """(the unit of the cost table it is timed in, its features: ``method.latency``), or None
        when it takes no time of its own. Units: ("conv", c), ("projection",), ("pos_conv",),
        ("layer", l); the features of a unit's parts add up to its row."""
        return None

    def step_factor(self, steps: Steps, sizes) -> float:
        """Its measured time against the smooth fit at the widths of ``sizes`` (of a spec), from
        the table's width steps (``method.latency_steps``); 1 for a part without steps."""
        return 1.0

    def widths(self, kept, layout: GateLayout) -> list["Width"]:
        """The widths that what it keeps (its ``decide``) sets, for ``prune --round-to``."""
        return []

    def resize(self, fields: dict, where, width: int) -> None:
        """Write ``width`` for its width ``where`` (``Width.where``) into spec ``fields``."""
        raise NotImplementedError(f"{self.name} has no widths")

    def decide(self, binary: GateValues, decided: dict):
        """What 0/1 decisions keep; ``decided`` holds the parts before it, by name."""
        return None

    def shape(self, kept, fields: dict) -> None:
        """Write what it keeps into ``fields`` (``EncoderSpec.to_dict()`` of the dense spec)."""

    def slice(self, state: State, decided: dict, soft: GateValues) -> None:
        """Cut its weights in ``state`` to what ``decided[self.name]`` keeps, soft values folded in."""


@dataclass
class Width:
    """One width a decision sets (a conv layer's channels, a kept FFN's units, a present head's
    q/k or v/o dims): the flat indices of its group's gates, how many of them are kept, and how
    its part writes another value of it into a spec (``Part.resize``)."""

    name: str  # e.g. "cnn.1", "ffn.3", "attention.2.head.5.vo"
    gates: torch.Tensor  # (n,) long: every gate of the group, in the flat layout
    kept: int
    part: Part
    where: Any = None  # what ``part.resize`` needs to find it (a head's position and "qk" or "vo")

    @property
    def maximum(self) -> int:
        return len(self.gates)

    def resize(self, fields: dict, width: int) -> None:
        self.part.resize(fields, self.where, width)


def group_gates(layout: GateLayout, kind: str, index: int) -> torch.Tensor | None:
    """(n,) flat indices of one gate group of ``layout``; None when that kind is not gated."""
    group = layout.group(kind, index)
    return None if group is None else torch.arange(group.offset, group.offset + group.size)


def scaled(tensor: torch.Tensor, scale: torch.Tensor, dim: int) -> torch.Tensor:
    """``tensor`` times ``scale`` along ``dim`` (soft gate values folded in), in float64."""
    shape = [1] * tensor.dim()
    shape[dim] = -1
    return (tensor.double() * scale.view(shape)).to(tensor.dtype)


def kept_indices(values: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(values > 0).flatten()


class BlockPart(Part):
    """A block of transformer layer ``l`` (attention, FFN): what its decision keeps has a
    ``block`` flag, and a removed block takes every weight of its module and, in pre-LN layers,
    its norm (post-LN norms stay: ``LayerFramePart``)."""

    l: int
    module: str  # its module in the layer, e.g. "attention"
    norm: str  # its norm in the layer, e.g. "layer_norm"
    pre_norm: bool  # pre-LN layers: the norm belongs to the block

    def slice(self, state: State, decided: dict, soft: GateValues) -> None:
        kept = decided[self.name]
        layer = f"encoder.layers.{self.l}."
        if kept.block:
            self.slice_kept(state, kept, soft, f"{layer}{self.module}.")
            return
        for key in [k for k in state if k.startswith(f"{layer}{self.module}.")]:
            del state[key]
        if self.pre_norm:
            del state[f"{layer}{self.norm}.weight"], state[f"{layer}{self.norm}.bias"]

    def slice_kept(self, state: State, kept, soft: GateValues, prefix: str) -> None:
        """Cut the weights of the kept block (names start with ``prefix``)."""
