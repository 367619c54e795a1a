"""Hard-concrete gates: STE samples, keep probabilities, deterministic decisions."""

import math

import pytest

import torch

from speechprune.method.gates import BETA, LIMIT_L, LIMIT_R, GateLayout, HardConcreteGates
from speechprune.model.families import FAMILIES
from helpers.models import build_model


def tiny_layout(kinds=("conv", "mha", "head", "qk", "vo", "ffn", "int")):
    return GateLayout(FAMILIES["wav2vec2"].spec_from_config(build_model("wav2vec2").config), kinds)


def test_layout_orders_and_shapes_every_structure():
    layout = tiny_layout()
    assert [g.name for g in layout.groups[:8]] == [f"conv.{c}" for c in range(7)] + ["mha.0"]
    assert layout.group("qk", 2).shape == (4, 12) and layout.group("int", 1).shape == (96,)
    assert layout.size == 7 * 24 + 3 * (1 + 4 + 48 + 48 + 1 + 96)
    subset = tiny_layout(("head", "int"))
    assert subset.group("conv", 0) is None and subset.size == 3 * (4 + 96)
    masks = subset.values(torch.ones(subset.size)).masks()
    assert masks.get("conv", 0) is None and masks.layer(0).get("qk") is None and masks.layer(0).get("head").shape == (4,)


def test_initial_gates_are_clearly_on():
    gates = HardConcreteGates(tiny_layout())
    assert gates.keep_probability().min() > 0.9
    assert torch.equal(gates.deterministic(), torch.ones(gates.layout.size))


def test_ste_forward_is_binary_and_backward_reaches_log_alpha():
    gates = HardConcreteGates(tiny_layout())
    with torch.no_grad():
        gates.log_alpha.zero_()
    z = gates.sample(torch.Generator().manual_seed(0))
    assert set(z.detach().unique().tolist()) == {0.0, 1.0}
    (z * torch.arange(len(z))).sum().backward()
    assert gates.log_alpha.grad.abs().sum() > 0


def test_keep_probability_matches_sampled_frequency():
    for ste in (True, False):
        gates = HardConcreteGates(tiny_layout(("int",)), ste=ste)
        with torch.no_grad():
            gates.log_alpha.copy_(torch.linspace(-3, 3, gates.layout.size))
        generator = torch.Generator().manual_seed(0)
        frequency = torch.stack([(gates.sample(generator) > 0).float() for _ in range(3000)]).mean(0)
        assert (frequency - gates.keep_probability().detach()).abs().max() < 0.04


def test_relaxed_probability_is_the_method_formula():
    gates = HardConcreteGates(tiny_layout(("ffn",)), ste=False)
    with torch.no_grad():
        gates.log_alpha.fill_(0.3)
    expected = 1 / (1 + math.exp(-(0.3 - BETA * math.log(-LIMIT_L / LIMIT_R))))
    assert abs(gates.keep_probability()[0].item() - expected) < 1e-6


def test_deterministic_values():
    layout = tiny_layout(("int",))
    scores = torch.linspace(-2, 2, layout.size)
    hard = HardConcreteGates(layout, ste=True)
    soft = HardConcreteGates(layout, ste=False)
    with torch.no_grad():
        hard.log_alpha.copy_(scores)
        soft.log_alpha.copy_(scores)
    assert torch.equal(hard.deterministic(), (scores > 0).float())
    values = soft.deterministic()
    assert torch.equal(values > 0, scores > 0) and values.max() <= 1 and values[scores > 0].min() > 0
    keep = torch.zeros(layout.size, dtype=torch.bool)
    keep[:3] = True
    assert torch.equal(hard.deterministic(keep) > 0, keep)


def test_gate_dict_round_trip_and_shape_errors():
    from speechprune.method.gates import gate_dict, gate_flat

    layout = tiny_layout()
    flat = torch.randn(layout.size, dtype=torch.float64)
    data = gate_dict(layout, flat)
    assert set(data) == set(layout.kinds) and len(data["qk"]) == 3 and len(data["qk"][0]) == 4
    assert torch.equal(gate_flat(layout, data), flat)
    data["int"][1] = data["int"][1][:-1]
    with pytest.raises(ValueError, match="int.1"):
        gate_flat(layout, data)


