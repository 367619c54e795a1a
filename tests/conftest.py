"""Shared fixtures: tiny models of every family and style, saved like hub checkpoints, generated
speech-like audio, and finished prune runs of them (each made once per session). Tiny sizes keep
the whole suite to a few minutes on 2 cores. Shared functions are in `tests/helpers/`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers.commands import RUN_OPTIONS, run_captured
from helpers.models import save_model
from speechprune.io.synth import write_corpus

os.environ.setdefault("NO_COLOR", "1")
# The README runs the suite on 2 pytest-xdist workers (`-n 2`): one thread each, and child processes
# (`python -m speechprune`, torchrun) inherit it; a serial run keeps two.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1 if "PYTEST_XDIST_WORKER" in os.environ else 2)


@pytest.fixture(autouse=True)
def keep_threads():
    """bench and the cost model set the process's thread count: every test starts with the suite's."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Factory: model_dir(family, style, task=None) -> a saved model folder (cached per session)."""
    cache: dict[tuple, Path] = {}

    def make(family: str = "wav2vec2", style: str = "base", task: str | None = None) -> Path:
        key = (family, style, task)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{family}-{style}-{task or 'model'}")
            cache[key] = save_model(folder, family, style, task)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory) -> Path:
    """A dozen generated speech-like 16 kHz files of 1.5-3 s."""
    folder = tmp_path_factory.mktemp("audio")
    write_corpus(folder, n_files=12, seconds=(1.5, 3.0), seed=0)
    return folder


@pytest.fixture(scope="session")
def finished_run(model_dir, audio_dir, tmp_path_factory):
    """Factory: finished_run(family, style) -> the folder of a finished `speechprune prune` of
    model_dir(family, style) on audio_dir with helpers.commands.RUN_OPTIONS (made once per session: tests that
    change a run change a copy)."""
    cache: dict[tuple, Path] = {}

    def make(family: str = "wav2vec2", style: str = "base") -> Path:
        if (family, style) not in cache:
            out = tmp_path_factory.mktemp(f"run-{family}-{style}") / "run"
            code, _, err = run_captured("prune", model_dir(family, style), "--data", audio_dir, "--out", out,
                                        *RUN_OPTIONS)
            assert code == 0, err
            cache[family, style] = out
        return cache[family, style]

    return make


@pytest.fixture(scope="session")
def shrunk_run(finished_run, tmp_path_factory):
    """Factory: shrunk_run(family, style) -> the model folder of finished_run(family, style) shrunk."""
    from speechprune.shrink.job import shrink_run

    cache: dict[tuple, Path] = {}

    def make(family: str = "wav2vec2", style: str = "base") -> Path:
        if (family, style) not in cache:
            cache[family, style] = tmp_path_factory.mktemp(f"shrunk-{family}-{style}") / "shrunk"
            shrink_run(finished_run(family, style), cache[family, style])
        return cache[family, style]

    return make


@pytest.fixture
def no_loading(monkeypatch):
    """Fails a test whose command loads model weights (bench or eval) before checking its options."""
    import speechprune.bench.job as bench_core
    import speechprune.export_onnx.job as export_job
    import speechprune.eval.job as eval_core

    def refuse(*_):
        raise AssertionError("weights were loaded before the options were checked")

    monkeypatch.setattr(bench_core, "Workers", refuse)  # bench's worker processes load the models
    monkeypatch.setattr(eval_core, "load_target", refuse)
    monkeypatch.setattr(export_job, "load_target", refuse)


def pytest_collection_modifyitems(items):
    """The longest tests, the quality pipeline's two smoke runs (minutes each on one core), go first and
    last: xdist's worksteal hands each worker one half of the list, so each worker runs one of them,
    the first at once, the second after its share of the short tests."""
    smoke = sorted((item for item in items if item.path.name == "test_quality_pipeline.py"), key=lambda item: item.name)
    rest = [item for item in items if item.path.name != "test_quality_pipeline.py"]
    items[:] = smoke[:1] + rest + smoke[1:]
