"""Landing on the budgets (parameters, MACs, both) from gate scores."""

import pytest
import torch

from speechprune.method.accounting import dense_count, parameter_count
from speechprune.method.budget import params_budget
from speechprune.method.decision import decide
from speechprune.method.gates import GATE_KINDS, GateLayout
from helpers.models import base_spec


def decide_params(spec, layout, scores, target):
    """The decision on one parameter budget of ``target`` parameters."""
    budget = params_budget(spec, layout, 1 - target / dense_count(spec, layout))
    decision = decide(layout, [budget], scores)
    decision.params = decision.costs["params"]
    return decision


@pytest.mark.parametrize("kinds", [GATE_KINDS, ("conv", "head", "int")])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.72, 0.9])
def test_lands_within_half_a_percent(kinds, sparsity):
    spec = base_spec("wavlm")
    layout = GateLayout(spec, kinds)
    target = dense_count(spec, layout) * (1 - sparsity)
    scores = torch.randn(layout.size, generator=torch.Generator().manual_seed(0)) + 0.5
    decision = decide_params(spec, layout, scores, target)
    assert decision.within_tolerance and abs(decision.params / target - 1) <= 0.005
    assert decision.params == parameter_count(spec, layout.values(decision.keep.double())).item()


def test_keeps_the_gate_decision_when_it_already_fits():
    spec = base_spec()
    layout = GateLayout(spec)
    scores = torch.randn(layout.size, generator=torch.Generator().manual_seed(1))
    exact = parameter_count(spec, layout.values((scores > 0).double())).item()
    decision = decide_params(spec, layout, scores, exact)
    assert decision.adjusted == 0 and torch.equal(decision.keep, scores > 0)


def test_adjustment_follows_the_ranking():
    spec = base_spec()
    layout = GateLayout(spec, ("int",))
    scores = torch.linspace(1, 2, layout.size)  # all positive: everything kept at first
    decision = decide_params(spec, layout, scores, dense_count(spec, layout) * 0.8)
    removed = scores[~decision.keep]
    assert removed.max() < scores[decision.keep].min()  # the lowest scores went first


def test_many_tied_scores_still_land():
    spec = base_spec()
    layout = GateLayout(spec)
    scores = torch.randint(0, 4, (layout.size,), generator=torch.Generator().manual_seed(2)).double()
    target = dense_count(spec, layout) * 0.28
    assert decide_params(spec, layout, scores, target).within_tolerance


def test_coarse_structures_report_the_closest_size():
    spec = base_spec()
    layout = GateLayout(spec, ("mha", "ffn"))
    target = dense_count(spec, layout) * 0.28
    decision = decide_params(spec, layout, torch.randn(layout.size, generator=torch.Generator().manual_seed(0)), target)
    assert not decision.within_tolerance
    assert abs(decision.params / target - 1) < 0.05  # the closest block combination, not a far one


def test_every_conv_layer_keeps_a_channel():
    spec = base_spec()
    layout = GateLayout(spec, ("conv", "int"))
    scores = torch.ones(layout.size, dtype=torch.float64)
    scores[layout.group("conv", 3).offset : layout.group("conv", 3).offset + 512] = -5  # gates say: drop it all
    decision = decide_params(spec, layout, scores, dense_count(spec, layout) * 0.5)
    kept = layout.values(decision.keep.double()).get("conv", 3)
    assert kept.sum() == 1 and decision.within_tolerance


def test_a_target_is_reachable_only_when_its_window_is():
    """Removing every gated structure must land at or under the target's window: a target the
    tolerance alone would seem to reach is refused before any weights load."""
    from speechprune.errors import UsageError

    spec = base_spec()
    layout = GateLayout(spec, ("head", "int"))
    dense = dense_count(spec, layout)
    smallest = params_budget(spec, layout, 0.5).exact(layout.values(torch.zeros(layout.size, dtype=torch.float64)))
    highest = 1 - smallest / (dense * 1.005)  # the target whose window ends at the smallest size
    params_budget(spec, layout, highest - 1e-6).check_reachable(layout, ["head", "int"])
    for sparsity in (highest + 1e-6, 1 - smallest / dense + 0.004):  # within the tolerance of what removing all leaves
        with pytest.raises(UsageError, match=f"--sparsity {sparsity:g} is out of reach.*--sparsity {highest:.3f} at most"):
            params_budget(spec, layout, sparsity).check_reachable(layout, ["head", "int"])
