"""Nothing lost, nothing silently wrong: concurrent writers, non-finite audio and losses, outputs
overlapping inputs, full disks, torn and damaged run folders, file modes, stale temporaries and
resume path comparison (docs/reliability.md lists which test shows what)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from speechprune.cli.output import Output
from speechprune.errors import DataError, ModelError
from speechprune.folders.run import RunFolder
from speechprune.folders.run import read_run
from speechprune.io import atomic
from speechprune.io.outputs import OutputLock
from speechprune.model.compare import require_finite
from speechprune.model.encoder import Encoder
from speechprune.prune.job import prune
from speechprune.shrink.slicing import max_relative_error
from helpers.commands import (RUN_OPTIONS, RUN_STEPS, TINY, StderrLines, assert_clean_error, cli, fast_config,
                              hold_lock, metric_lines, run_cli)


@pytest.fixture
def finished(finished_run) -> Path:
    """The shared finished run of the tiny wav2vec2 (change only a copy)."""
    return finished_run("wav2vec2", "base")


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# ---------------------------------------------------------------- 1. concurrent writers


def test_second_prune_on_a_running_out_is_refused_and_kill_9_does_not_block_resume(capsys, model_dir, audio_dir,
                                                                                      tmp_path):
    out = tmp_path / "x"
    args = ["prune", str(model_dir("wav2vec2")), "--sparsity", "0.5", "--data", str(audio_dir), "--out", str(out),
            "--steps", "60", "--checkpoint-every", "2", *TINY[2:]]
    first = run_cli(*args)
    StderrLines(first).wait_for("  val ")  # the line of step 2, printed once its checkpoint is saved
    assert first.poll() is None

    second = cli(capsys, *args, "--seed", "1")
    message = assert_clean_error(second, 1, "being written by", f"process {first.pid}", "another --out")
    assert str(out) in message

    first.send_signal(signal.SIGKILL)  # leaves its lock file behind: the kernel released the lock itself
    first.wait(timeout=60)
    assert (tmp_path / ".x.lock").exists()
    code, _, err = cli(capsys, *args, "--resume")
    assert code == 0, err
    assert [json.loads(line)["step"] for line in metric_lines(out)] == list(range(1, 61))
    assert json.loads((out / "config.json").read_text())["options"]["seed"] == 0
    assert not (tmp_path / ".x.lock").exists()


def test_shrink_refuses_an_out_another_process_writes(capsys, finished, tmp_path):
    holder = hold_lock(tmp_path / "model")
    try:
        result = cli(capsys, "shrink", finished, "--out", tmp_path / "model")
        assert_clean_error(result, 1, "being written by", f"process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "model").exists()


def test_a_lock_released_by_its_holder_is_taken_by_the_next_writer(tmp_path):
    with OutputLock(tmp_path / "out"):
        assert (tmp_path / ".out.lock").read_text().startswith(f"process {os.getpid()} on ")
    assert not (tmp_path / ".out.lock").exists()
    with OutputLock(tmp_path / "out"):
        pass


# ---------------------------------------------------------------- 2. non-finite audio, losses, outputs


def test_non_finite_loss_skips_the_step_and_is_counted(model_dir, audio_dir, tmp_path, monkeypatch):
    import speechprune.prune.lifecycle as lifecycle
    import speechprune.prune.step as step

    real = step.distill_loss
    calls = []

    def nan_on_second_step(*args, **kwargs):
        total, pairs = real(*args, **kwargs)
        calls.append(1)
        return (total * math.nan, pairs) if len(calls) == 2 else (total, pairs)

    for module in (step, lifecycle):
        monkeypatch.setattr(module, "distill_loss", nan_on_second_step)
    summary = prune(fast_config(model_dir("wav2vec2"), audio_dir, tmp_path / "run", 0.5, val_fraction=0.0))
    assert summary["skipped_steps"] == 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    metrics = [json.loads(line, parse_constant=pytest.fail) for line in lines]  # strict: no bare NaN
    assert metrics[1]["skipped"] is True and metrics[1]["loss"] is None
    assert [m.get("skipped", False) for m in metrics] == [False, True, False, False]
    student = RunFolder(tmp_path / "run").latest_checkpoint().tensors("student")
    assert all(torch.isfinite(t).all() for t in student.values())


def test_a_loss_that_stays_non_finite_stops_the_run(model_dir, audio_dir, tmp_path, monkeypatch):
    import speechprune.prune.lifecycle as lifecycle
    import speechprune.prune.step as step

    real = step.distill_loss
    monkeypatch.setattr(lifecycle, "MAX_SKIPPED_IN_A_ROW", 3)
    for module in (step, lifecycle):
        monkeypatch.setattr(module, "distill_loss", lambda *a, **k: (real(*a, **k)[0] * math.inf, real(*a, **k)[1]))
    with pytest.raises(DataError, match="not finite for 3 steps in a row"):
        prune(fast_config(model_dir("wav2vec2"), audio_dir, tmp_path / "run", 0.5, steps=6))


def test_shrink_refuses_a_run_with_nan_weights(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    student = RunFolder(run).latest_checkpoint().folder / "student.safetensors"
    weights = load_file(str(student))
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], math.nan)
    save_file(weights, str(student))
    result = cli(capsys, "shrink", run, "--out", tmp_path / "model")
    assert_clean_error(result, 1, "NaN or infinite weights", name)
    assert not (tmp_path / "model").exists()


def test_exactness_check_fails_on_nan(finished):
    snap = read_run(finished)
    big = Encoder(snap.spec).eval()
    big.load_state_dict(snap.state)
    small = Encoder(snap.spec).eval()
    small.load_state_dict({k: v * math.nan if k.endswith("out_proj.weight") else v for k, v in snap.state.items()})
    assert max_relative_error(big, None, small, 16000) == math.inf  # max(0.0, nan) used to give 0.0


def test_json_never_holds_bare_nan(tmp_path, capsys):
    data = {"loss": math.nan, "nested": [math.inf, 1.5], "ok": 2}
    Output(json_mode=True).result(data, "")
    assert json.loads(capsys.readouterr().out, parse_constant=pytest.fail) == {"loss": None, "nested": [None, 1.5],
                                                                                "ok": 2}
    atomic.write_json(tmp_path / "x.json", data)
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=pytest.fail)["loss"] is None


def test_nan_features_are_refused():
    require_finite(torch.ones(3), "the model")
    with pytest.raises(ModelError, match="the model gives NaN or infinite values"):
        require_finite(torch.tensor([1.0, math.nan]), "the model")
    with pytest.raises(ModelError, match="student"):
        require_finite(np.array([np.inf]), "student")


@pytest.fixture
def nan_model(model_dir, tmp_path) -> Path:
    """The tiny wav2vec2 with one FFN weight set to NaN (what a diverged run would have shrunk to)."""
    model = tmp_path / "nan-model"
    shutil.copytree(model_dir("wav2vec2"), model)
    weights = load_file(str(model / "model.safetensors"))
    name = next(k for k in weights if k.endswith("feed_forward.output_dense.weight"))
    weights[name] = torch.full_like(weights[name], math.nan)
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    return model


def test_analyze_refuses_a_model_with_nan_weights(capsys, nan_model, audio_dir):
    result = cli(capsys, "analyze", nan_model, "--data", audio_dir, "--max-seconds", "3", "--no-drop-one",
                 "--projections", "1", "--json")
    assert_clean_error(result, 1, "NaN or infinite", only_line=False)


def test_eval_refuses_nan_features(capsys, nan_model, audio_dir, tmp_path):
    for index, path in enumerate(sorted(audio_dir.iterdir())[:8]):
        (tmp_path / "labelled" / f"label{index % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / "labelled" / f"label{index % 2}" / path.name)
    result = cli(capsys, "eval", nan_model, "--data", tmp_path / "labelled", "--epochs", "2", "--json")
    assert_clean_error(result, 1, "model", "NaN or infinite", only_line=False)


# ---------------------------------------------------------------- 3. outputs overlapping inputs


def test_prune_refuses_an_out_that_overlaps_an_input(capsys, model_dir, audio_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(audio_dir, data)
    model = tmp_path / "model"
    shutil.copytree(model_dir("wav2vec2"), model)
    (tmp_path / "link").symlink_to(data)
    base = ["prune", model, "--sparsity", "0.5", "--data", data, *TINY, "--overwrite"]
    for out, words in [(data, "is --data"), (model, "is MODEL"), (tmp_path, "contains"), (data / "run", "lies inside"),
                       (tmp_path / "link", "is --data")]:
        before = sorted(p.name for p in data.iterdir()) + sorted(p.name for p in model.iterdir())
        assert_clean_error(cli(capsys, *base, "--out", out), 2, words, "choose an --out outside it")
        assert sorted(p.name for p in data.iterdir()) + sorted(p.name for p in model.iterdir()) == before


def test_shrink_refuses_an_out_that_overlaps_its_run(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    assert_clean_error(cli(capsys, "shrink", run, "--out", run, "--overwrite"), 2, "is RUN")
    assert_clean_error(cli(capsys, "shrink", run, "--out", run / "model"), 2, "lies inside RUN")
    assert (run / "summary.json").exists() and not (run / "model").exists()


def test_analyze_out_must_not_be_an_input(capsys, finished, tmp_path):
    manifest = tmp_path / "list.tsv"
    manifest.write_text("a.wav\n")
    assert_clean_error(cli(capsys, "analyze", finished, "--data", manifest, "--out", manifest), 2, "is --data")
    assert manifest.read_text() == "a.wav\n"


# ---------------------------------------------------------------- 4. disk full, torn files


def test_torn_last_metrics_line_is_dropped_on_resume(capsys, finished, audio_dir, model_dir, tmp_path):
    run = copy_run(finished, tmp_path)
    (run / "summary.json").unlink()  # as if the disk filled up at the last step
    (run / "masks.safetensors").unlink()
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "loss": 0.12')
    args = ["prune", model_dir("wav2vec2"), "--data", audio_dir, "--out", run, *RUN_OPTIONS, "--resume"]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert [json.loads(line)["step"] for line in metric_lines(run)] == list(range(1, RUN_STEPS + 1))
    assert (run / "summary.json").exists()


def test_disk_full_during_prune_says_so_and_resume_continues(capsys, model_dir, audio_dir, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    out = tmp_path / "run"
    args = ["prune", model_dir("wav2vec2"), "--sparsity", "0.5", "--data", audio_dir, "--out", out, *TINY]
    monkeypatch.setattr(atomic, "save_file", full)
    message = assert_clean_error(cli(capsys, *args), 1, "no space left on device while writing",
                                 "free space and rerun with --resume", only_line=False)
    assert str(out / "checkpoints" / "step-00000003-prune") in message
    monkeypatch.undo()
    code, _, err = cli(capsys, *args, "--resume")
    assert code == 0, err


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),
    RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0"),
])
def test_disk_full_is_recognised_in_every_form(error):
    assert atomic.is_disk_full(error)
    assert not atomic.is_disk_full(OSError(13, "Permission denied"))
    assert not atomic.is_disk_full(RuntimeError("shape mismatch"))


# ---------------------------------------------------------------- 11. damaged run folders


@pytest.mark.parametrize("missing", ["masks.safetensors", "encoder.json", "student.safetensors"])
def test_shrink_refuses_a_finished_run_with_a_missing_file(capsys, finished, tmp_path, missing):
    run = copy_run(finished, tmp_path)
    path = RunFolder(run).latest_checkpoint().folder / missing if missing == "student.safetensors" else run / missing
    path.unlink()
    assert_clean_error(cli(capsys, "shrink", run, "--out", tmp_path / "model"), 1, "damaged", str(path))
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------- 12. modes, 13. stale temporaries


def modes(folder: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in [folder, *folder.rglob("*")]}


def test_outputs_follow_the_umask(model_dir, audio_dir, tmp_path):
    from speechprune.shrink.job import shrink_run

    old = os.umask(0o002)
    try:
        prune(fast_config(model_dir("wav2vec2"), audio_dir, tmp_path / "run", 0.5))
        shrink_run(tmp_path / "run", tmp_path / "model")
    finally:
        os.umask(old)
    assert modes(tmp_path / "run") == {("dir", 0o775), ("file", 0o664)}
    assert modes(tmp_path / "model") == {("dir", 0o775), ("file", 0o664)}


def test_shrink_removes_temporaries_a_killed_shrink_left(finished, tmp_path):
    from speechprune.shrink.job import shrink_run

    stale = tmp_path / ".model.k9x2ab_7.speechprune-tmp"
    (stale / "stock").mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".model.lock").write_text("process 999999 on elsewhere\n")  # its writer died
    other = tmp_path / ".model.v2.k9x2ab_7.speechprune-tmp"  # another destination's: not ours to touch
    other.mkdir()
    shrink_run(finished, tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "model"]


# ---------------------------------------------------------------- 14. resume compares resolved paths


def test_resume_accepts_the_same_paths_spelled_differently(capsys, finished, model_dir, audio_dir, tmp_path,
                                                          monkeypatch):
    run = copy_run(finished, tmp_path)
    monkeypatch.chdir(audio_dir.parent)
    model = os.path.relpath(model_dir("wav2vec2")) + "/"
    args = ["prune", model, "--data", audio_dir.name + "/", "--out", run, *RUN_OPTIONS, "--resume"]
    code, _, err = cli(capsys, *args)
    assert code == 0 and "finished run; nothing to do" in err, err
