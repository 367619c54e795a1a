"""Budgets: what a pruning run must remove, each in its own currency (``currencies.py``:
parameters, MACs, predicted milliseconds: ``latency.latency_budget``).

A ``Budget`` holds one target in one unit: the dense cost, the fraction to remove, the
tolerance window, and two views of the cost of a gate assignment:

* ``expected(values)``, a closed-form function of the gates (multilinear for parameters and
  MACs): on keep probabilities it is the expected cost the Lagrangian drives to the target,
  and on 0/1 decisions its gradient gives the change of the cost when one gate flips;
* ``exact(values)``, what the shrunk model really costs for decisions (for MACs: at the
  run-time head widths); the decision and the summary use it.

Every other place (reachability check, decision, Lagrangian, summary) asks a budget rather
than re-deriving ``dense * (1 - sparsity)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import UsageError
from ..model.spec import EncoderSpec
from .accounting import dense_count, parameter_count, pruned_spec, spec_parameter_count
from .currencies import DEFAULT_TOLERANCE, MACS, PARAMS, Currency
from .gates import GateLayout, GateValues, HardConcreteGates
from .macs import macs_count, pruned_macs

SHIFT_ITERATIONS = 40  # bisection steps of shift_onto_targets


@dataclass(frozen=True)
class Budget:
    currency: Currency  # its name, option and unit
    dense: float  # cost of the dense model
    sparsity: float  # fraction of ``dense`` to remove
    tolerance: float
    expected: Callable[[GateValues], torch.Tensor]
    exact: Callable[[GateValues], float]
    record: dict = field(default_factory=dict)  # what else config.json keeps (a latency budget: its table)

    @property
    def name(self) -> str:
        """The currency's name: the key of this budget in every dict of costs and records."""
        return self.currency.name

    @property
    def setting(self) -> float:
        """The option's value as given, e.g. --speedup 3."""
        return round(self.currency.option_value(self.sparsity), 9)

    def amount(self, cost: float) -> str:
        """A cost for messages: "45.67M MACs", "12.3 ms"."""
        unit = self.currency.unit
        return f"{cost:.1f} {unit}" if self.currency.decimals else f"{cost / 1e6:.2f}M {unit}"

    def _rounded(self, cost: float) -> float:
        decimals = self.currency.decimals
        return round(cost, decimals) if decimals else int(round(cost))

    @property
    def target(self) -> float:
        return self.dense * (1 - self.sparsity)

    @property
    def window(self) -> tuple[float, float]:
        """(lower, upper) cost a decision may land on."""
        return self.target * (1 - self.tolerance), self.target * (1 + self.tolerance)

    def fits(self, cost: float) -> bool:
        """At or under the upper end of the window (a budget that is not binding may be undershot)."""
        return cost <= self.window[1]

    def lands(self, cost: float) -> bool:
        lower, upper = self.window
        return lower <= cost <= upper

    def expected_sparsity(self, values: GateValues) -> torch.Tensor:
        return 1 - self.expected(values) / self.dense

    def summary(self, cost: float) -> dict:
        """JSON-ready: the target and what a decision costing ``cost`` achieves."""
        return {
            "option": self.currency.option,
            "option_value": self.setting,
            "unit": self.currency.unit,
            "dense": self._rounded(self.dense),
            "target": self._rounded(self.target),
            "target_sparsity": self.sparsity,
            "achieved": self._rounded(cost),
            "achieved_sparsity": round(1 - cost / self.dense, 6),
            "miss": round(cost / self.target - 1, 6),
            "fits": self.fits(cost),  # at or under the window (the summary's top-level within_tolerance: lands)
        }

    def check_reachable(self, layout: GateLayout, structures: list[str]) -> None:
        """Refuse a target whose window the gated structures cannot reach: removing all of them
        leaves more than its upper end (before any weights load)."""
        smallest = self.exact(GateValues(layout, torch.zeros(layout.size, dtype=torch.float64)))
        if not self.fits(smallest):
            reachable = 1 - smallest / (self.dense * (1 + self.tolerance))  # the target whose window ends there
            option = self.currency.option
            raise UsageError(
                f"{option} {self.setting:g} is out of reach with --structures {','.join(structures)}: "
                f"removing all of them leaves {self.amount(smallest)} of {self.amount(self.dense)} "
                f"({option} {self.currency.option_value(reachable):.3f} at most); lower {option} or add structures"
            )


