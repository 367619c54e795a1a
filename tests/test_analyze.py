"""`speechprune analyze`: head statistics on tiny models with planted heads, the JSON schema,
run reports against summary.json, teacher comparison, and clean errors."""

import json

import pytest
import torch

from speechprune.analyze.heads import attention_probabilities
from speechprune.analyze.job import AnalyzeOptions, analyze
from speechprune.analyze.report import AnalyzeReport
from speechprune.errors import FormatError
from speechprune.method.gates import GateLayout, gate_flat
from speechprune.model.encoder import Encoder
from speechprune.model.families import family_by_name
from speechprune.model.loading import inspect_model, quiet_transformers
from helpers.commands import RUN_STEPS, cli
from helpers.models import build_model

HEAD_DIM = 12  # tiny_config: hidden 48, 4 heads
FAST = dict(max_seconds=6.0, crop_seconds=2.0, batch_seconds=6.0, projections=2)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """WavLM Base-style tiny model: head 1 of layer 2 writes nothing (out_proj columns zero);
    head 2 attends only to its own frame in every layer (WavLM's relative position bias, shared
    by all layers, is +1000 at distance 0 for that head)."""
    model = build_model("wavlm", "base", seed=1)
    with torch.no_grad():
        dead = model.encoder.layers[1].attention
        dead.out_proj.weight[:, HEAD_DIM: 2 * HEAD_DIM] = 0
        model.encoder.layers[0].attention.rel_attn_embed.weight[0, 2] = 1000.0
    folder = tmp_path_factory.mktemp("planted")
    with quiet_transformers():
        model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def planted_report(planted, audio_dir):
    return analyze(AnalyzeOptions(model=str(planted), data=str(audio_dir), **FAST))


def test_a_head_that_writes_nothing_scores_zero(planted_report):
    heads = planted_report["heads"]
    assert heads["drop_one"][1][1] < 1e-6 and heads["contribution_norm"][1][1] < 1e-6
    assert heads["grad_importance"][1][1] < 1e-12
    others = [v for l, row in enumerate(heads["drop_one"]) for h, v in enumerate(row) if (l, h) != (1, 1)]
    assert min(others) > 1e-4
    # drop-one at later layers: the dead head changes nothing anywhere
    assert max(heads["drop_one_by_layer"][1][1]) < 1e-6


def test_a_head_that_attends_to_itself_is_the_most_local(planted_report):
    distance, entropy = planted_report["heads"]["mean_distance"], planted_report["heads"]["entropy"]
    for l in range(3):
        assert distance[l][2] < 1e-3 and entropy[l][2] < 1e-3
        assert min(distance[l][h] for h in (0, 1, 3)) > 1.0


def test_gradient_importance_is_first_order_drop_one(planted_report):
    # (d h / d z)^2 / ||h||^2 estimates ||h' - h||^2 / ||h||^2: the same order as drop-one squared
    heads = planted_report["heads"]
    for l, row in enumerate(heads["grad_importance"]):
        for h, g in enumerate(row):
            if (l, h) != (1, 1):
                assert 0.02 < g / heads["drop_one"][l][h] ** 2 < 50


@pytest.mark.parametrize("family,style", [("wav2vec2", "large"), ("wavlm", "base")])
def test_recomputed_attention_matches_the_encoder(family, style):
    info_model = build_model(family, style)
    encoder = Encoder(family_by_name(family).spec_from_config(info_model.config)).eval()
    encoder.load_state_dict(family_by_name(family).to_encoder_keys(info_model.state_dict()))
    attention = encoder.encoder.layers[0].attention
    x = torch.randn(2, 30, 48)
    key_mask = torch.ones(2, 1, 1, 30, dtype=torch.bool)
    key_mask[1, ..., 20:] = False
    bias = encoder.encoder.rel_pos(30) if encoder.encoder.rel_pos is not None else None
    _, per_head = attention_probabilities(attention, x, key_mask, bias, None)
    o = per_head.transpose(1, 2).reshape(2, 30, -1)
    expected = attention(x, key_mask, bias, None)
    assert torch.allclose(attention.out_proj(o), expected, atol=1e-5)


