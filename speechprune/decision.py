"""Turn trained gates into a keep/remove decision that lands on the parameter budget.

The decision starts from 1[log_alpha > 0]. If its exact size is outside the tolerance
window around the target, structures are ranked by log_alpha: first a threshold on the
ranking (binary search: the count only falls as the threshold rises), then single gates near
the threshold are removed or added back, lowest score first, skipping any whose removal
would jump past the window (a whole block can be larger than the window).

The count is multilinear in the gates (no gate appears twice in a product), so the change
of the count when one gate flips is exactly the partial derivative at the current decision;
autograd gives all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .accounting import parameter_count
from .encoder import EncoderSpec
from .gates import GateLayout, GateValues


@dataclass
class Decision:
    keep: torch.Tensor  # (N,) bool
    params: int  # exact size of the shrunk encoder
    adjusted: int  # gates whose decision differs from 1[log_alpha > 0]
    within_tolerance: bool  # False only when the gated structures are too coarse for the window


def _count(spec: EncoderSpec, layout: GateLayout, keep: torch.Tensor) -> int:
    return int(round(parameter_count(spec, GateValues(layout, keep.double())).item()))


def _marginals(spec: EncoderSpec, layout: GateLayout, keep: torch.Tensor) -> torch.Tensor:
    """(N,) change of the count when each gate alone is switched on (from its current value)."""
    with torch.enable_grad():  # callers may be inside no_grad
        z = keep.double().requires_grad_(True)
        (grad,) = torch.autograd.grad(parameter_count(spec, GateValues(layout, z)), z)
    return grad


def decide(
    spec: EncoderSpec, layout: GateLayout, scores: torch.Tensor, target: float, tolerance: float = 0.005
) -> Decision:
    """Keep/remove every gate so that the exact count is within ``tolerance`` of ``target``.

    ``scores`` (N,) ranks the structures (log_alpha: higher is more worth keeping).
    """
    scores = scores.detach().double().cpu()
    lower, upper = target * (1 - tolerance), target * (1 + tolerance)
    protected = _best_channel_per_conv_layer(layout, scores)
    initial = scores > 0
    keep = initial | protected
    count = _count(spec, layout, keep)
    if count > upper or count < lower:
        keep = _threshold(spec, layout, scores, upper) | protected
        keep = _refine(spec, layout, scores, keep, lower, upper, protected)
        count = _count(spec, layout, keep)
    return Decision(
        keep=keep,
        params=count,
        adjusted=int((keep != initial).sum()),
        within_tolerance=lower <= count <= upper,
    )


def _best_channel_per_conv_layer(layout: GateLayout, scores: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the best channel of each conv layer, which is never removed (a conv layer
    without channels would turn the whole encoder into a constant)."""
    protected = torch.zeros_like(scores, dtype=torch.bool)
    for group in layout.groups:
        if group.kind == "conv":
            protected[group.offset + int(torch.argmax(scores[group.offset : group.offset + group.size]))] = True
    return protected


def _threshold(spec, layout, scores: torch.Tensor, upper: float) -> torch.Tensor:
    """The largest ranking prefix (by score) whose count does not exceed ``upper``."""
    cuts = torch.unique(scores)  # ascending; keep = scores > cut, or keep everything
    if _count(spec, layout, torch.ones_like(scores, dtype=torch.bool)) <= upper:
        return torch.ones_like(scores, dtype=torch.bool)
    lo, hi = 0, len(cuts) - 1  # keep = scores > cuts[hi] keeps nothing, which fits
    while lo < hi:
        mid = (lo + hi) // 2
        if _count(spec, layout, scores > cuts[mid]) <= upper:
            hi = mid
        else:
            lo = mid + 1
    return scores > cuts[lo]


def _refine(spec, layout, scores, keep, lower: float, upper: float, protected: torch.Tensor) -> torch.Tensor:
    """Flip single gates near the threshold until the count is inside [lower, upper].

    Gates are flipped in score order among those that fit the window. When none fits (a unit
    adds nothing while its block is removed, a block is larger than the window), the smallest
    structure is flipped anyway and the next round repairs the overshoot with finer ones.
    When nothing can reach the window (only coarse structures gated), returns the closest
    decision seen.
    """
    keep = keep.clone()
    target = (lower + upper) / 2
    best, best_miss, stale = keep.clone(), float("inf"), 0
    while stale < 50:  # rounds without getting closer: the window is out of reach
        count = _count(spec, layout, keep)
        if lower <= count <= upper:
            return keep
        stale += 1
        if abs(count - target) < best_miss:
            best, best_miss, stale = keep.clone(), abs(count - target), 0
        marginal = _marginals(spec, layout, keep)
        removing = count > upper
        pool = (keep & ~protected if removing else ~keep) & (marginal > 0)
        if not pool.any():
            break
        room = (count - lower) if removing else (upper - count)
        fits = torch.nonzero(pool & (marginal <= room)).flatten()
        if len(fits):
            order = fits[torch.argsort(scores[fits], descending=not removing)]
            # take as many as the estimated need allows (flips interact, so re-count next round)
            take = max(1, int((torch.cumsum(marginal[order], 0) <= abs(count - target)).sum()))
            keep[order[:take]] = not removing
        else:
            candidates = torch.nonzero(pool).flatten()
            keep[candidates[torch.argmin(marginal[candidates])]] = not removing
    return best
