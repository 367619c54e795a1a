"""Widths the hardware runs fast: cost tables with width steps (format 2, and format 1 still
read), and the decision's widths rounded by ``prune --round-to`` (multiples of N, or the widths
a table prices fast), with the budgets landed again and shrinking still exact. No timing."""

import json

import pytest
import torch

from speechprune.method.accounting import pruned_spec
from speechprune.method.budget import params_budget
from speechprune.method.decision import decide
from speechprune.method.gates import GateLayout
from speechprune.method.latency import CostTable, predict_ms
from speechprune.method.latency_steps import Steps
from speechprune.method.widths import round_widths, width_rule
from helpers.commands import assert_clean_error, run_captured
from helpers.data import synthetic_table, with_steps, write_scores
from helpers.models import tiny_spec
from test_shrink import assert_same_outputs, dense_encoder, shrunk_pair

ONE_SHOT = ["--steps", "0", "--crop-seconds", "1.5", "--batch-seconds", "3", "--device", "cpu", "--json"]
FFN_SLOW_BAND = {w: (3.0 if w in (48, 56) else 1.0) for w in range(8, 97, 8)}  # units 41-56 cost 3x


def widths_of(spec):
    """Every width a decision sets, with its dense maximum: (width, maximum)."""
    widths = [(c, 24) for c in spec.conv_channels]
    for layer in spec.layers:
        widths += [(layer.ffn_dim, 96)] if layer.ffn else []
        qk, vo = layer.head_widths()
        widths += [(w, 12) for w in qk + vo if w]
    return widths


def test_a_table_with_steps_round_trips_and_reads_its_factors(tmp_path):
    spec = tiny_spec()
    table = with_steps(synthetic_table(spec), {"ffn.units": {16: 1.5, 32: 1.0, 96: 1.0}}, block=16)
    table.write(tmp_path / "t.json")
    again = CostTable.read(str(tmp_path / "t.json"))
    assert again == table and again.format == 2 and again.steps.block == 16
    assert json.loads((tmp_path / "t.json").read_text())["widths"]["block_from"] == "--block-step"
    steps = again.steps
    assert steps.factor("ffn.units", 9) == steps.factor("ffn.units", 16) == 1.5  # a started block costs whole
    assert steps.factor("ffn.units", 17) == 1.0
    assert steps.factor("ffn.units", 64) == 1.0 and steps.factor("ffn.units", 200) == 1.0
    assert Steps(8, {"x": ([8, 24], [2.0, 1.0])}).factor("x", 16) == pytest.approx(1.5)  # between points: interpolated
    assert steps.factor("conv.0.outputs", 5) == 1.0  # not measured: the smooth fit
    slow = pruned_spec(spec, _ffn_kept(GateLayout(spec), 12))
    assert predict_ms(again, slow) > predict_ms(synthetic_table(spec), slow)  # the step is priced
    assert predict_ms(again, spec) == pytest.approx(predict_ms(synthetic_table(spec), spec))  # dense: factor 1


def test_a_format_1_table_still_loads_and_hashes_as_before(tmp_path):
    table = synthetic_table(tiny_spec())
    table.write(tmp_path / "old.json")
    data = json.loads((tmp_path / "old.json").read_text())
    assert data["format"] == 1 and "widths" not in data
    again = CostTable.read(str(tmp_path / "old.json"))
    assert again.steps is None and again.sha256 == table.sha256
    assert width_rule(None, again, speedup=2.0) is None  # no steps: the widths stay where the decision put them


def test_a_damaged_width_step_is_refused_naming_its_field(tmp_path):
    data = with_steps(synthetic_table(tiny_spec()), {"ffn.units": {8: 1.0, 16: 1.0}}).to_dict()
    data["widths"]["steps"]["ffn.units"]["factor"][1] = 0
    with pytest.raises(ValueError, match=r"widths.steps.ffn.units.factor\[1\]"):
        CostTable.from_dict(data)
    del data["widths"]
    with pytest.raises(ValueError, match="no widths"):
        CostTable.from_dict(data)


