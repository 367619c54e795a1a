"""`eval --runtime onnxruntime [--quantize int8]`: probe features from an ONNX Runtime session of
a checked export with hidden states, padded batches included, compared with float32 torch."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from speechprune.deploy.onnx import export_onnx
from speechprune.deploy.runtime import OnnxEncoder, deployed_session
from speechprune.eval.features import FrozenFeatures, clip_batches
from speechprune.folders.target import load_target, read_target
from speechprune.io.synth import speechlike
from helpers.commands import assert_clean_error, cli, fake_gpu
from helpers.data import write_tones
from helpers.models import write_shrunk

RATE = 16000
SHORT = ["--no-per-layer", "--epochs", "20", "--json"]


def relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.fixture
def run_dir(finished_run):
    """The shared finished run of the Large-style tiny wav2vec2."""
    return finished_run("wav2vec2", "large")


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    return write_tones(tmp_path_factory.mktemp("ort-tones"), per_class=4)


@pytest.mark.parametrize("family,style", [("wav2vec2", "base"), ("wavlm", "large")])
def test_ort_features_match_torch_on_padded_batches(family, style, tmp_path):
    """Large style takes the padding mask: clips of three lengths in one padded batch give torch's
    features. Base style batches equal lengths only, in ORT as in torch."""
    folder = write_shrunk(tmp_path / "shrunk", family, style)  # uneven heads, emptied layers
    target = read_target(str(folder))
    net, _, _ = load_target(target, torch.device("cpu"))
    runner, note = deployed_session(target, net, threads=1, hidden_states=True, attention_mask=target.attention_mask)
    assert "fresh" not in note and "ONNX export checked against torch" in note  # no model.onnx in the folder
    ort = OnnxEncoder(runner, net.spec)
    assert ort.takes_mask == (style == "large")
    rng = np.random.default_rng(0)
    clips = [speechlike(seconds, RATE, rng) for seconds in (0.45, 1.1, 0.8, 0.8)]
    settings = dict(attention_mask=target.attention_mask, normalize=target.normalize, sampling_rate=RATE,
                    batch_seconds=10.0)
    groups = [indices for indices, _ in clip_batches(clips, batch_seconds=10.0, sampling_rate=RATE, normalize=True,
                                                     same_length=not target.attention_mask)]
    assert groups == ([[1, 2, 3, 0]] if style == "large" else [[1], [2, 3], [0]])  # padded only with a mask
    expected = FrozenFeatures(net, **settings).pooled(clips)
    got = FrozenFeatures(ort, **settings).pooled(clips)
    assert got.shape == expected.shape == (4, len(net.spec.layers) + 1, net.spec.hidden_size)
    assert relative(got, expected) < 1e-4
    alone = FrozenFeatures(ort, **settings).pooled(clips[:1])  # the padded clip's features are what it gives alone
    assert relative(alone[0], expected[0]) < 1e-4


def test_eval_in_onnxruntime_float32_matches_torch(capsys, model_dir, tones):
    model = model_dir("wav2vec2", "large")  # a stock model fed padding masks: padded batches in ORT
    code, out, err = cli(capsys, "eval", model, "--data", tones, *SHORT)
    assert code == 0, err
    torch_report = json.loads(out)
    code, out, err = cli(capsys, "eval", model, "--data", tones, "--runtime", "onnxruntime", *SHORT)
    assert code == 0, err
    report = json.loads(out)
    assert report["runtime"] == "onnxruntime" and torch_report["runtime"] == "torch"
    assert torch_report["quantization"] is None
    q = report["quantization"]
    assert (q["runtime"], q["scheme"], q["quantized"]) == ("onnxruntime", None, None)
    assert q["graph"] == "ONNX Runtime (CPU) of an ONNX export checked against torch"
    fidelity = q["fidelity"]
    assert len(fidelity["cosine"]) == report["layers"] + 1 and min(fidelity["cosine"]) > 0.99999
    assert max(fidelity["l1"]) < 1e-3 and fidelity["clips"] == report["data"]["test_clips"]
    assert report["probe"]["accuracy"] == torch_report["probe"]["accuracy"]
    np.testing.assert_allclose(report["probe"]["layer_weights"], torch_report["probe"]["layer_weights"], atol=1e-3)
    assert report["passes"]["float32_forward"] >= 1


def test_eval_in_onnxruntime_int8(capsys, tmp_path, tones):
    folder = write_shrunk(tmp_path / "shrunk", "wav2vec2", "base")
    code, out, err = cli(capsys, "eval", folder, "--data", tones, "--runtime", "onnxruntime", "--quantize", "int8",
                         "--no-per-layer", "--epochs", "20")
    assert code == 0, err
    assert "in ONNX Runtime (CPU), quantized (ORT dynamic int8: MatMul nodes" in out and "q.cos" in out
    assert "onnxruntime int8 model's hidden states to the float32 torch model" in out
    assert "graph: ONNX Runtime (CPU) of an ONNX export checked against torch" in out
    code, out, err = cli(capsys, "eval", folder, "--data", tones, "--runtime", "onnxruntime", "--quantize", "int8",
                         *SHORT)
    assert code == 0, err
    q = json.loads(out)["quantization"]
    assert (q["runtime"], q["scheme"]) == ("onnxruntime", "int8")
    assert q["quantized"] == "ORT dynamic int8: MatMul nodes; CNN, positional conv and norms stay float32"
    cosine = q["fidelity"]["cosine"]
    assert all(0.9 < c <= 1 + 1e-6 for c in cosine) and min(cosine) < 0.99999  # float32 ORT: > 0.99999


def test_a_folders_model_onnx_is_used_when_it_has_hidden_states(tmp_path):
    folder = write_shrunk(tmp_path / "shrunk", "hubert", "large")
    target = read_target(str(folder))
    net, _, _ = load_target(target, torch.device("cpu"))
    ask = dict(threads=1, hidden_states=True, attention_mask=True)
    export_onnx(net, folder / "model.onnx", attention_mask=True, sampling_rate=RATE)  # as shrink --onnx writes it
    _, note = deployed_session(target, net, **ask)
    assert note.startswith("the folder's model.onnx lacks the hidden_states output, so a fresh export ran instead")
    export_onnx(net, folder / "model.onnx", attention_mask=True, sampling_rate=RATE, hidden_states=True)
    runner, note = deployed_session(target, net, **ask)
    assert note == "ONNX Runtime (CPU) of the folder's model.onnx, checked against torch"
    assert "hidden_states" in [node.name for node in runner.get_outputs()]


def test_eval_runtime_usage_errors_come_before_loading(capsys, model_dir, run_dir, tones, no_loading,
                                                       monkeypatch, tmp_path):
    stock = model_dir("wav2vec2")
    assert_clean_error(cli(capsys, "eval", stock, "--data", tones, "--runtime", "tensorrt"), 2,
                       "--runtime", "torch, onnxruntime")
    assert_clean_error(cli(capsys, "eval", run_dir, "--data", tones, "--runtime", "onnxruntime"), 2,
                       "prune runs", "shrink")
    out = tmp_path / "report.json"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert_clean_error(cli(capsys, "eval", stock, "--data", tones, "--runtime", "onnxruntime", "--out", out), 1,
                       "onnxruntime", "pip install 'speechprune[onnx]'")
    assert not out.exists()
    monkeypatch.setattr(importlib.util, "find_spec", real)
    fake_gpu(monkeypatch)
    assert_clean_error(cli(capsys, "eval", stock, "--data", tones, "--runtime", "onnxruntime", "--device", "cuda"),
                       2, "--runtime onnxruntime", "CPU", "--device cpu")
    from speechprune.eval.job import EvalOptions, check_options

    assert check_options(EvalOptions(model="m", data="d", runtime="onnxruntime")).type == "cpu"  # auto: the CPU