def test_shift_onto_targets_puts_the_binding_budget_on_its_target():
    from speechprune.method.budget import macs_budget, params_budget, shift_onto_targets

    spec = FAMILIES["wav2vec2"].spec_from_config(build_model("wav2vec2").config)
    layout = GateLayout(spec)
    gates = HardConcreteGates(layout)
    torch.manual_seed(0)
    with torch.no_grad():
        gates.log_alpha.copy_(torch.randn(layout.size) * 2)
    gates.sharpness = 7.0
    budgets = [params_budget(spec, layout, 0.6), macs_budget(spec, layout, 0.3, 16000)]
    shift = shift_onto_targets(budgets, gates)
    values = layout.values(gates.keep_probability(shift).detach().double())
    ratios = [float(b.expected(values)) / b.target for b in budgets]
    assert max(ratios) == pytest.approx(1.0, abs=1e-6)
    assert min(ratios) <= 1.0
    # halfway up the ramp the targets are halfway
    half = shift_onto_targets(budgets, gates, ramp=0.5)
    values = layout.values(gates.keep_probability(half).detach().double())
    half_ratios = [float(b.expected(values)) / (b.dense * (1 - b.sparsity / 2)) for b in budgets]
    assert max(half_ratios) == pytest.approx(1.0, abs=1e-6)
    assert half > shift  # a laxer target keeps more


def test_sharpness_moves_keep_probabilities_towards_the_decision():
    layout = tiny_layout()
    gates = HardConcreteGates(layout)
    with torch.no_grad():
        gates.log_alpha.copy_(torch.linspace(-1, 1, layout.size) + 1e-3)
    soft = gates.keep_probability()
    gates.sharpness = 50.0
    sharp = gates.keep_probability()
    decision = gates.deterministic()
    assert ((sharp - decision).abs() <= (soft - decision).abs() + 1e-12).all()
    assert torch.equal(gates.deterministic(), decision)  # sharpness never changes the decision
    samples = torch.stack([gates.sample(torch.Generator().manual_seed(s)) for s in range(50)]).detach()
    far = gates.log_alpha.detach().abs() > 0.2
    assert torch.equal(samples[:, far], decision[far].expand(50, -1))  # sharp gates sample their decision


def test_hold_on_targets_lands_the_decisions_with_the_fine_gates():
    from speechprune.method.budget import params_budget
    from speechprune.method.decision import decide
    from speechprune.method.gates import COARSE_KINDS
    from speechprune.prune.step import hold_on_targets

    spec = FAMILIES["wav2vec2"].spec_from_config(build_model("wav2vec2").config)
    layout = GateLayout(spec)
    coarse = layout.of_kinds(COARSE_KINDS)
    assert coarse.sum() == 3 * (1 + 4 + 1)  # per layer: the attention block, 4 heads, the FFN block
    adjusted = {False: [], True: []}  # by round_decisions
    for seed in range(5):
        for round_decisions in adjusted:
            gates = HardConcreteGates(layout)
            torch.manual_seed(seed)
            with torch.no_grad():
                gates.log_alpha.copy_(torch.randn(layout.size) * 2)
            gates.sharpness = 30.0  # the end of annealing
            budget = params_budget(spec, layout, 0.6)
            before = gates.log_alpha.detach().clone()
            hold_on_targets([budget], gates, round_decisions)
            moved = gates.log_alpha.detach() - before
            if round_decisions:  # one shift for the coarse gates, another for the fine ones
                for part in (moved[coarse], moved[~coarse]):
                    assert float((part - part[0]).abs().max()) < 1e-5
                decisions = layout.values((gates.log_alpha.detach() > 0).double())
                assert budget.lands(budget.exact(decisions))
            adjusted[round_decisions].append(decide(layout, [budget], gates.log_alpha.detach()).adjusted)
    # a coarse gate parked at the threshold by one common shift makes the decision move many fine
    # gates; with the fine gates' own shift the decisions land as they are
    assert adjusted[True] == [0] * 5
    assert max(adjusted[False]) >= 20
