"""Turn gate scores into a keep/remove decision that lands on every budget.

A decision lands when every budget's exact cost is at or under its window and the binding
one (the highest cost relative to its target) is inside its window. With R = the largest
ratio cost / target over the budgets, that is one condition: 1 - tol <= R <= 1 + tol.

The decision starts from 1[score > 0] (trained gates: 1[log_alpha > 0]). If that does not
land, structures are ranked by score: first a threshold on the ranking (binary search: every
cost only falls as the threshold rises), then single gates near the threshold are removed
or added back, lowest score first, skipping any whose flip would jump past the window (a
whole block can be larger than the window).

The change of a cost when one gate flips is the partial derivative of the budget's expected
cost at the current decision: exactly, since the costs are multilinear in the gates (no gate
appears twice in a product; the latency table's squared channel count is written so that the
same holds); autograd gives all of them at once. Flips interact, so each round counts again,
exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .budget import Budget
from .gates import GateLayout, GateValues

STALE_ROUNDS = 50  # rounds without getting closer: the window is out of reach


@dataclass
class Decision:
    keep: torch.Tensor  # (N,) bool
    costs: dict[str, float]  # exact cost of the decision per budget name
    binding: str  # name of the budget that costs most against its target
    adjusted: int  # gates whose decision differs from the initial one
    within_tolerance: bool  # False only when the gated structures are too coarse for the window


def decide(layout: GateLayout, budgets: list[Budget], scores: torch.Tensor, initial: torch.Tensor | None = None) -> Decision:
    """Keep/remove every gate so that the decision lands on ``budgets``.

    ``scores`` (N,) ranks the structures (higher: more worth keeping); ``initial`` (N,) bool is
    the decision to start from, by default ``scores > 0``.
    """
    scores = scores.detach().double().cpu()
    search = CostSearch(layout, budgets)
    protected = _best_channel_per_conv_layer(layout, scores)
    initial = (scores > 0) if initial is None else initial.detach().cpu().bool()
    keep = initial | protected
    costs = search.costs(keep)
    if not lands(budgets, costs):
        keep = search.threshold(scores) | protected
        keep = search.refine(scores, keep, protected)
        costs = search.costs(keep)
    return Decision(
        keep=keep,
        costs=costs,
        binding=binding(budgets, costs).name,
        adjusted=int((keep != initial).sum()),
        within_tolerance=lands(budgets, costs),
    )


def binding(budgets: list[Budget], costs: dict[str, float]) -> Budget:
    """The budget that costs most against its target (``costs`` by budget name)."""
    return max(budgets, key=lambda b: costs[b.name] / b.target)


def lands(budgets: list[Budget], costs: dict[str, float]) -> bool:
    """Every budget at or under its window, the binding one inside it."""
    tight = binding(budgets, costs)
    return all(b.fits(costs[b.name]) for b in budgets) and tight.lands(costs[tight.name])


MIX_STEPS = 10  # bisection steps on the weight between two budgets' shares (1/1024 resolution)


def value_per_cost(layout: GateLayout, budgets: list[Budget], importance: torch.Tensor,
                   weights: list[float] | None = None) -> torch.Tensor:
    """(N,) ranking for a one-shot decision: log importance per unit of budget.

    A structure's cost is what removing it alone from the dense model saves, as a share of each
    budget's dense cost, summed over the budgets (with ``weights``, default 1 each): a CNN
    channel is cheap in parameters but dear in MACs, an FFN unit the other way round.
    Importance scores (``analyze``) measure what a structure is worth; dividing by cost ranks
    like a knapsack.
    """
    ones = torch.ones(layout.size, dtype=torch.bool)
    weights = weights or [1.0] * len(budgets)
    marginals = CostSearch(layout, budgets).marginals(ones)
    share = sum(w * m / b.dense for w, m, b in zip(weights, marginals, budgets))  # (N,)
    tiny = torch.finfo(torch.float64).tiny
    return torch.log(importance.detach().double().cpu().clamp(min=tiny)) - torch.log(share.clamp(min=tiny))


def one_shot_ranking(layout: GateLayout, budgets: list[Budget], importance: torch.Tensor) -> torch.Tensor:
    """(N,) the ranking a one-shot decision from importance scores uses.

    Cost is counted in the currency of the budget that binds: a budget that ends up under
    its target should not make the structures it prices look dear. Each budget's own ranking
    is tried in turn, and the first whose decision lands with that budget binding is taken.
    When none does with two budgets, each binds under the other's ranking, so a mix of the two
    makes both bind at once: the weight between their shares is found by bisection. With more
    budgets, the shares are summed.
    """
    if len(budgets) == 1:
        return value_per_cost(layout, budgets, importance)
    for budget in budgets:
        ranking = value_per_cost(layout, [budget], importance)
        if _binding(layout, budgets, ranking) == budget.name:
            return ranking
    if len(budgets) > 2:
        return value_per_cost(layout, budgets, importance)
    # weight of the first budget's share: at 0 (the second's ranking) the first binds, at 1 the second
    low, high = 0.0, 1.0
    for _ in range(MIX_STEPS):
        mid = (low + high) / 2
        if _binding(layout, budgets, value_per_cost(layout, budgets, importance, [mid, 1 - mid])) == budgets[0].name:
            low = mid  # the first still binds: price its structures higher, so fewer of them are kept
        else:
            high = mid
    return value_per_cost(layout, budgets, importance, [low, 1 - low])


def _binding(layout: GateLayout, budgets: list[Budget], ranking: torch.Tensor) -> str | None:
    """The budget that binds the one-shot decision from ``ranking`` (None when it does not land)."""
    decision = decide(layout, budgets, ranking, initial=torch.ones(layout.size, dtype=torch.bool))
    return decision.binding if decision.within_tolerance else None


def _best_channel_per_conv_layer(layout: GateLayout, scores: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the best channel of each conv layer, which is never removed (a conv layer
    without channels would turn the whole encoder into a constant)."""
    protected = torch.zeros_like(scores, dtype=torch.bool)
    for group in layout.groups:
        if group.kind == "conv":
            protected[group.offset + int(torch.argmax(scores[group.offset : group.offset + group.size]))] = True
    return protected


