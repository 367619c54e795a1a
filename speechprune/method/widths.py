"""The decision lands on widths the hardware runs fast (``prune --round-to N|auto|none``).

A decision (``decision.decide``) sets widths: each conv layer's channels, each kept FFN's
units, each present head's q/k and v/o dims (heads themselves stay whole). Kernels run widths
in blocks, so once it has landed every width moves to a candidate of the rule:

* ``N``: a multiple of N: the nearest, with the multiples on either side to land;
* ``auto``: a multiple of the cost table's block step within ``SPAN`` blocks, among those no
  wider candidate beats in predicted time (``latency.predict_ms``, at the table's width steps):
  a width just inside a slow band is not kept when a wider one costs no more, and the nearest
  remaining candidate is taken.

A width keeps the gates of its group ranked highest, those kept first: rounding up adds the
gates the scores ranked next, rounding down drops the lowest, and the result is still a mask,
so ``shrink`` slices exactly what the masked model computes. The parts say which widths they
set and how one is written into a spec (``Part.widths``, ``Part.resize``).

Then the budgets land again, as ``decision`` lands single gates: while the binding ratio R
(cost / target) is above its window, widths step down to their next candidate, those whose
dropped gates score lowest first; below it, up, the best first; each step's change estimated by
the budgets' marginal costs, and every round counted exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import UsageError
from ..model.spec import EncoderSpec
from .budget import Budget
from .decision import STALE_ROUNDS, CostSearch, Decision, binding, lands
from .gates import GateLayout
from .latency import CostTable, predict_ms
from .parts import decide_parts
from .parts.base import Width

SPAN = 4  # auto: candidates within this many blocks of the decided width


def check_round_to(value: str | None, latency_table: str | None) -> None:
    """Refuse a --round-to that is not none, auto or a whole number >= 1, and auto without a table."""
    if value is None or value == "none":
        return
    if value == "auto":
        if latency_table is None:
            raise UsageError("--round-to auto follows the width steps of --latency-table; give a table "
                             "(speechprune bench MODEL --cost-model FILE) or --round-to N")
        return
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--round-to must be none, auto or a whole number of channels of at least 1 (e.g. 8), "
                         f"got {value!r}")


@dataclass(frozen=True)
class WidthRule:
    """Where widths land: multiples of ``multiple``; with ``table`` (auto) only those it prices fast."""

    setting: str  # as the summary records it: "8", "auto"
    multiple: int
    table: CostTable | None = None

    def candidates(self, width: Width, cost: Callable[[Width, int], float]) -> list[int]:
        """Ascending widths ``width`` may take (its maximum, the dense width, among them when near)."""
        span = SPAN if self.table is not None else 1
        w, m, top = width.kept, self.multiple, width.maximum
        low, high = max(1, w - span * m), min(top, w + span * m)
        options = {k for k in range(math.ceil(low / m) * m, high + 1, m)}
        if top <= w + span * m:
            options.add(top)
        options = sorted(options)
        if self.table is None:
            return options
        fast, cheapest = [], math.inf  # from the widest down: a width stays if every wider one costs more
        for option in reversed(options):
            ms = cost(width, option)
            if ms < cheapest:
                fast.append(option)
                cheapest = ms
        return fast[::-1]


def width_rule(round_to: str | None, table: CostTable | None, path: str | None = None,
               speedup: float | None = None) -> WidthRule | None:
    """The rule of --round-to (None: keep the decided widths). Not given: auto with a table of
    width steps, else none. Refuses auto with a table without steps (format 1), and such a table
    without ``speedup`` (--speedup), which then has nothing to do."""
    if table is not None and table.steps is None and speedup is None:
        raise UsageError(f"--latency-table {path} has no width steps (format 1), so without --speedup it has nothing "
                         "to do: --speedup and --latency-table go together, or measure a table with width steps "
                         "(speechprune bench MODEL --cost-model FILE) for --round-to auto")
    setting = round_to or ("auto" if table is not None and table.steps is not None else "none")
    if setting == "none":
        return None
    if setting == "auto":
        if table is None or table.steps is None:
            raise UsageError(f"--round-to auto needs a cost table with width steps, but --latency-table {path} is of "
                             "format 1; measure it again with speechprune bench MODEL --cost-model FILE, or give "
                             "--round-to N")
        return WidthRule("auto", table.steps.block, table)
    return WidthRule(setting, int(setting))


@dataclass
class _Group:
    """One width during the landing: its gates in rank order and its candidates."""

    width: Width
    order: torch.Tensor  # (n,) flat indices: the kept gates first, each part by score, highest first
    candidates: list[int]
    choice: int = field(default=0)  # index into candidates

    @property
    def value(self) -> int:
        return self.candidates[self.choice]


def round_widths(spec: EncoderSpec, layout: GateLayout, budgets: list[Budget], scores: torch.Tensor,
                 decision: Decision, rule: WidthRule) -> tuple[Decision, int]:
    """``decision`` with every width on a candidate of ``rule`` and the budgets landed again;
    and how many widths moved. ``scores`` (N,) rank the gates (the decision's ranking)."""
    scores = scores.detach().double().cpu()
    keep = decision.keep.clone()
    decided = decide_parts(spec, layout.values(keep.double()))
    cost = _cost(rule.table, decided.spec) if rule.table is not None else None
    groups = []
    for part in layout.parts:
        for width in part.widths(decided.kept[part.name], layout):
            by_score = width.gates[torch.argsort(scores[width.gates], descending=True, stable=True)]
            order = by_score[torch.argsort((~keep[by_score]).to(torch.uint8), stable=True)]  # kept ones first
            candidates = rule.candidates(width, cost)
            nearest = min(range(len(candidates)), key=lambda i: (abs(candidates[i] - width.kept), -candidates[i]))
            groups.append(_Group(width, order, candidates, nearest))
    search = CostSearch(layout, budgets)
    landed = _land(search, budgets, groups, keep, scores)
    costs = search.costs(landed)
    moved = sum(group.width.kept != int(landed[group.width.gates].sum()) for group in groups)
    rounded = Decision(keep=landed, costs=costs, binding=binding(budgets, costs).name,
                       adjusted=decision.adjusted + int((landed != decision.keep).sum()),
                       within_tolerance=lands(budgets, costs))
    return rounded, moved


def _cost(table: CostTable, spec: EncoderSpec) -> Callable[[Width, int], float]:
    """Predicted ms of ``spec`` with one width set to another value."""

    def cost(width: Width, value: int) -> float:
        fields = spec.to_dict()
        width.resize(fields, value)
        return predict_ms(table, EncoderSpec.from_dict(fields))

    return cost


def _apply(keep: torch.Tensor, groups: list[_Group]) -> torch.Tensor:
    keep = keep.clone()
    for group in groups:
        keep[group.order] = False
        keep[group.order[:group.value]] = True
    return keep


def _land(search: CostSearch, budgets: list[Budget], groups: list[_Group], start: torch.Tensor,
          scores: torch.Tensor) -> torch.Tensor:
    """Step widths between their candidates until the decision lands (or the closest one seen)."""
    keep = _apply(start, groups)
    best, best_miss, stale = keep, math.inf, 0
    while stale < STALE_ROUNDS:
        costs = search.costs(keep)
        if lands(budgets, costs):
            return keep
        ratios = torch.tensor([costs[b.name] / b.target for b in budgets], dtype=torch.float64)  # (B,)
        tight = int(torch.argmax(ratios))
        r, tolerance = float(ratios[tight]), budgets[tight].tolerance
        stale += 1
        if abs(r - 1) < best_miss:
            best, best_miss, stale = keep, abs(r - 1), 0
        removing = r > 1 + tolerance
        shares = torch.stack([m / b.target for m, b in zip(search.marginals(keep), budgets)])  # (B, N)
        moves = []  # (mean score of the gates it flips, its step in R, group, candidate index)
        for group in groups:
            to = group.choice + (-1 if removing else 1)
            if not 0 <= to < len(group.candidates):
                continue
            now, then = group.value, group.candidates[to]
            flipped = group.order[min(now, then):max(now, then)]
            change = shares[:, flipped].sum(1)  # (B,)
            after = float((ratios - change if removing else ratios + change).max())
            step = r - after if removing else after - r
            if step > 0:
                moves.append((float(scores[flipped].mean()), step, group, to))
        if not moves:
            break
        room = r - (1 - tolerance) if removing else 1 + tolerance - r
        fits = sorted((m for m in moves if m[1] <= room), key=lambda m: m[0], reverse=not removing)
        if fits:
            total = 0.0
            for taken, (_, step, group, to) in enumerate(fits):
                if taken and total + step > abs(r - 1):  # as many as the estimated need allows; counted again next round
                    break
                total += step
                group.choice = to
        else:
            _, _, group, to = min(moves, key=lambda m: m[1])
            group.choice = to
        keep = _apply(start, groups)
    return best
