"""Hard-concrete L0 gates (Louizos et al. 2018) over every prunable structure of an encoder.

All gates of a model live in one flat ``log_alpha`` vector, so sampling, keep probabilities
and decisions are single vectorised ops; ``GateLayout`` says which slice belongs to which
structure and turns a flat vector of gate values into ``EncoderMasks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..model.masks import EncoderMasks
from ..model.spec import EncoderSpec
from .parts import PART_TYPES, encoder_parts

GATE_KINDS = tuple(kind for part in PART_TYPES for kind in part.gate_kinds)  # each declared by its part
DEFAULT_KINDS = GATE_KINDS
# Whole blocks and heads, as their parts declare: one gate removes a large, indivisible share of
# a budget. The others (CNN channels, q/k and v/o dimensions, FFN units) fill a gap finely.
COARSE_KINDS = tuple(kind for part in PART_TYPES for kind in part.coarse_kinds)

BETA = 2.0 / 3.0  # temperature
LIMIT_L, LIMIT_R = -0.1, 1.1  # stretch interval
EPS = 1e-6
INIT_LOG_ALPHA = 3.0  # keep probability sigmoid(3) = 0.95: every gate starts clearly on


@dataclass(frozen=True)
class GateGroup:
    kind: str  # one of GATE_KINDS
    index: int  # conv layer for "conv", transformer layer otherwise
    shape: tuple[int, ...]
    offset: int  # into the flat log_alpha vector

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.index}"


class GateLayout:
    """Where each structure's gates sit in the flat vector, for a dense ``EncoderSpec``."""

    def __init__(self, spec: EncoderSpec, kinds: tuple[str, ...] | list[str] = DEFAULT_KINDS):
        unknown = set(kinds) - set(GATE_KINDS)
        if unknown:
            raise ValueError(f"unknown gate kinds {sorted(unknown)}; known: {', '.join(GATE_KINDS)}")
        self.kinds = tuple(k for k in GATE_KINDS if k in kinds)
        self.parts = encoder_parts(spec)
        self.groups: list[GateGroup] = []
        offset = 0
        for kind, index, shape in [group for part in self.parts for group in part.gates() if group[0] in kinds]:
            group = GateGroup(kind, index, shape, offset)
            self.groups.append(group)
            offset += group.size
        self.size = offset
        self.num_layers = len(spec.layers)
        self._by_key = {(g.kind, g.index): g for g in self.groups}

    def group(self, kind: str, index: int) -> GateGroup | None:
        return self._by_key.get((kind, index))

    def values(self, z: torch.Tensor) -> "GateValues":
        return GateValues(self, z)

    def of_kinds(self, kinds: tuple[str, ...]) -> torch.Tensor:
        """(N,) bool: True on the gates of ``kinds``."""
        parts = [torch.full((g.size,), g.kind in kinds, dtype=torch.bool) for g in self.groups]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


class GateValues:
    """A flat vector of gate values (samples, probabilities or decisions) seen per structure."""

    def __init__(self, layout: GateLayout, z: torch.Tensor):
        self.layout = layout
        self.flat = z
        # One split for all groups: slicing each group separately would make backward allocate
        # and add a full-length gradient per slice (~160 per step for a Base model).
        parts = z.split([g.size for g in layout.groups]) if layout.groups else ()
        self._parts = {(g.kind, g.index): p.view(g.shape) for g, p in zip(layout.groups, parts)}

    def get(self, kind: str, index: int) -> torch.Tensor | None:
        """The values of one structure, shaped like it; None when that kind is not gated."""
        return self._parts.get((kind, index))

    def value(self, kind: str, index: int, *shape: int) -> torch.Tensor:
        """The values of one structure, or ones of ``shape`` when that kind is not gated (always kept)."""
        value = self.get(kind, index)
        return torch.ones(shape, dtype=self.flat.dtype, device=self.flat.device) if value is None else value

    def masks(self) -> EncoderMasks:
        """The multipliers of the forward pass: each group's values under its (kind, index)."""
        return EncoderMasks(self._parts)


