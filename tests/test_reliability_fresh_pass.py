"""A fresh hostile pass, as a new user would try it (the cases and their outcomes are listed in
docs/reliability.md): JSON files that parse but hold no object, and output options given as
empty strings (an unset shell variable)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from helpers.commands import cli, refused


@pytest.fixture
def model(model_dir, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir("wav2vec2"), copy)
    return copy


@pytest.mark.parametrize("text", ["[]", "null", '"wav2vec2"', "[1, 2]"])
@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json"])
def test_a_model_config_that_is_not_a_json_object_is_named(capsys, model, name, text, no_loading):
    (model / name).write_text(text)
    refused(cli(capsys, "bench", model, "--device", "cpu", "--seconds", "1"), 1, str(model / name), "not an object",
            "re-download")


@pytest.mark.parametrize("name", ["config.json", "encoder.json"])
def test_a_run_record_that_is_not_a_json_object_is_named(capsys, finished_run, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(finished_run(), run)
    (run / name).write_text("[]")
    refused(cli(capsys, "shrink", run, "--out", tmp_path / "small"), 1, str(run / name), "not an object")
    refused(cli(capsys, "analyze", run), 1, str(run / name), "not an object")
    assert not (tmp_path / "small").exists()


def test_an_empty_output_option_is_refused_not_taken_as_the_default_or_the_current_folder(capsys, model, audio_dir,
                                                                                          tmp_path, monkeypatch,
                                                                                          no_loading):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for args in (["prune", model, "--sparsity", "0.5", "--data", audio_dir, "--steps", "2", "--device", "cpu", "--out"],
                 ["shrink", tmp_path / "no-run", "--out"], ["analyze", model, "--data", audio_dir, "--out"],
                 ["eval", model, "--data", audio_dir, "--out"],
                 ["bench", model, "--device", "cpu", "--seconds", "1", "--cost-model"], ["export-onnx", model, "--out"]):
        refused(cli(capsys, *args, ""), 2, f"{args[-1]} is empty")
    refused(cli(capsys, "analyze", model, "--data", audio_dir, "--png", ""), 2, "--png takes a .png file name")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/ or models/ folder made
    assert json.loads((model / "config.json").read_text())["model_type"] == "wav2vec2"


def test_a_file_output_that_is_a_fifo_is_not_replaced(capsys, model, audio_dir, tmp_path, no_loading):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    refused(cli(capsys, "eval", model, "--data", audio_dir, "--out", fifo), 1, str(fifo), "cannot be read")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
