"""Files that cannot be read: every file a command reads as text (a model folder's configs, the
scores, a cost table, a run's records, a manifest) is refused in one line naming it and the fix
when it is a folder, a FIFO (which blocked the reader for ever), a link to nothing, or denied
(the tests run as root, where chmod denies nothing: ``os.open`` is made to raise instead). A FIFO
named like an audio file is skipped as unreadable. A SIGALRM fails a test that would hang."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from helpers.commands import cli, refused
from speechprune.io.audio import scan_audio

HANG_SECONDS = 120


@pytest.fixture(autouse=True)
def no_hang():
    def hung(*_):
        raise AssertionError(f"blocked for {HANG_SECONDS} s reading a file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def spoil(path: Path, how: str, monkeypatch) -> None:
    """Make ``path`` unreadable in the way ``how`` says."""
    path.unlink(missing_ok=True)
    if how == "a folder":
        path.mkdir()
    elif how == "a FIFO":
        os.mkfifo(path)
    elif how == "a link to nothing":
        path.symlink_to(path.parent / "gone")
    else:  # denied
        path.write_text("{}")
        real_open = os.open

        def denied(name, *args, **kwargs):
            if os.fspath(name) == os.fspath(path):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_open(name, *args, **kwargs)

        monkeypatch.setattr(os, "open", denied)
        real_io_open = io.open

        def denied_io(name, *args, **kwargs):  # open() and pathlib, as transformers and soundfile read
            if isinstance(name, (str, os.PathLike)) and os.fspath(name) == os.fspath(path):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_io_open(name, *args, **kwargs)

        monkeypatch.setattr(io, "open", denied_io)
        monkeypatch.setattr(builtins, "open", denied_io)


HOW = ["a folder", "a FIFO", "a link to nothing", "denied"]


@pytest.fixture
def model(model_dir, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir("wav2vec2"), copy)
    (copy / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 16000, "do_normalize": True}))
    return copy


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json"])
def test_a_model_folders_config_that_cannot_be_read_is_named(capsys, model, name, how, monkeypatch, no_loading):
    spoil(model / name, how, monkeypatch)
    message = refused(cli(capsys, "bench", model, "--device", "cpu", "--seconds", "1"), 1, name)
    assert "re-" in message or "save_pretrained" in message  # the fix: re-save or re-download


@pytest.mark.parametrize("how", HOW)
def test_scores_and_cost_tables_that_cannot_be_read_are_named(capsys, model, audio_dir, tmp_path, how, monkeypatch,
                                                              no_loading):
    scores, table = tmp_path / "scores.json", tmp_path / "cost.json"
    spoil(scores, how, monkeypatch)
    refused(cli(capsys, "prune", model, "--steps", "0", "--scores", scores, "--sparsity", "0.5", "--data", audio_dir,
                "--out", tmp_path / "run", "--device", "cpu"), 1, "--scores", str(scores), "speechprune analyze")
    spoil(table, how, monkeypatch)
    refused(cli(capsys, "bench", model, "--latency-table", table, "--device", "cpu", "--seconds", "1"), 2,
            "--latency-table", str(table), "--cost-model")


@pytest.mark.parametrize("how", HOW)
def test_a_manifest_that_cannot_be_read_is_named(capsys, model, tmp_path, how, monkeypatch):
    manifest = tmp_path / "train.tsv"
    spoil(manifest, how, monkeypatch)
    refused(cli(capsys, "analyze", model, "--data", manifest, "--device", "cpu"), 1, str(manifest))


def test_a_fifo_named_like_audio_is_skipped_as_unreadable(audio_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(audio_dir, data)
    os.mkfifo(data / "zz-fifo.wav")
    corpus = scan_audio(data, min_seconds=0.5)
    assert corpus.skipped.unreadable == 1 and len(corpus.files) == len(list(audio_dir.iterdir()))


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", ["config.json", "encoder.json", "checkpoints/latest"])
def test_a_run_record_that_cannot_be_read_is_named(capsys, finished_run, tmp_path, name, how, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run(), run)
    spoil(run / name, how, monkeypatch)
    refused(cli(capsys, "shrink", run, "--out", tmp_path / "small"), 1, str(run))
    assert not (tmp_path / "small").exists()
