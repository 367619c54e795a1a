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
from helpers.commands import TINY, cli, refused


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
