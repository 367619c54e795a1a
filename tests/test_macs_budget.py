"""The MACs budget: gated MACs against the shrunk model's MACs, expectation against sampled
networks, decisions on two budgets, and the CLI end to end."""

import json
import math

import pytest
import torch

from speechprune.method.accounting import pruned_spec
from speechprune.method.budget import macs_budget, params_budget
from speechprune.method.decision import decide, one_shot_ranking, value_per_cost
from speechprune.method.gates import GATE_KINDS, GateLayout, HardConcreteGates
from speechprune.method.macs import macs, macs_count, pruned_macs
from speechprune.model.encoder import Encoder
from speechprune.model.families import FAMILIES
from speechprune.shrink.slicing import shrink_encoder
from helpers.models import ALL_KINDS, base_spec, build_model, edge_case_values, tiny_spec

SAMPLES = 16000


@pytest.mark.parametrize("family,style", ALL_KINDS)
def test_gated_macs_of_the_dense_model_equal_its_macs(family, style):
    spec = tiny_spec(family, style)
    layout = GateLayout(spec)
    ones = layout.values(torch.ones(layout.size, dtype=torch.float64))
    assert macs_count(spec, ones, SAMPLES).item() == macs(spec, SAMPLES)["total"]
    assert pruned_macs(spec, ones, SAMPLES) == macs(spec, SAMPLES)["total"]


