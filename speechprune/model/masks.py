"""Masks: the multipliers a gated forward pass applies to each prunable structure.

A mask is keyed like the gate group it comes from, (kind, index): ("conv", 3) multiplies the
channels of conv layer 3, ("head", 5) the heads of transformer layer 5. The module that runs a
structure reads its mask under that key, so a new gate kind needs no field here: its part
declares the group (``method/parts/``) and its module reads it. The kinds read today:

    conv (C_c,)  mha ()  head (H,)  qk (H, d_qk)  vo (H, d_vo)  ffn ()  int (F,)

A missing key means "all ones": the structure is not gated. ``method.gates.GateValues.masks()``
makes them from a flat vector of gate values. Part of the self-contained model code (see
``encoder``).
"""

from __future__ import annotations

import torch


class EncoderMasks:
    """The masks of one encoder, by (kind, index)."""

    def __init__(self, values: dict[tuple[str, int], torch.Tensor] | None = None):
        self.values = dict(values or {})

    def get(self, kind: str, index: int) -> torch.Tensor | None:
        return self.values.get((kind, index))

    def layer(self, l: int) -> "LayerMasks":
        return LayerMasks(self, l)

    def times(self, kind: str, index: int, factor: torch.Tensor) -> "EncoderMasks":
        """These masks with the one of (kind, index) multiplied by ``factor``."""
        return self * EncoderMasks({(kind, index): factor})

    def __mul__(self, other: "EncoderMasks") -> "EncoderMasks":
        """Key-wise product (missing = all ones)."""
        product = dict(self.values)
        for key, value in other.values.items():
            product[key] = value if key not in product else product[key] * value
        return EncoderMasks(product)


class LayerMasks:
    """The masks of transformer layer ``l``: ``get(kind)`` is the encoder's ``get(kind, l)``."""

    def __init__(self, masks: EncoderMasks, l: int):
        self.masks, self.l = masks, l

    def get(self, kind: str) -> torch.Tensor | None:
        return self.masks.get(kind, self.l)
