"""Nothing lost, nothing silently wrong, part 3: what a run recorded of its source model is
compared again by `shrink`, option sizes are bounded by the memory a pass needs, commands that
write hold their output's lock for the whole run, and a hostile pass over every command with
the tiny test models (bad files, bad option combinations, outputs inside inputs, links,
unreadable files, empty folders, huge values)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Model

from speechprune.model.loading import quiet_transformers
from helpers.commands import TINY, cli, hold_lock, refused


@pytest.fixture
def model(model_dir, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir("wav2vec2"), copy)
    return copy


@pytest.fixture
def run(capsys, model, audio_dir, tmp_path) -> Path:
    """A finished tiny run of ``model`` (a copy each test may change)."""
    out = tmp_path / "run"
    code, _, err = cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", out, *TINY)
    assert code == 0, err
    return out


# ---------------------------------------------------------------- what a run recorded, compared again


def test_shrink_refuses_a_source_model_whose_weights_changed_before_slicing(capsys, model, run, audio_dir, tmp_path,
                                                                            monkeypatch):
    with quiet_transformers():
        changed = Wav2Vec2Model.from_pretrained(model)
        with torch.no_grad():
            changed.feature_projection.projection.weight.add_(0.01)
        changed.save_pretrained(model)
    import speechprune.shrink.job as shrink_job

    slice_ = shrink_job.shrink_encoder
    monkeypatch.setattr(shrink_job, "shrink_encoder", lambda *_: pytest.fail("sliced before the source was checked"))
    out = tmp_path / "small"
    refused(cli(capsys, "shrink", run, "--out", out, "--data", audio_dir), 1,
            "weights of", "changed since the run started", "sha256", "without --data")
    assert not out.exists()

    monkeypatch.setattr(shrink_job, "shrink_encoder", slice_)
    code, _, err = cli(capsys, "shrink", run, "--out", out)  # without --data the source model is not read
    assert code == 0, err


# ---------------------------------------------------------------- option sizes against the memory


@pytest.mark.parametrize("command,options,named", [
    ("bench", ["--seconds", "1e9", "--device", "cpu"], "lower --seconds to at most"),
    ("bench", ["--seconds", "10", "--batch", "100000000", "--device", "cpu"], "lower --batch to at most"),
    ("prune", ["--sparsity", "0.5", "--crop-seconds", "2", "--batch-seconds", "1e9"], "lower --batch-seconds to at most"),
    ("prune", ["--sparsity", "0.5", "--crop-seconds", "1e8", "--batch-seconds", "1e8"], "lower --crop-seconds to at most"),
    ("analyze", ["--crop-seconds", "1e8", "--max-seconds", "1e8"], "lower --crop-seconds to at most"),
    ("eval", ["--batch-seconds", "1e10"], "lower --batch-seconds to at most"),
])
def test_sizes_beyond_the_memory_are_refused_before_loading_naming_the_largest_that_fits(
        capsys, model, audio_dir, tmp_path, no_loading, monkeypatch, command, options, named):
    import speechprune.model.loading as loading

    monkeypatch.setattr(loading, "load_encoder", lambda *_: pytest.fail("weights loaded before the sizes were checked"))
    out = ["--out", tmp_path / "out"] if command == "prune" else []
    refused(cli(capsys, command, model, "--data", audio_dir, *options, *out) if command != "bench"
            else cli(capsys, command, model, *options), 2, "GB", "memory available", named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("training", [False, True])
def test_the_largest_size_named_fits_and_the_next_does_not(model, monkeypatch, training):
    import speechprune.checks as checks
    from speechprune.errors import UsageError
    from speechprune.model.loading import inspect_model

    info = inspect_model(str(model))
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 200e6)

    def check(seconds, count, per_input=1.0):
        checks.check_fits_in_memory("m", info.spec, info.audio.sampling_rate, length=("--l", seconds), count=("--c", count),
                                    per_input=per_input, training=training, weight_bytes=10e6, what="a pass")

    with pytest.raises(UsageError, match="--c to at most") as refusal:
        check(10.0, 1e6, per_input=0.5)
    most = float(str(refusal.value).rsplit(" ", 1)[1])
    check(10.0, most, per_input=0.5)
    with pytest.raises(UsageError):
        check(10.0, most + 0.5, per_input=0.5)
    with pytest.raises(UsageError, match="--l to at most") as refusal:
        check(1e7, 1)
    longest = float(str(refusal.value).rsplit(" ", 1)[1])
    check(longest, 1)
    with pytest.raises(UsageError):
        check(longest * 1.01, 1)
    monkeypatch.setattr(checks, "available_memory_bytes", lambda: 5e6)
    with pytest.raises(UsageError, match="weights alone need"):
        check(1.0, 1)


# ---------------------------------------------------------------- the output lock is held for the whole run


@pytest.mark.parametrize("command", ["analyze --out", "analyze --png", "eval --out", "bench --cost-model"])
def test_a_second_run_on_an_output_being_written_is_refused_at_its_start(capsys, model, audio_dir, tmp_path,
                                                                         monkeypatch, no_loading, command):
    import speechprune.analyze.job as analyze_job
    import speechprune.bench.cost_model as cost_model

    monkeypatch.setattr(analyze_job, "load_target", lambda *_: pytest.fail("loaded while another run writes"))
    monkeypatch.setattr(analyze_job, "pick_audio", lambda *_: pytest.fail("read audio while another run writes"))
    monkeypatch.setattr(cost_model, "_Timer", lambda *_: pytest.fail("measured while another run writes"))
    name, option = command.split()
    out = tmp_path / ("figure.png" if option == "--png" else "out.json")
    holder = hold_lock(out)
    args = {"analyze": ["--data", audio_dir], "eval": ["--data", audio_dir], "bench": ["--device", "cpu", "--seconds", "1"]}
    try:
        refused(cli(capsys, name, model, *args[name], option, out), 1, option, f"being written by process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


# ---------------------------------------------------------------- the hostile pass


def test_a_file_that_is_not_a_manifest_is_named_as_such(capsys, model, tmp_path):
    refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--data", model / "config.json", "--out", tmp_path / "run",
                *TINY), 1, "config.json is not a manifest", "none of its", "lines names a")
    manifest = tmp_path / "list.txt"
    manifest.write_text("missing-a.wav\nmissing-b.wav\n")  # a manifest whose files are gone is still one
    refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--data", manifest, "--out", tmp_path / "run", *TINY),
            1, "2 missing")