@pytest.mark.parametrize("family,style", ALL_KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_macs_are_the_macs_of_the_shrunk_model(family, style, seed):
    """The budget's exact count equals what `bench` counts for the shrunk model folder."""
    hf = build_model(family, style)
    encoder = Encoder(FAMILIES[family].spec_from_config(hf.config))
    values = edge_case_values(GateLayout(encoder.spec), seed)
    shrunk, _ = shrink_encoder(encoder.spec, encoder.state_dict(), values.layout, values.flat)
    assert pruned_spec(encoder.spec, values).to_dict() == shrunk.to_dict()
    assert pruned_macs(encoder.spec, values, SAMPLES) == macs(shrunk, SAMPLES)["total"]
    # the multilinear count counts each head at its own widths: never above the padded run time
    assert macs_count(encoder.spec, values, SAMPLES).item() <= pruned_macs(encoder.spec, values, SAMPLES)


def test_multilinear_count_equals_exact_count_when_heads_share_a_width():
    spec = tiny_spec("wavlm")
    layout = GateLayout(spec)
    values = layout.values(torch.ones(layout.size, dtype=torch.float64))
    values.get("head", 0)[1:3] = 0  # whole heads and blocks only: no padding at run time
    values.get("mha", 1).zero_()
    values.get("conv", 2)[:5] = 0
    values.get("int", 2)[:40] = 0
    assert macs_count(spec, values, SAMPLES).item() == pruned_macs(spec, values, SAMPLES)


@pytest.mark.parametrize("family,ste", [("wav2vec2", True), ("wavlm", False)])
def test_expected_macs_are_the_mean_macs_of_sampled_networks(family, ste):
    spec = tiny_spec(family, "large")
    layout = GateLayout(spec)
    gates = HardConcreteGates(layout, ste=ste)
    with torch.no_grad():
        gates.log_alpha.copy_(torch.randn(layout.size, generator=torch.Generator().manual_seed(0)) * 1.5)
    expected = macs_count(spec, layout.values(gates.keep_probability().double()), SAMPLES).item()
    generator = torch.Generator().manual_seed(1)
    counts = torch.tensor(
        [macs_count(spec, layout.values((gates.sample(generator) > 0).double()), SAMPLES).item() for _ in range(600)]
    )
    standard_error = counts.std().item() / len(counts) ** 0.5
    assert abs(counts.mean().item() - expected) < 4 * standard_error


def test_one_shot_ranking_is_importance_per_share_of_the_budgets():
    """A gate's cost is what removing it alone saves, as a share of each budget's dense cost."""
    spec = base_spec()
    layout = GateLayout(spec)
    budgets = [params_budget(spec, layout, 0.72), macs_budget(spec, layout, 0.72, 160000)]
    importance = torch.full((layout.size,), 2.0, dtype=torch.float64)
    ranking = value_per_cost(layout, budgets, importance)
    t, d = 499, spec.hidden_size  # frames of 10 s, hidden size
    unit = layout.group("int", 5).offset
    unit_share = (2 * d + 1) / budgets[0].dense + 2 * t * d / budgets[1].dense
    assert ranking[unit].item() == pytest.approx(math.log(2.0 / unit_share))
    # a channel of conv layer 3 (kernel 3, 512 in, 512 out; 3999 frames out of layer 3, 1999 of layer 4)
    channel = layout.group("conv", 3).offset
    params = 512 * 3 + 512 * 3  # its kernel row, and its column in layer 4 (no bias, no norm)
    channel_macs = 3999 * 3 * 512 + 1999 * 3 * 512
    channel_share = params / budgets[0].dense + channel_macs / budgets[1].dense
    assert ranking[channel].item() == pytest.approx(math.log(2.0 / channel_share))
    assert ranking[channel] < ranking[unit]  # a CNN channel is dear in MACs


def test_one_shot_prices_structures_in_the_binding_budget():
    """With both budgets, a MACs-bound decision is ranked by MACs alone: the parameter budget,
    left under its target, does not make FFN units look dear."""
    spec = base_spec()
    layout = GateLayout(spec)
    budgets = [params_budget(spec, layout, 0.5), macs_budget(spec, layout, 0.72, 160000)]
    importance = torch.rand(layout.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    ranking = one_shot_ranking(layout, budgets, importance)
    assert torch.equal(ranking, value_per_cost(layout, budgets[1:], importance))
    decision = decide(layout, budgets, ranking, initial=torch.ones(layout.size, dtype=torch.bool))
    assert decision.within_tolerance and decision.costs["params"] < budgets[0].target


@pytest.mark.parametrize("macs_sparsity", [0.5, 0.72, 0.8])
def test_two_budgets_land_on_the_binding_one_and_stay_under_the_other(macs_sparsity):
    spec = base_spec("wavlm")
    layout = GateLayout(spec, GATE_KINDS)
    budgets = [params_budget(spec, layout, 0.72), macs_budget(spec, layout, macs_sparsity, 160000)]
    scores = torch.randn(layout.size, generator=torch.Generator().manual_seed(0)) + 0.5
    decision = decide(layout, budgets, scores)
    ratios = {b.name: decision.costs[b.name] / b.target for b in budgets}
    assert decision.within_tolerance
    assert all(r <= 1.005 for r in ratios.values())  # at or under every budget
    assert 0.995 <= max(ratios.values())  # on the binding one


def test_unreachable_macs_target_is_refused_before_weights_load(model_dir, audio_dir, tmp_path):
    from speechprune.errors import UsageError
    from speechprune.prune.config import PruneConfig
    from speechprune.prune.job import prune

    config = PruneConfig(model=str(model_dir("wav2vec2")), sparsity=None, macs_sparsity=0.9, data=str(audio_dir),
                         out=str(tmp_path / "run"), structures=["head", "int"], steps=2)
    with pytest.raises(UsageError, match="--macs-sparsity 0.9 is out of reach"):
        prune(config)
    assert not (tmp_path / "run").exists()


def run_cli(*args):
    from test_cli import run_captured

    code, out, err = run_captured(*args)
    return code, out, err


FAST = ["--steps", "4", "--crop-seconds", "1.5", "--batch-seconds", "3", "--device", "cpu"]


@pytest.mark.parametrize("budget", [["--macs-sparsity", "0.6"], ["--sparsity", "0.5", "--macs-sparsity", "0.6"]])
def test_prune_to_a_macs_budget_from_the_command_line(budget, model_dir, audio_dir, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli("prune", str(model_dir("wav2vec2")), *budget, "--data", str(audio_dir),
                                   "--out", str(out), "--json", "--macs-seconds", "2", *FAST)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["within_tolerance"] and summary["macs_seconds"] == 2
    assert abs(summary["macs_sparsity"] - 0.6) <= 0.005 or summary["binding_budget"] == "params"
    assert summary["macs_sparsity"] >= 1 - 0.4 * 1.005 - 1e-6  # at or under the MACs target
    assert summary["macs_dense"] == macs(tiny_spec(), 32000)["total"]
    assert set(summary["budgets"]) == ({"macs"} if len(budget) == 2 else {"params", "macs"})
    from safetensors.torch import load_file

    from speechprune.folders.run import RunFolder

    log_alpha = RunFolder(out).latest_checkpoint().tensors("gates")["log_alpha"]
    keep = load_file(str(out / "masks.safetensors"))["keep"].bool()
    assert summary["decision_adjusted"] == int((keep != (log_alpha > 0)).sum())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "expected_macs_sparsity" in metrics[-1] and "macs_lambda1" in metrics[-1]
    record = json.loads((out / "config.json").read_text())
    assert record["options"]["macs_sparsity"] == 0.6
    code, stdout, stderr = run_cli("analyze", str(out), "--json")  # the run's structure: MACs beside params
    assert code == 0, stderr
    report = json.loads(stdout)["run"]
    assert (report["macs_pruned"], report["params_pruned"]) == (summary["macs_pruned"], summary["params_pruned"])
    assert report["macs_seconds"] == 2 and report["budgets"]["macs"]["sparsity"] == 0.6


def test_no_budget_is_a_usage_error(model_dir, audio_dir):
    from test_cli import assert_clean_error

    model = str(model_dir("wav2vec2"))
    assert_clean_error(run_cli("prune", model, "--data", str(audio_dir)), 2, "--sparsity", "--macs-sparsity")
    assert_clean_error(run_cli("prune", model, "--macs-sparsity", "1.5", "--data", str(audio_dir)), 2,
                       "--macs-sparsity must be between 0 and 1")
    assert_clean_error(run_cli("prune", model, "--macs-sparsity", "0.5", "--macs-seconds", "0", "--data",
                               str(audio_dir)), 2, "--macs-seconds")



@pytest.mark.parametrize("sparsity,macs_sparsity", [(0.72, 0.4), (0.72, 0.72)])
def test_one_shot_with_two_budgets_lands_on_the_binding_one(sparsity, macs_sparsity):
    spec = base_spec()
    layout = GateLayout(spec)
    budgets = [params_budget(spec, layout, sparsity), macs_budget(spec, layout, macs_sparsity, 160000)]
    importance = torch.rand(layout.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    decision = decide(layout, budgets, one_shot_ranking(layout, budgets, importance),
                      initial=torch.ones(layout.size, dtype=torch.bool))
    ratios = [decision.costs[b.name] / b.target for b in budgets]
    assert decision.within_tolerance and max(ratios) >= 0.995 and all(r <= 1.005 for r in ratios)


def test_every_budget_currency_has_its_option_and_config_field():
    import inspect
    from dataclasses import fields

    from speechprune.cli import prune as prune_cli
    from speechprune.cli.output import BUDGET_METRICS
    from speechprune.method.currencies import CURRENCIES
    from speechprune.prune.config import PruneConfig

    options = inspect.signature(prune_cli.command).parameters  # typer names each option after its parameter
    assert all(c.field in options and c.option == "--" + c.field.replace("_", "-") for c in CURRENCIES)
    assert {f.name for f in fields(PruneConfig)} >= {c.field for c in CURRENCIES}
    assert [prefix for _, prefix in BUDGET_METRICS] == [c.metric_prefix for c in CURRENCIES]
    assert len({c.folder_tag for c in CURRENCIES}) == len({c.name for c in CURRENCIES}) == len(CURRENCIES)
