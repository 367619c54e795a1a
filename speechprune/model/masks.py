"""Masks: the multipliers a gated forward pass applies to each prunable structure.

``method.gates.GateValues.masks()`` makes them from a flat vector of gate values (each part of
``method/parts/`` puts its gates' values in its field); the encoder's modules consume them
(``attention``, ``layers``). None means "all ones": the structure is not gated. Part of the
self-contained model code (see ``encoder``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def _product(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a * b


@dataclass
class LayerMasks:
    """Multipliers of one transformer layer; None means "all ones" (structure not gated)."""

    mha: torch.Tensor | None = None  # ()
    head: torch.Tensor | None = None  # (H,)
    qk: torch.Tensor | None = None  # (H, d_qk)
    vo: torch.Tensor | None = None  # (H, d_vo)
    ffn: torch.Tensor | None = None  # ()
    units: torch.Tensor | None = None  # (F,)

    def __mul__(self, other: "LayerMasks") -> "LayerMasks":
        """Field-wise product (None = all ones)."""
        return LayerMasks(**{f.name: _product(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})


@dataclass
class EncoderMasks:
    conv: list[torch.Tensor | None]  # per conv layer, (C_c,)
    layers: list[LayerMasks]

    def __mul__(self, other: "EncoderMasks") -> "EncoderMasks":
        """Field-wise product (None = all ones)."""
        return EncoderMasks(conv=[_product(a, b) for a, b in zip(self.conv, other.conv)],
                            layers=[a * b for a, b in zip(self.layers, other.layers)])