def params_budget(spec: EncoderSpec, layout: GateLayout, sparsity: float, tolerance: float = DEFAULT_TOLERANCE) -> Budget:
    def expected(values: GateValues) -> torch.Tensor:
        return parameter_count(spec, values)

    def exact(values: GateValues) -> float:
        return float(spec_parameter_count(pruned_spec(spec, values)))

    return Budget(PARAMS, float(dense_count(spec, layout)), sparsity, tolerance, expected, exact)


def macs_budget(spec: EncoderSpec, layout: GateLayout, sparsity: float, samples: int,
                tolerance: float = DEFAULT_TOLERANCE) -> Budget:
    """MACs of one input of ``samples`` (``--macs-seconds`` of audio, batch 1)."""

    def expected(values: GateValues) -> torch.Tensor:
        return macs_count(spec, values, samples)

    def exact(values: GateValues) -> float:
        return float(pruned_macs(spec, values, samples))

    dense = exact(GateValues(layout, torch.ones(layout.size, dtype=torch.float64)))
    return Budget(MACS, dense, sparsity, tolerance, expected, exact)


def shift_onto_targets(budgets: list[Budget], gates: HardConcreteGates, ramp: float = 1.0) -> float:
    """The shift c, added to every log_alpha, that puts the expected costs on the targets
    (at this share ``ramp`` of them): the binding budget on its target, every other at or under.

    That is max over budgets of expected cost / target = 1. Every expected cost rises with c,
    so bisection finds it; the gates' ranking, which training decides, is left as it is.
    """
    targets = [budget.dense * (1 - budget.sparsity * ramp) for budget in budgets]

    def ratio(shift: float) -> float:
        values = gates.layout.values(gates.keep_probability(shift))
        return max(float(budget.expected(values)) / target for budget, target in zip(budgets, targets))

    log_alpha = gates.log_alpha.detach()
    margin = 30.0 / gates.sharpness  # keep probabilities within sigmoid(+-30) of 0 and 1
    return _bisect(ratio, -float(log_alpha.max()) - margin, -float(log_alpha.min()) + margin)


def decided_shift_onto_targets(budgets: list[Budget], gates: HardConcreteGates, movable: torch.Tensor) -> float:
    """The shift c, added to the ``movable`` (N,) log_alphas only, that puts the exact costs of the
    decisions 1[log_alpha (+ c) > 0] on the targets: the binding budget at most one movable gate's
    cost under its target, the others at or under. ``prune.step.hold_on_targets`` moves the fine
    gates so."""
    log_alpha = gates.log_alpha.detach()
    movable = movable.to(log_alpha.device)
    if not movable.any():
        return 0.0

    def ratio(shift: float) -> float:
        values = gates.layout.values((log_alpha + movable * shift > 0).double().cpu())
        return max(budget.exact(values) / budget.target for budget in budgets)

    return _bisect(ratio, -float(log_alpha[movable].max()) - 1e-6, -float(log_alpha[movable].min()) + 1e-6)


def _bisect(ratio: Callable[[float], float], low: float, high: float) -> float:
    """The shift at which ``ratio`` (rising with the shift) reaches 1, approached from below;
    0 when 1 lies outside [low, high]."""
    with torch.no_grad():
        if ratio(low) > 1 or ratio(high) < 1:  # out of reach (checked before the run) or nothing to remove
            return 0.0
        for _ in range(SHIFT_ITERATIONS):
            middle = (low + high) / 2
            low, high = (middle, high) if ratio(middle) < 1 else (low, middle)
        return low
