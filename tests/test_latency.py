"""The latency budget: cost tables (format, measurement through the CLI), predicted latency of
shrunk specs against its closed form in the gates, pruning to a predicted speedup, and the
checks of tables against models and bench settings. No timing is asserted."""

import json
import math

import numpy as np
import pytest
import torch

from speechprune.bench.fitting import nnls
from speechprune.method.accounting import pruned_spec
from speechprune.method.gates import GateLayout, HardConcreteGates
from speechprune.method.latency import CostTable, expected_ms, latency_budget, predict_ms
from helpers.commands import assert_clean_error, run_captured
from helpers.data import synthetic_table, write_scores, write_table
from helpers.models import ALL_KINDS, edge_case_values, tiny_spec

FAST = ["--steps", "4", "--crop-seconds", "1.5", "--batch-seconds", "3", "--device", "cpu"]
QUICK_TIMING = ["--warmup", "0", "--repeat", "1", "--min-time", "0", "--threads", "1"]
STEADY_TIMING = ["--warmup", "1", "--repeat", "3", "--min-time", "0", "--threads", "1"]  # width factors: no outlier


def test_a_table_round_trips_through_json(tmp_path):
    table = synthetic_table(tiny_spec("wavlm", "large"))
    table.write(tmp_path / "t.json")
    again = CostTable.read(str(tmp_path / "t.json"))
    assert again == table and again.sha256 == table.sha256
    assert again.samples == 16000
    with pytest.raises(ValueError, match="format"):
        CostTable.from_dict({**table.to_dict(), "format": 99})