def test_round_to_8_puts_every_width_on_a_multiple_and_shrink_stays_exact():
    encoder = dense_encoder("wav2vec2", "base")
    spec, layout = encoder.spec, GateLayout(encoder.spec)
    scores = torch.randn(layout.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    budgets = [params_budget(spec, layout, 0.4, tolerance=0.03)]
    decision = decide(layout, budgets, scores)
    assert any(w % 8 for w, top in widths_of(pruned_spec(spec, layout.values(decision.keep.double()))) if w != top)
    rounded, moved = round_widths(spec, layout, budgets, scores, decision, width_rule("8", None))
    assert rounded.within_tolerance and moved > 0
    values = layout.values(rounded.keep.double())
    assert all(w % 8 == 0 or w == top for w, top in widths_of(pruned_spec(spec, values)))
    for group in layout.groups:  # rounding up takes the gates ranked next, rounding down drops the lowest
        if group.kind in ("conv", "int"):
            span = slice(group.offset, group.offset + group.size)
            before, after, ranked = decision.keep[span], rounded.keep[span], scores[span]
            added, dropped, left_out = after & ~before, before & ~after, ~after
            assert not (added.any() and dropped.any())
            if added.any() and left_out.any():
                assert ranked[added].min() >= ranked[left_out].max()
            if dropped.any():
                assert ranked[dropped].max() <= ranked[after].min()
    assert_same_outputs(encoder, shrunk_pair(encoder, values), values.masks())


def _ffn_kept(layout, units: int):
    """Gate values that keep everything but the FFN units past ``units`` in every layer."""
    values = layout.values(torch.ones(layout.size, dtype=torch.float64))
    for l in range(layout.num_layers):
        values.get("int", l)[units:] = 0
    return values


def test_auto_steps_over_a_slow_band_and_the_budget_still_lands():
    spec = tiny_spec()
    layout = GateLayout(spec)
    table = with_steps(synthetic_table(spec), {"ffn.units": FFN_SLOW_BAND})
    scores = torch.ones(layout.size, dtype=torch.float64)
    for l in range(layout.num_layers):  # units ranked 95 ... 0: the decision keeps the first 50
        group = layout.group("int", l)
        scores[group.offset:group.offset + group.size] = 49.5 - torch.arange(96, dtype=torch.float64)
    kept = layout.values((scores > 0).double())
    sparsity = 1 - params_budget(spec, layout, 0.5).exact(kept) / params_budget(spec, layout, 0.5).dense
    budgets = [params_budget(spec, layout, sparsity, tolerance=0.03)]
    decision = decide(layout, budgets, scores)
    assert [layer.ffn_dim for layer in pruned_spec(spec, kept).layers] == [50, 50, 50]  # inside the band

    def ffn_widths(rule):
        rounded, _ = round_widths(spec, layout, budgets, scores, decision, rule)
        assert rounded.within_tolerance
        return [layer.ffn_dim for layer in pruned_spec(spec, layout.values(rounded.keep.double())).layers]

    assert any(41 <= w <= 56 for w in ffn_widths(width_rule("8", None)))  # plain multiples land in the band
    auto = ffn_widths(width_rule("auto", table))
    assert not any(41 <= w <= 56 for w in auto) and all(w % 8 == 0 for w in auto)


def prune_cli(model, audio_dir, out, *args):
    return run_captured("prune", model, "--data", audio_dir, "--out", out, *ONE_SHOT, *args)


def test_round_to_on_the_command_line_is_recorded(model_dir, audio_dir, tmp_path):
    model = model_dir("wav2vec2")
    write_scores(tmp_path / "scores.json", model)
    code, stdout, stderr = prune_cli(model, audio_dir, tmp_path / "eight", "--sparsity", "0.4", "--tolerance", "0.03",
                                     "--scores", tmp_path / "scores.json", "--round-to", "8")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["round_to"] == "8" and summary["within_tolerance"] and summary["rounded_widths"] > 0
    kept = summary["kept"]
    assert all(c % 8 == 0 for c in kept["conv_channels"])
    assert all(layer["ffn_units"] % 8 == 0 for layer in kept["layers"] if layer["ffn"])
    assert json.loads((tmp_path / "eight" / "config.json").read_text())["options"]["round_to"] == "8"

    table = tmp_path / "steps.json"  # a table with width steps guides the widths, with or without --speedup
    with_steps(synthetic_table(tiny_spec()), {"ffn.units": FFN_SLOW_BAND}).write(table)
    code, stdout, stderr = prune_cli(model, audio_dir, tmp_path / "auto", "--sparsity", "0.4", "--latency-table", table,
                                     "--tolerance", "0.03", "--scores", tmp_path / "scores.json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["round_to"] == "auto" and summary["within_tolerance"]
    assert not any(41 <= layer["ffn_units"] <= 56 for layer in summary["kept"]["layers"] if layer["ffn"])


def test_bad_round_to_values_are_refused_before_weights_load(model_dir, audio_dir, tmp_path, monkeypatch):
    import speechprune.prune.job as job

    def refuse(*_):
        raise AssertionError("weights were loaded before the options were checked")

    monkeypatch.setattr(job, "load_encoder", refuse)
    model, out = model_dir("wav2vec2"), tmp_path / "run"
    write_scores(tmp_path / "scores.json", model)
    old = tmp_path / "old.json"
    synthetic_table(tiny_spec()).write(old)
    budget = ["--sparsity", "0.4", "--scores", tmp_path / "scores.json"]
    for value in ("eight", "0", "-8", "8.5", ""):
        assert_clean_error(prune_cli(model, audio_dir, out, *budget, "--round-to", value), 2, "--round-to", "whole number")
    assert_clean_error(prune_cli(model, audio_dir, out, *budget, "--round-to", "auto"), 2, "--round-to auto",
                       "--latency-table")
    assert_clean_error(prune_cli(model, audio_dir, out, "--speedup", "1.5", "--latency-table", old, "--round-to", "auto",
                                 "--scores", tmp_path / "scores.json"), 2, "width steps", "format 1")
    steps = tmp_path / "steps.json"
    with_steps(synthetic_table(tiny_spec()), {"ffn.units": FFN_SLOW_BAND}).write(steps)
    assert_clean_error(prune_cli(model, audio_dir, out, *budget, "--latency-table", steps, "--round-to", "8"), 2,
                       "--latency-table without --speedup", "--round-to auto")
    assert not out.exists()