def test_statistics_are_reproducible_with_a_seed(model_dir, audio_dir):
    options = dict(model=str(model_dir("wavlm", "base")), data=str(audio_dir), drop_one=False, **FAST)
    first, again = analyze(AnalyzeOptions(**options)), analyze(AnalyzeOptions(**options))
    other = analyze(AnalyzeOptions(**{**options, "seed": 1}))
    assert first["gate_scores"] == again["gate_scores"] and first["heads"] == again["heads"]
    assert first["gate_scores"] != other["gate_scores"]


def test_json_schema_and_gate_scores_fit_the_dense_layout(planted, audio_dir, tmp_path, capsys):
    out = tmp_path / "heads.json"
    code, stdout, err = cli(capsys, "analyze", planted, "--data", audio_dir, "--max-seconds", 4, "--crop-seconds", 2,
                            "--projections", 1, "--no-drop-one", "--out", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report == json.loads(out.read_text())
    assert report["audio"]["seconds"] <= 4 and report["kind"] == "stock" and report["format"] == 1
    assert "drop_one" not in report["heads"]
    for key in ("grad_importance", "entropy", "mean_distance", "contribution_norm", "contribution_ratio"):
        assert [len(row) for row in report["heads"][key]] == [4, 4, 4]
    layout = GateLayout(inspect_model(str(planted)).spec)
    scores = gate_flat(layout, report["gate_scores"])  # what `prune --scores` reads
    assert scores.shape == (layout.size,) and torch.isfinite(scores).all() and (scores >= 0).all()
    assert set(report["gate_scores"]) == {"conv", "mha", "head", "qk", "vo", "ffn", "int"}
    assert report["method"]["passes"] == {"forward_with_grad": 1, "backward": 1, "drop_one_partial_forwards": 0,
                                          "drop_one_layer_calls": 0}
    assert "batch 1/1" in err


def test_plain_text_when_piped(planted, audio_dir, capsys):
    code, stdout, _ = cli(capsys, "analyze", planted, "--data", audio_dir, "--max-seconds", 2, "--crop-seconds", 2,
                          "--projections", 1)
    assert code == 0
    assert "mean attention distance (frames)" in stdout and "\nL3 " in stdout and "\x1b[" not in stdout


@pytest.fixture
def run_and_shrunk(finished_run, shrunk_run):
    """The shared finished run of the tiny wav2vec2, its shrunk model folder, and its summary.json."""
    run = finished_run("wav2vec2", "base")
    return run, shrunk_run("wav2vec2", "base"), json.loads((run / "summary.json").read_text())


def test_run_report_matches_the_summary(run_and_shrunk, capsys):
    run, _, summary = run_and_shrunk
    code, stdout, err = cli(capsys, "analyze", run, "--json")
    assert code == 0, err
    report = json.loads(stdout)["run"]
    assert report["kept"] == summary["kept"]
    assert report["params_by_component"] == summary["params_by_component"]
    assert report["params_pruned"] == summary["params_pruned"] and report["params_dense"] == summary["params_dense"]
    assert sum(l["pruned"] for l in report["params_by_layer"]) == sum(
        summary["params_by_component"]["pruned"][k] for k in ("attention", "ffn"))
    probabilities = report["keep_probability"]
    assert len(probabilities["head"]) == 3 and all(0 <= p <= 1 for row in probabilities["head"] for p in row)
    removed = {(b["layer"], b["block"]) for b in report["removed_blocks"]}
    assert removed == {(l, block) for l, layer in enumerate(summary["kept"]["layers"]) for block in ("attention", "ffn")
                       if not layer[block]}
    code, stdout, _ = cli(capsys, "analyze", run)
    assert "parameters per layer" in stdout


def test_the_report_is_typed_and_versioned(planted_report, run_and_shrunk):
    """A model's report (heads, scores) and a run's (structure only) come back from their JSON as they were."""
    run_report = analyze(AnalyzeOptions(model=str(run_and_shrunk[0])))
    for data in (planted_report, run_report):
        data = json.loads(json.dumps(data))  # as --out writes it
        report = AnalyzeReport.from_dict(data)
        assert report.format == 1 and report.to_dict() == data
    assert report.kind == "run" and report.heads is None and report.run["step"] == RUN_STEPS
    with pytest.raises(FormatError, match="analyze report of format 2: this speechprune reads format 1"):
        AnalyzeReport.from_dict({**data, "format": 2})
    with pytest.raises(FormatError, match="analyze report without gate_scores"):
        AnalyzeReport.from_dict({k: v for k, v in data.items() if k != "gate_scores"})


def test_teacher_comparison(run_and_shrunk, model_dir, audio_dir):
    _, shrunk, _ = run_and_shrunk
    dense = str(model_dir("wav2vec2"))
    same = analyze(AnalyzeOptions(model=dense, data=str(audio_dir), teacher=dense, drop_one=False, **FAST))["teacher"]
    assert min(same["cosine"]) > 0.9999 and max(same["l1"]) < 1e-5 and min(same["cka"]) > 0.9999
    report = analyze(AnalyzeOptions(model=str(shrunk), data=str(audio_dir), teacher=dense, **FAST))
    teacher = report["teacher"]
    assert len(teacher["cosine"]) == len(teacher["l1"]) == len(teacher["cka"]) == 4
    assert all(0 <= c <= 1 + 1e-9 for c in teacher["cka"]) and teacher["l1"][-1] > 0
    assert report["kind"] == "shrunk" and len(report["heads"]["drop_one"]) == 3


def test_teacher_comparison_of_a_run_uses_its_masks(run_and_shrunk, model_dir, audio_dir):
    # regression: the run's student was compared without its masks, i.e. as the dense model
    run, shrunk, _ = run_and_shrunk
    options = dict(data=str(audio_dir), teacher=str(model_dir("wav2vec2")), drop_one=False, **{**FAST, "projections": 1})
    of_run = analyze(AnalyzeOptions(model=str(run), **options))["teacher"]
    of_shrunk = analyze(AnalyzeOptions(model=str(shrunk), **options))["teacher"]
    assert of_run["cosine"][-1] < 0.9
    assert of_run["cosine"] == pytest.approx(of_shrunk["cosine"], abs=1e-4)


def test_png_needs_matplotlib(planted, audio_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, _, err = cli(capsys, "analyze", "/no/such/model", "--data", audio_dir, "--png", tmp_path / "h.png")
    assert code == 1 and "pip install 'speechprune[plot]'" in err and len(err.strip().splitlines()) == 1


def test_png_is_written(planted, audio_dir, tmp_path):
    analyze(AnalyzeOptions(model=str(planted), data=str(audio_dir), png=str(tmp_path / "h.png"), drop_one=False, **FAST))
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,code,text", [
    (["--max-seconds", "0"], 2, "--max-seconds must be a finite positive number"),
    (["--projections", "0"], 2, "--projections must be at least 1"),
    (["--teacher", "x"], 2, "--teacher needs --data"),
    (["--png", "h.jpg", "--data", "."], 2, "--png takes a .png"),
    (["--out", "/proc/h.json"], 1, "cannot write"),
])
def test_bad_options_fail_before_loading(capsys, args, code, text):
    got, _, err = cli(capsys, "analyze", "/no/such/model", *args)
    assert got == code and text in err and len(err.strip().splitlines()) == 1


def test_bad_inputs_are_one_line_errors(model_dir, audio_dir, tmp_path, capsys):
    for args, text in [
        (["/no/such/model", "--data", audio_dir], "does not exist"),
        ([model_dir("wav2vec2")], "pass --data"),
        ([model_dir("wav2vec2"), "--data", tmp_path], "no audio files"),
    ]:
        code, _, err = cli(capsys, "analyze", *args)
        assert code == 1 and text in err and len(err.strip().splitlines()) == 1, err