def test_nnls_meets_the_optimality_conditions():
    """x >= 0; the gradient A^T (b - A x) is 0 where x > 0 and <= 0 where x = 0 (Karush-Kuhn-Tucker)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=(12, 7)), rng.normal(size=12)
        a[:, 3] = a[:, 2]  # collinear columns, as conv layer 0's features are
        x = nnls(a, b)
        gradient = a.T @ (b - a @ x)
        assert (x >= 0).all()
        assert np.abs(gradient[x > 0]).max(initial=0) < 1e-8
        assert gradient[x == 0].max(initial=0) < 1e-8


@pytest.mark.parametrize("family,style", ALL_KINDS)
def test_expected_latency_on_decisions_is_the_predicted_latency_of_the_shrunk_spec(family, style):
    spec = tiny_spec(family, style)
    table = synthetic_table(spec)
    layout = GateLayout(spec)
    ones = layout.values(torch.ones(layout.size, dtype=torch.float64))
    assert expected_ms(table, spec, ones).item() == pytest.approx(predict_ms(table, spec), rel=1e-12)
    values = layout.values(torch.ones(layout.size, dtype=torch.float64))  # whole structures: heads share a width
    values.get("head", 0)[1:3] = 0
    values.get("mha", 1).zero_()
    values.get("ffn", 2).zero_()
    values.get("conv", 2)[:5] = 0
    values.get("int", 0)[:40] = 0
    shrunk = predict_ms(table, pruned_spec(spec, values))
    assert expected_ms(table, spec, values).item() == pytest.approx(shrunk, rel=1e-12)
    assert shrunk < predict_ms(table, spec)
    for seed in (0, 1):  # heads of other widths: the closed form counts each at its own, never above
        values = edge_case_values(layout, seed)
        assert expected_ms(table, spec, values).item() <= predict_ms(table, pruned_spec(spec, values)) * (1 + 1e-12)


@pytest.mark.parametrize("family,ste", [("wav2vec2", True), ("wavlm", False)])
def test_expected_latency_is_the_mean_latency_of_sampled_networks(family, ste):
    spec = tiny_spec(family, "large")
    table = synthetic_table(spec)
    layout = GateLayout(spec)
    gates = HardConcreteGates(layout, ste=ste)
    with torch.no_grad():
        gates.log_alpha.copy_(torch.randn(layout.size, generator=torch.Generator().manual_seed(0)) * 1.5)
    expected = expected_ms(table, spec, layout.values(gates.keep_probability().double())).item()
    generator = torch.Generator().manual_seed(1)
    costs = torch.tensor(
        [expected_ms(table, spec, layout.values((gates.sample(generator) > 0).double())).item() for _ in range(600)]
    )
    assert abs(costs.mean().item() - expected) < 4 * costs.std().item() / len(costs) ** 0.5


def test_latency_budget_targets_a_speedup():
    spec = tiny_spec()
    table = synthetic_table(spec)
    budget = latency_budget(table, spec, GateLayout(spec), 3.0)
    assert budget.name == "latency" and budget.currency.unit == "ms" and budget.currency.option == "--speedup"
    assert budget.dense == predict_ms(table, spec)
    assert budget.target == pytest.approx(budget.dense / 3) and budget.setting == 3.0


def test_cost_model_from_the_command_line_writes_a_table(model_dir, tmp_path):
    model, path = str(model_dir("wavlm")), tmp_path / "table.json"
    code, out, err = run_captured("bench", model, "--cost-model", path, "--seconds", "0.5", "--block-step", "8",
                                  *STEADY_TIMING, "--json")
    assert code == 0, err
    assert json.loads(out)["cost_table"] == str(path)
    data = json.loads(path.read_text())
    assert data["format"] == 3
    widths = data["widths"]  # the width steps: at the block step given, each sweep ending at the dense width
    assert widths["block"] == 8 and widths["block_from"] == "--block-step" and widths["seconds"] >= 0
    assert data["provenance"]["seconds"] >= widths["seconds"]
    steps = widths["steps"]
    assert steps["conv.1.outputs"]["widths"] == [8, 16, 24] and steps["conv.1.outputs"]["factor"][-1] == 1.0
    assert {"conv.0.outputs", "conv.6.inputs", "projection.channels", "ffn.units", "attention.heads.1",
            "attention.heads.4"} <= set(steps) and "conv.0.inputs" not in steps
    assert steps["ffn.units"]["widths"][-1] == 96 and all(w % 8 == 0 for w in steps["ffn.units"]["widths"])
    assert data["conditions"] | {"device_name": None} == {"device": "cpu", "device_name": None, "threads": 1,
                                                         "dtype": "float32", "batch": 1, "seconds": 0.5,
                                                         "runtime": "torch", "quantize": None}
    assert data["reference"]["model"] == "stock WavLMModel, float32, eager torch"
    assert data["architecture"]["family"] == "wavlm" and data["architecture"]["hidden_size"] == 48
    assert {"speechprune", "torch", "date", "model"} <= set(data["provenance"])
    passes = data["provenance"]["passes"]  # the fit's shapes timed twice; the dense parts' two timings recorded
    assert len(passes["parts"]) == 7 + 1 + 3 and all(part["second_ms"] > 0 for part in passes["parts"])
    assert passes["largest_change"] in [part["change"] for part in passes["parts"]]
    assert passes["shapes"] >= len(data["fit"]["layer"]) + 7 * 3
    assert set(data["fit"]) == {f"conv.{c}" for c in range(7)} | {"projection", "layer", "encoder"}
    assert len(data["fit"]["layer"]) >= 10 and len(data["fit"]["encoder"]) == 3
    # every sweep is relative to its widest width, timed in its rounds
    assert all(sweep["factor"][-1] == 1.0 and min(sweep["measured_ms"]) > 0 for sweep in steps.values())
    coefficients = data["coefficients"]
    assert len(coefficients["conv"]) == 7 and coefficients["scale"] >= 0 and coefficients["overhead"] >= 0
    table = CostTable.read(str(path))
    spec = tiny_spec("wavlm")
    assert math.isfinite(predict_ms(table, spec)) and predict_ms(table, spec) > 0


class _SlowingClock:
    """A clock that advances ``per_read`` seconds each time it is read: every timed call takes
    exactly that long, until the test slows the machine down."""

    def __init__(self):
        self.now, self.per_read = 0.0, 1e-3

    def __call__(self) -> float:
        self.now += self.per_read
        return self.now


def test_a_table_times_every_shape_twice_and_keeps_the_faster_timing(model_dir, tmp_path, monkeypatch):
    from speechprune.bench import cost_model
    from speechprune.bench.job import BenchOptions
    from speechprune.io.progress import Reporter

    warnings = []

    class Warnings(Reporter):
        def warning(self, text):
            warnings.append(text)

    def measure(change: float) -> dict:
        """The table measured with every call 1 ms long, then ``change`` times that from the second pass on."""
        clock, second_pass = _SlowingClock(), cost_model._Timer.second_pass

        def changed(timer, reporter):
            clock.per_read *= change
            return second_pass(timer, reporter)

        monkeypatch.setattr(cost_model._Timer, "second_pass", changed)
        options = BenchOptions(models=[str(model_dir("wav2vec2"))], seconds=[0.5], threads=1, warmup=0, repeat=2,
                               min_time=0.0)
        cost_model.measure_cost_table(options, str(tmp_path / f"table-{change}.json"), Warnings(), clock=clock, block=8)
        return json.loads((tmp_path / f"table-{change}.json").read_text())

    def part_times(table: dict) -> set[float]:
        return {round(row["measured_ms"], 6) for name, rows in table["fit"].items() if name != "encoder" for row in rows}

    def parts_only(table: dict) -> dict:
        return {name: value for name, value in table["coefficients"].items() if name not in ("scale", "overhead")}

    steady = measure(1.0)
    passes = steady["provenance"]["passes"]
    shapes = [part["shape"] for part in passes["parts"]]  # every conv layer, the projection, three dense layers
    assert shapes[:2] == ["conv 0: 1 -> 24 channels", "conv 1: 24 -> 24 channels"] and len(shapes) == 7 + 1 + 3
    assert "projection: 24 channels" in shapes and "layer: no attention, FFN 96" in shapes
    assert passes["largest_change"] == passes["median_change"] == passes["encoder_parts_change"] == 0 and warnings == []
    whole = [part["share"] for part in passes["parts"] if not ("no attention" in part["shape"] or "FFN none" in part["shape"])]
    assert abs(sum(whole) - 1) < 1e-3  # shares of the dense encoder's parts: its conv layers, projection and layers

    slowed = measure(2.0)  # the machine at half speed in the second pass: the first timings stand, and a warning
    assert [part["change"] for part in slowed["provenance"]["passes"]["parts"]] == [1.0] * len(shapes)
    assert part_times(slowed) == {1.0} and parts_only(slowed) == parts_only(steady)  # the encoders ran at 2 ms
    assert slowed["provenance"]["passes"]["encoder_parts_change"] == 1.0
    assert len(warnings) == 1 and "(+100%;" in warnings[0] and "measure again on an idle machine" in warnings[0]

    faster = measure(0.5)  # slow in the first pass: the second pass's timings replace every one
    assert part_times(faster) == {0.5} and faster["provenance"]["passes"]["median_change"] == -0.5
    assert faster["widths"]["steps"] == steady["widths"]["steps"]  # the sweeps, timed before, are the steady ones


class _Machine:
    """A fake clock, and a machine whose speed changes every ``per_round`` calls: a call of a
    ``_Costly`` part advances the clock by its cost, three times that in every other stretch."""

    def __init__(self, per_round: int):
        self.now, self.calls, self.per_round = 0.0, 0, per_round

    def __call__(self) -> float:
        return self.now

    def run(self, cost: float) -> None:
        self.now += cost * (3.0 if self.calls // self.per_round % 2 else 1.0)
        self.calls += 1


class _Costly(torch.nn.Module):
    def __init__(self, machine: _Machine, cost: float):
        super().__init__()
        self.machine, self.cost = machine, cost

    def forward(self, x):
        self.machine.run(self.cost)
        return x


def test_a_sweeps_widths_are_compared_in_the_same_rounds(tmp_path):
    """The machine triples its time on every other round of a sweep; the widths' times relative
    to the widest, and so the step factors, are what the parts cost, as on a steady machine."""
    from speechprune.bench.cost_model import _Sweep, _Timer
    from speechprune.bench.job import BenchOptions

    costs = [1e-3, 3e-3, 2e-3, 4e-3]
    machine = _Machine(per_round=2 * len(costs))  # a round: an untimed and a timed call of each part
    options = BenchOptions(models=[str(tmp_path)], seconds=[0.5], threads=1, warmup=0, repeat=4, min_time=0.02)
    timer = _Timer(options, torch.device("cpu"), torch.float32, machine, 1, 16000)
    measured, relative = timer.sweep([(_Costly(machine, cost), (torch.zeros(1),)) for cost in costs])
    assert machine.calls == 4 * 2 * len(costs)  # the widest had 32 ms timed in 4 rounds; the 1 ms width, 8 ms
    assert relative == pytest.approx([cost / costs[-1] for cost in costs], rel=1e-9)
    assert measured == pytest.approx([cost * 2e3 for cost in costs], rel=1e-9)  # the median of 1x and 3x rounds

    # a factor: the width's time relative to the widest over the smooth fit's relation, clipped
    smooth = {"a": 1.0, "b": 2.0, "c": 4.0, "d": 4.0}
    sweep = _Sweep(("ffn",), [8, 16, 24, 32], list(smooth), measured, relative)
    steps = sweep.steps({"ms": 1.0}, lambda shape, unit: {"ms": smooth[shape]})
    assert steps["factor"] == pytest.approx([0.25 * 4 / 1, 0.75 * 4 / 2, 0.5, 1.0])
    wild = _Sweep(("ffn",), [8, 16], ["a", "d"], [1.0, 1.0], [9.0, 1.0]).steps({"ms": 1.0}, lambda s, u: {"ms": smooth[s]})
    assert wild["factor"] == [4.0, 1.0]  # 36x the fit's relation: a disturbed timing, not a kernel's step


@pytest.mark.parametrize("args,words", [
    (["--seconds", "1,2"], ["--cost-model", "one --seconds"]),
    (["--batch", "1,2"], ["one --batch"]),
    (["--compile"], ["--compile"]),
    (["--block-step", "0"], ["--block-step", "at least 1"]),
])
def test_cost_model_options_are_checked_first(model_dir, tmp_path, args, words):
    result = run_captured("bench", model_dir("wav2vec2"), "--cost-model", tmp_path / "t.json", *args)
    assert_clean_error(result, 2, *words)
    assert not (tmp_path / "t.json").exists()


def test_bench_predicts_beside_measuring_and_refuses_other_conditions(model_dir, tmp_path):
    model = str(model_dir("wav2vec2"))
    table = write_table(tmp_path / "t.json", tiny_spec())
    code, out, err = run_captured("bench", model, "--latency-table", table, "--seconds", "1", *QUICK_TIMING, "--json")
    assert code == 0, err
    row = json.loads(out)["results"][0]
    assert row["predicted_ms"] == pytest.approx(predict_ms(CostTable.read(str(table)), tiny_spec()))
    assert row["prediction_error"] == pytest.approx(row["predicted_ms"] / row["latency_ms"]["median"] - 1)
    for args, words in ((["--seconds", "2", "--threads", "1"], ["seconds 1.0", "2.0"]),
                        (["--seconds", "1", "--threads", "2"], ["threads 1", "2"])):
        assert_clean_error(run_captured("bench", model, "--latency-table", table, *args), 2, "--latency-table", *words)
    other = write_table(tmp_path / "other.json", tiny_spec("hubert"))
    assert_clean_error(run_captured("bench", model, "--latency-table", other, "--seconds", "1", "--threads", "1"), 2,
                       "family hubert")


def prune_cli(model, audio_dir, out, *args):
    return run_captured("prune", model, "--data", audio_dir, "--out", out, "--json", *FAST, *args)


def test_prune_to_a_predicted_speedup(model_dir, audio_dir, tmp_path):
    model, out = str(model_dir("wav2vec2")), tmp_path / "run"
    table = write_table(tmp_path / "t.json", tiny_spec())
    code, stdout, stderr = prune_cli(model, audio_dir, out, "--latency-table", table, "--speedup", "1.5")
    assert code == 0, stderr
    summary = json.loads(stdout)
    latency = summary["budgets"]["latency"]
    assert latency["fits"] and summary["within_tolerance"] and latency["option_value"] == 1.5
    assert summary["predicted_speedup"] == pytest.approx(1.5, rel=0.006)
    assert summary["predicted_ms_dense"] == pytest.approx(predict_ms(CostTable.read(str(table)), tiny_spec()), abs=1e-3)
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "expected_latency_sparsity" in metrics and "latency_lambda1" in metrics
    record = json.loads((out / "config.json").read_text())
    assert record["budgets"]["latency"]["table_sha256"] == CostTable.read(str(table)).sha256

    # the workflow's end: shrink, then bench predicts the shrunk model as prune did
    small = tmp_path / "small"
    code, _, stderr = run_captured("shrink", out, "--out", small, "--quiet")
    assert code == 0, stderr
    assert "- Budgets: predicted speedup 1.5x (--speedup)" in (small / "README.md").read_text()
    code, stdout, stderr = run_captured("bench", small, "--latency-table", table, "--seconds", "1", *QUICK_TIMING,
                                        "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["results"][0]["predicted_ms"] == pytest.approx(summary["predicted_ms_pruned"], abs=1e-3)

    changed = synthetic_table(tiny_spec())
    changed.coefficients["overhead"] = 0.5
    changed.write(table)
    result = prune_cli(model, audio_dir, out, "--latency-table", table, "--speedup", "1.5", "--resume")
    assert_clean_error(result, 1, "refusing to resume", "latency")


def test_one_shot_to_a_predicted_speedup_with_a_parameter_budget(model_dir, audio_dir, tmp_path):
    model = model_dir("wav2vec2")
    table = write_table(tmp_path / "t.json", tiny_spec())
    write_scores(tmp_path / "scores.json", model)
    code, stdout, stderr = prune_cli(str(model), audio_dir, tmp_path / "run", "--latency-table", table, "--speedup",
                                     "1.5", "--sparsity", "0.3", "--steps", "0", "--scores", tmp_path / "scores.json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert set(summary["budgets"]) == {"params", "latency"} and summary["within_tolerance"]
    assert summary["predicted_speedup"] >= 1.5 / 1.005 - 1e-6  # at or under the latency target


def test_latency_options_are_refused_before_weights_load(model_dir, audio_dir, tmp_path, monkeypatch):
    import speechprune.prune.job as core

    def refuse(*_):
        raise AssertionError("weights were loaded before the options were checked")

    monkeypatch.setattr(core, "load_encoder", refuse)
    model, out = str(model_dir("wav2vec2")), tmp_path / "run"
    table = write_table(tmp_path / "t.json", tiny_spec())
    wide = write_table(tmp_path / "wide.json", tiny_spec())
    data = json.loads(wide.read_text())
    data["architecture"]["hidden_size"] = 64
    wide.write_text(json.dumps(data))
    (tmp_path / "broken.json").write_text("{")
    cases = [
        (["--latency-table", write_table(tmp_path / "hubert.json", tiny_spec("hubert")), "--speedup", "2"],
         ["family hubert"]),
        (["--latency-table", wide, "--speedup", "2"], ["hidden_size 64", "48"]),
        (["--latency-table", tmp_path / "broken.json", "--speedup", "2"], ["cannot read --latency-table"]),
        (["--latency-table", table, "--speedup", "0.5"], ["--speedup must be", "above 1"]),
        (["--latency-table", table, "--speedup", "inf"], ["--speedup must be"]),
        (["--speedup", "2"], ["--speedup and --latency-table go together"]),
        (["--latency-table", table, "--sparsity", "0.5"], ["--speedup and --latency-table go together"]),
        (["--latency-table", table, "--speedup", "50"], ["--speedup 50 is out of reach"]),
    ]
    for args, words in cases:
        assert_clean_error(prune_cli(model, audio_dir, out, *args), 2, *words)
    assert not out.exists()
    assert_clean_error(run_captured("prune", model, "--data", audio_dir), 2, "--speedup")