class HardConcreteGates(nn.Module):
    """The learnable gates: a ``log_alpha`` per structure, sampled with or without STE.

    STE (default): the forward pass uses z_hard = 1[z > 0.5], the backward pass the gradient of
    the relaxed z, so training already runs the binary network it will deploy. The
    probability that a sampled hard gate is 1 is sigmoid(log_alpha), and the deterministic
    decision 1[log_alpha > 0] is that probability's rounding.

    Relaxed (ste=False): the forward pass uses the stretched, clamped z itself, whose
    probability of being non-zero is sigmoid(log_alpha - beta * log(-l / r)).
    """

    def __init__(self, layout: GateLayout, ste: bool = True):
        super().__init__()
        self.layout = layout
        self.ste = ste
        self.log_alpha = nn.Parameter(torch.full((layout.size,), INIT_LOG_ALPHA))
        # Annealing: sampling and keep probabilities see sharpness * log_alpha, so as it grows every
        # gate's keep probability tends to its decision 1[log_alpha > 0] (which it leaves alone).
        self.sharpness = 1.0

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N,) gate values for one training step."""
        u = torch.rand(self.log_alpha.shape, generator=generator, device="cpu").to(self.log_alpha.device)
        u = u.clamp(EPS, 1 - EPS)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.sharpness * self.log_alpha) / BETA)
        z = (s * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0.0, 1.0)
        if not self.ste:
            return z
        hard = (z > 0.5).to(z.dtype)
        return hard + (z - z.detach())  # exactly 0/1 forward, gradient of the relaxed z

    def keep_probability(self, shift: float = 0.0) -> torch.Tensor:
        """(N,) probability that the forward pass keeps each structure (differentiable); ``shift``
        is added to every log_alpha first (``budget.shift_onto_targets`` searches it)."""
        log_alpha = self.sharpness * (self.log_alpha + shift)
        if self.ste:
            return torch.sigmoid(log_alpha)
        return torch.sigmoid(log_alpha - BETA * math.log(-LIMIT_L / LIMIT_R))

    def deterministic(self, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) gate values for evaluation and shrinking.

        ``keep`` (bool, (N,)) overrides which structures are kept (the budget adjustment);
        by default 1[log_alpha > 0]. STE gates are 0/1; relaxed gates keep their soft
        median value, which shrinking folds into the following weights.
        """
        with torch.no_grad():
            if keep is None:
                keep = self.log_alpha > 0
            if self.ste:
                return keep.to(self.log_alpha.dtype)
            soft = (torch.sigmoid(self.log_alpha / BETA) * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0.0, 1.0)
            # a kept relaxed gate whose median clamps to 0 would silently drop: keep it tiny instead
            return torch.where(keep, soft.clamp(min=EPS), torch.zeros_like(soft))


def gate_dict(layout: GateLayout, flat: torch.Tensor) -> dict[str, list]:
    """Flat per-gate values as JSON-ready nested lists: {kind: [per layer, shaped like it]}."""
    values = layout.values(flat.detach().cpu().double())
    out: dict[str, list] = {}
    for group in layout.groups:
        out.setdefault(group.kind, []).append(values.get(group.kind, group.index).tolist())
    return out


def gate_flat(layout: GateLayout, data: dict[str, list]) -> torch.Tensor:
    """Inverse of ``gate_dict``: nested lists per kind -> the flat vector in layout order.

    Raises ValueError naming the first kind or layer whose shape does not fit the layout.
    """
    parts = []
    for group in layout.groups:
        try:
            value = torch.as_tensor(data[group.kind][group.index], dtype=torch.float64)
        except (KeyError, IndexError):
            raise ValueError(f"no scores for {group.name}") from None
        if tuple(value.shape) != group.shape:
            raise ValueError(f"scores for {group.name} have shape {tuple(value.shape)}, the model needs {group.shape}")
        parts.append(value.flatten())
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