class CostSearch:
    """Exact costs, their ratio to the targets, and marginal costs of decisions."""

    def __init__(self, layout: GateLayout, budgets: list[Budget]):
        if not budgets:
            raise ValueError("a decision needs at least one budget")
        self.layout = layout
        self.budgets = budgets

    def values(self, keep: torch.Tensor) -> GateValues:
        return GateValues(self.layout, keep.double())

    def costs(self, keep: torch.Tensor) -> dict[str, float]:
        """Exact cost of decision ``keep`` per budget name."""
        values = self.values(keep)
        return {b.name: b.exact(values) for b in self.budgets}

    def fits(self, keep: torch.Tensor) -> bool:
        costs = self.costs(keep)
        return all(b.fits(costs[b.name]) for b in self.budgets)

    def marginals(self, keep: torch.Tensor) -> list[torch.Tensor]:
        """Per budget, (N,) change of its cost when each gate alone is switched on."""
        with torch.enable_grad():  # callers may be inside no_grad
            z = keep.double().requires_grad_(True)
            values = GateValues(self.layout, z)
            return [torch.autograd.grad(b.expected(values), z)[0] for b in self.budgets]

    def threshold(self, scores: torch.Tensor) -> torch.Tensor:
        """The largest ranking prefix (by score) that fits every budget."""
        everything = torch.ones_like(scores, dtype=torch.bool)
        if self.fits(everything):
            return everything
        cuts = torch.unique(scores)  # ascending; keep = scores > cut
        lo, hi = 0, len(cuts) - 1  # keep = scores > cuts[hi] keeps nothing, which fits
        while lo < hi:
            mid = (lo + hi) // 2
            if self.fits(scores > cuts[mid]):
                hi = mid
            else:
                lo = mid + 1
        return scores > cuts[lo]

    def refine(self, scores: torch.Tensor, keep: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
        """Flip single gates near the threshold until R is inside the binding budget's window.

        Gates are flipped in score order among those that fit the window. When none fits (a unit
        adds nothing while its block is removed, a block is larger than the window), the smallest
        structure is flipped anyway and the next round repairs the overshoot with finer ones.
        When nothing can reach the window (only coarse structures gated), returns the closest
        decision seen.
        """
        keep = keep.clone()
        best, best_miss, stale = keep.clone(), math.inf, 0
        while stale < STALE_ROUNDS:
            costs = self.costs(keep)
            if lands(self.budgets, costs):
                return keep
            ratios = torch.tensor([costs[b.name] / b.target for b in self.budgets], dtype=torch.float64)  # (B,)
            tight = int(torch.argmax(ratios))
            r, tolerance = float(ratios[tight]), self.budgets[tight].tolerance
            stale += 1
            if abs(r - 1) < best_miss:
                best, best_miss, stale = keep.clone(), abs(r - 1), 0
            removing = r > 1 + tolerance
            # each gate's step in R when it alone flips: R is the largest ratio, and a flip
            # moves every budget's ratio by that budget's share of the gate
            shares = torch.stack([m / b.target for m, b in zip(self.marginals(keep), self.budgets)])  # (B, N)
            if removing:
                step = r - (ratios[:, None] - shares).max(0).values
            else:
                step = (ratios[:, None] + shares).max(0).values - r
            pool = (keep & ~protected if removing else ~keep) & (step > 0)
            if not pool.any():
                break
            room = (r - (1 - tolerance)) if removing else (1 + tolerance - r)
            fits = torch.nonzero(pool & (step <= room)).flatten()
            if len(fits):
                order = fits[torch.argsort(scores[fits], descending=not removing)]
                # take as many as the estimated need allows (flips interact, so re-count next round)
                take = max(1, int((torch.cumsum(step[order], 0) <= abs(r - 1)).sum()))
                keep[order[:take]] = not removing
            else:
                candidates = torch.nonzero(pool).flatten()
                keep[candidates[torch.argmin(step[candidates])]] = not removing
        return best
