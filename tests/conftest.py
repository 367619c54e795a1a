"""Shared fixtures: tiny models of every family and style, saved like hub checkpoints, and
generated speech-like audio. Tiny sizes keep the whole suite to a few minutes on 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import transformers

from speechprune.io.synth import write_corpus
from speechprune.model.loading import quiet_transformers

os.environ.setdefault("NO_COLOR", "1")
torch.set_num_threads(2)

FAMILY_CLASSES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
}
STYLES = ("base", "large")
ALL_KINDS = [(f, s) for f in FAMILY_CLASSES for s in STYLES]


def tiny_config(family: str, style: str = "base", **overrides):
    """A small config with the real layout: 7-layer CNN at 20 ms frames, pos conv, 3 layers."""
    config_class = getattr(transformers, FAMILY_CLASSES[family][0])
    kwargs = dict(
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        conv_dim=(24,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=style == "large",
        feat_extract_norm="layer" if style == "large" else "group",
        conv_bias=style == "large",
    )
    if family == "wavlm":
        kwargs.update(num_buckets=32, max_bucket_distance=64)
    kwargs.update(overrides)
    return config_class(**kwargs)


def build_model(family: str, style: str = "base", task: str | None = None, seed: int = 0, **overrides):
    """A random-weight transformers model (the base `...Model`, or a task class like `...ForCTC`)."""
    config = tiny_config(family, style, **overrides)
    name = FAMILY_CLASSES[family][1] if task is None else FAMILY_CLASSES[family][1].replace("Model", task)
    torch.manual_seed(seed)
    return getattr(transformers, name)(config).eval()


def save_model(folder: Path, family: str, style: str = "base", task: str | None = None, **overrides) -> Path:
    with quiet_transformers():
        build_model(family, style, task, **overrides).save_pretrained(folder)
    return folder


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


@pytest.fixture
def no_loading(monkeypatch):
    """Fails a test whose command loads model weights (bench or eval) before checking its options."""
    import speechprune.bench.job as bench_core
    import speechprune.deploy.onnx as onnx_export
    import speechprune.eval.job as eval_core

    def refuse(*_):
        raise AssertionError("weights were loaded before the options were checked")

    monkeypatch.setattr(bench_core, "load", refuse)
    monkeypatch.setattr(eval_core, "load_target", refuse)
    monkeypatch.setattr(onnx_export, "load_target", refuse)
