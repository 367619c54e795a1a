"""End-to-end pruning runs on tiny models: budgets, run folders, resume, two processes."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from speechprune.folders.run import RunFolder, read_spec
from speechprune.method.gates import BETA, LIMIT_L, LIMIT_R, GateLayout
from speechprune.model.encoder import Encoder
from speechprune.prune.job import prune
from helpers.commands import StderrLines, fast_config, metric_lines, run_cli
from helpers.data import write_scores
from helpers.models import ALL_KINDS
from helpers.sliced_count import sliced_parameter_count

FAST = ["--steps", "4", "--crop-seconds", "1.5", "--batch-seconds", "3", "--device", "cpu"]


def final_student(run_dir) -> tuple[Encoder, object]:
    run = RunFolder(run_dir)
    encoder = Encoder(read_spec(run))
    encoder.load_state_dict(run.latest_checkpoint().tensors("student"))
    layout = GateLayout(encoder.spec, run.record().structures)
    values = layout.values(load_file(str(run.masks_path))["values"].double())
    return encoder, values


@pytest.mark.parametrize("family,style", ALL_KINDS)
@pytest.mark.parametrize("sparsity", [0.5, 0.72])
def test_short_run_lands_on_the_target(family, style, sparsity, model_dir, audio_dir, tmp_path):
    summary = prune(fast_config(model_dir(family, style), audio_dir, tmp_path / "run", sparsity))
    target = summary["params_dense"] * (1 - sparsity)
    assert abs(summary["params_pruned"] / target - 1) <= 0.005
    assert summary["within_tolerance"] and summary["steps"] == 4
    encoder, values = final_student(tmp_path / "run")
    assert sliced_parameter_count(encoder, values) == summary["params_pruned"]
    assert summary["params_dense"] == sum(p.numel() for p in encoder.parameters())


def test_relaxed_gates_and_structure_subset(model_dir, audio_dir, tmp_path):
    config = fast_config(model_dir("hubert"), audio_dir, tmp_path / "run", 0.5, ste=False,
                         structures=["conv", "head", "int"], final_steps=2, gate_lr=0.5)
    summary = prune(config)
    assert summary["within_tolerance"] and summary["steps"] == 6
    _, values = final_student(tmp_path / "run")
    assert values.get("qk", 0) is None  # not gated
    # relaxed gates keep their soft median value (to be folded into the weights at shrink time)
    log_alpha = RunFolder(tmp_path / "run").latest_checkpoint().tensors("gates")["log_alpha"].double()
    median = (torch.sigmoid(log_alpha / BETA) * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0, 1)
    kept = values.flat > 0
    assert torch.allclose(values.flat[kept], median[kept].float().double())
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics] == ["prune"] * 4 + ["final"] * 2
    for key in ("loss", "distill", "expected_sparsity", "target_sparsity", "lambda1", "lambda2", "lr",
                "audio_seconds_per_second"):
        assert key in metrics[0]
    assert metrics[-1]["val_distill"] is not None


def test_target_ramps_and_lambdas_push_towards_it(model_dir, audio_dir, tmp_path):
    config = fast_config(model_dir("wav2vec2"), audio_dir, tmp_path / "run", 0.5, steps=12, warmup_steps=6,
                         gate_lr=0.2, lambda_lr=0.05)
    prune(config)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    targets = [m["target_sparsity"] for m in metrics]
    assert targets[:6] == pytest.approx([0.5 * s / 6 for s in range(1, 7)], abs=1e-6) and set(targets[6:]) == {0.5}
    # expected sparsity starts below target, so lambda1 falls (pushing sparsity up) and sparsity rises
    assert metrics[-1]["lambda1"] < 0 < metrics[-1]["lambda2"]
    assert metrics[-1]["expected_sparsity"] > metrics[0]["expected_sparsity"] + 0.02


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(model_dir, audio_dir, tmp_path):
    args = ["prune", str(model_dir("wavlm")), "--data", str(audio_dir), "--sparsity", "0.5", "--steps", "24",
            "--checkpoint-every", "1000", "--crop-seconds", "1.5", "--batch-seconds", "3", "--device", "cpu",
            "--seed", "7", "--log-every", "1"]  # a line on stderr at every step
    reference = run_cli(*args, "--out", str(tmp_path / "reference"))
    assert reference.wait(timeout=240) == 0, reference.stderr.read()

    interrupted_dir = tmp_path / "interrupted"
    process = run_cli(*args, "--out", str(interrupted_dir))
    stderr = StderrLines(process)
    stderr.wait_for("step 3 ")  # its metrics line is written
    process.send_signal(signal.SIGINT)
    stderr = stderr.rest()
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    stopped_at = RunFolder(interrupted_dir).latest_checkpoint().state["step"]
    assert 3 <= stopped_at < 24 and not (interrupted_dir / "summary.json").exists()

    resumed = run_cli(*args, "--out", str(interrupted_dir), "--resume")
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read()

    ours = RunFolder(interrupted_dir).latest_checkpoint()
    theirs = RunFolder(tmp_path / "reference").latest_checkpoint()
    for name in ("gates", "student", "distill_heads"):
        a, b = ours.tensors(name), theirs.tensors(name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ours_metrics = [json.loads(l) for l in metric_lines(interrupted_dir)]
    theirs_metrics = [json.loads(l) for l in metric_lines(tmp_path / "reference")]
    assert [m["step"] for m in ours_metrics] == list(range(1, 25))
    assert [m["loss"] for m in ours_metrics] == [m["loss"] for m in theirs_metrics]
    assert json.loads((interrupted_dir / "summary.json").read_text())["params_pruned"] == json.loads(
        (tmp_path / "reference" / "summary.json").read_text())["params_pruned"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_gloo(model_dir, audio_dir, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "speechprune", "prune", str(model_dir("wav2vec2", "large")),
               "--data", str(audio_dir), "--sparsity", "0.5", "--out", str(out), "--json", *FAST]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["within_tolerance"]
    # rank 0 alone writes: one summary, metrics once per step
    assert len(metric_lines(out)) == 4
    assert json.loads(done.stdout)["world_size"] == 2  # one JSON document: only rank 0 prints


@pytest.mark.parametrize("task,left_out", [("ForPreTraining", {"project_hid", "project_q", "quantizer"}),
                                           ("ForSequenceClassification", {"classifier", "projector"})])
def test_task_checkpoints_give_their_encoder(task, left_out, tmp_path):
    from speechprune.model.loading import describe_source, inspect_model, load_encoder
    from helpers.models import build_model, save_model

    folder = save_model(tmp_path / "model", "wav2vec2", "base", task)
    loaded = load_encoder(inspect_model(str(folder)))
    assert set(loaded.left_out) == left_out
    assert f"Wav2Vec2{task}" in describe_source(loaded)
    expected = build_model("wav2vec2", "base", task).wav2vec2  # same seed: same weights
    waveforms = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (loaded.encoder(waveforms).last_hidden_state - expected(waveforms).last_hidden_state).abs().max() < 1e-5


def test_old_weight_norm_key_names_load(tmp_path):
    """Checkpoints from older torch store the positional conv as weight_g / weight_v."""
    from safetensors.torch import load_file, save_file
    from speechprune.model.loading import inspect_model, load_encoder
    from helpers.models import save_model

    folder = save_model(tmp_path / "model", "hubert", "base")
    state = load_file(str(folder / "model.safetensors"))
    prefix = "encoder.pos_conv_embed.conv."
    state[prefix + "weight_g"] = state.pop(prefix + "parametrizations.weight.original0")
    state[prefix + "weight_v"] = state.pop(prefix + "parametrizations.weight.original1")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    loaded = load_encoder(inspect_model(str(folder)))
    conv = loaded.encoder.encoder.pos_conv_embed.conv
    assert torch.equal(conv.parametrizations.weight.original1, state[prefix + "weight_v"])


def test_one_shot_from_scores_lands_and_shrinks(model_dir, audio_dir, tmp_path):
    from speechprune.method.budget import params_budget
    from speechprune.method.decision import decide, value_per_cost
    from speechprune.shrink.job import shrink_run

    model = model_dir("wav2vec2")
    layout, scores = write_scores(tmp_path / "scores.json", model)
    summary = prune(fast_config(model, audio_dir, tmp_path / "run", 0.6, steps=0, scores=str(tmp_path / "scores.json")))
    assert summary["steps"] == 0 and summary["within_tolerance"] and summary["val_distill"] is not None
    budgets = [params_budget(read_spec(RunFolder(tmp_path / "run")), layout, 0.6)]
    ranking = value_per_cost(layout, budgets, scores)  # importance per parameter
    expected = decide(layout, budgets, ranking, initial=torch.ones(layout.size, dtype=torch.bool))
    _, values = final_student(tmp_path / "run")
    assert torch.equal(values.flat > 0, expected.keep)  # exactly the ranking of the scores
    report = shrink_run(tmp_path / "run", tmp_path / "model")
    assert report["params"] == summary["params_pruned"]


def test_warm_start_from_scores(model_dir, audio_dir, tmp_path):
    model = model_dir("hubert")
    write_scores(tmp_path / "scores.json", model, ["head", "int"])
    config = fast_config(model, audio_dir, tmp_path / "run", 0.4, steps=1, gate_lr=1e-12, anneal=1.0,
                         structures=["head", "int"], scores=str(tmp_path / "scores.json"), init_from_scores=True)
    prune(config)
    log_alpha = RunFolder(tmp_path / "run").latest_checkpoint().tensors("gates")["log_alpha"]
    assert set(torch.round(log_alpha, decimals=3).unique().tolist()) == {0.5, 3.0}


def test_bad_scores_are_refused_before_loading_weights(model_dir, audio_dir, tmp_path, monkeypatch):
    import speechprune.prune.job as prune_job
    from speechprune.errors import DataError, UsageError

    def refuse(*_):
        raise AssertionError("weights were loaded before the scores were checked")

    monkeypatch.setattr(prune_job, "load_encoder", refuse)
    model = model_dir("wav2vec2")
    write_scores(tmp_path / "good.json", model)
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "empty.json").write_text("{}")
    short = json.loads((tmp_path / "good.json").read_text())
    short["gate_scores"]["int"][0] = short["gate_scores"]["int"][0][:5]
    (tmp_path / "short.json").write_text(json.dumps(short))
    for name, words in (("broken.json", "cannot read"), ("empty.json", "no gate_scores"), ("short.json", "int.0")):
        with pytest.raises(DataError, match=words):
            prune(fast_config(model, audio_dir, tmp_path / name.replace(".json", ""), 0.5, steps=0,
                              scores=str(tmp_path / name)))
        assert not (tmp_path / name.replace(".json", "")).exists()  # nor was the run folder begun
    with pytest.raises(UsageError, match="--scores"):
        prune(fast_config(model, audio_dir, tmp_path / "x", 0.5, steps=0))


def test_annealing_holds_the_target_and_lands_without_adjustment(model_dir, audio_dir, tmp_path):
    """After the ramp the gates sharpen up to --anneal and a common shift of the log-alphas holds the
    expected size on the target (in the last tenth of annealing whole blocks and heads count as their
    decisions and the fine gates fill the gap), so the decision lands where training went."""
    options = dict(steps=24, warmup_steps=4, gate_lr=0.05, lambda_lr=0.05)
    plain = prune(fast_config(model_dir("wav2vec2"), audio_dir, tmp_path / "plain", 0.5, anneal=1.0, **options))
    annealed = prune(fast_config(model_dir("wav2vec2"), audio_dir, tmp_path / "annealed", 0.5, anneal=100.0, **options))
    metrics = [json.loads(line) for line in (tmp_path / "annealed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["sharpness"] for m in metrics[:4]] == [1.0] * 4 and metrics[23]["sharpness"] == pytest.approx(100.0)
    assert all("gate_shift" in m and "fine_gate_shift" in m for m in metrics[4:24])
    assert not any("gate_shift" in m for m in metrics[:4])
    # coarse gates are rounded in the last tenth of annealing (from step 4 + 0.9 * 20 = 22 of 24)
    assert [m["step"] for m in metrics[4:24] if m["fine_gate_shift"] != 0] == [22, 23, 24]
    # the gates lag the ramp on so short a run; from the first annealing step on, the shift holds the
    # expected size on the target. Rounding the coarse gates moves it by their undecided fraction,
    # which the hold of the next steps takes back as they sharpen
    assert abs(metrics[3]["expected_sparsity"] - 0.5) > 0.05
    assert [m["expected_sparsity"] for m in metrics[4:21]] == pytest.approx([0.5] * 17, abs=1e-4)
    assert [m["expected_sparsity"] for m in metrics[21:24]] == pytest.approx([0.5] * 3, abs=0.1)
    assert annealed["within_tolerance"]
    assert annealed["decision_adjusted"] <= plain["decision_adjusted"] / 10, (annealed["decision_adjusted"],
                                                                              plain["decision_adjusted"])