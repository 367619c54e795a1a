"""Masks: the multipliers a gated forward pass applies to each prunable structure.

``method.gates.GateValues.masks()`` makes them from a flat vector of gate values; the encoder's
modules consume them (``attention``, ``layers``). None means "all ones": the structure is not
gated. Part of the self-contained model code (see ``encoder``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerMasks:
    """Multipliers of one transformer layer; None means "all ones" (structure not gated)."""

    mha: torch.Tensor | None = None  # ()
    head: torch.Tensor | None = None  # (H,)
    qk: torch.Tensor | None = None  # (H, d_qk)
    vo: torch.Tensor | None = None  # (H, d_vo)
    ffn: torch.Tensor | None = None  # ()
    units: torch.Tensor | None = None  # (F,)


@dataclass
class EncoderMasks:
    conv: list[torch.Tensor | None]  # per conv layer, (C_c,)
    layers: list[LayerMasks]
