"""ONNX export (dynamic batch and time, checked with ONNX Runtime before it is kept), the
`export-onnx` command, `shrink --onnx` and `bench --runtime onnxruntime`."""

import importlib.util
import json

import numpy as np
import pytest
import torch

import speechprune.deploy.onnx as onnx_export
from speechprune.deploy.onnx import export_onnx
from speechprune.deploy.sessions import session
from helpers.commands import assert_clean_error, cli
from helpers.data import speech_input
from helpers.models import ALL_KINDS, shrunk_encoder, write_shrunk


@pytest.fixture
def pruned_run(finished_run):
    """The shared finished run of the tiny WavLM Large (the hardest family: position bias, pre-LN, conv LayerNorms)."""
    return finished_run("wavlm", "large")


def relative_error(got: np.ndarray, expected: torch.Tensor) -> float:
    return float(np.abs(got - expected.numpy()).max() / expected.abs().max())


@pytest.mark.parametrize("family,style", ALL_KINDS)
def test_shrunk_models_of_every_family_run_in_onnxruntime(family, style, tmp_path):
    small = shrunk_encoder(family, style)
    masked = style == "large"  # Large-style models take padding masks
    written = export_onnx(small, tmp_path / "model.onnx", attention_mask=masked, sampling_rate=16000)
    assert written["inputs"] == (["input_values", "attention_mask"] if masked else ["input_values"])
    assert written["max_relative_error"] < 1e-4
    waveforms = torch.cat([speech_input(1.7, seed=2), speech_input(1.7, seed=3)])  # another batch and length than the export's
    inputs = {"input_values": waveforms}
    if masked:
        inputs["attention_mask"] = torch.ones(2, waveforms.shape[1], dtype=torch.long)
        inputs["attention_mask"][1, 15000:] = 0
        waveforms[1, 15000:] = 0
    with torch.no_grad():
        expected = small(waveforms, inputs.get("attention_mask")).last_hidden_state
    got = session(tmp_path / "model.onnx", threads=1).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    assert relative_error(got, expected) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "RELATIVE_LIMIT", 0.0)
    with pytest.raises(onnx_export.ExportError, match="differs from the torch model"):
        export_onnx(shrunk_encoder("hubert", "base"), tmp_path / "model.onnx", attention_mask=False, sampling_rate=16000)
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_command_on_a_stock_model_with_hidden_states(capsys, model_dir, tmp_path):
    out = tmp_path / "stock.onnx"
    code, stdout, err = cli(capsys, "export-onnx", model_dir("wavlm", "large"), "--out", out, "--hidden-states", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["kind"] == "stock" and report["family"] == "wavlm" and report["path"] == str(out)
    assert report["inputs"] == ["input_values", "attention_mask"]
    assert report["outputs"] == ["last_hidden_state", "hidden_states"] and report["max_relative_error"] < 1e-4
    waveforms = speech_input(0.8)
    outputs = session(out, threads=1).run(None, {"input_values": waveforms.numpy(),
                                                 "attention_mask": np.ones(waveforms.shape, dtype=np.int64)})
    assert outputs[1].shape[0] == 4 and outputs[1].shape[1:] == outputs[0].shape  # (L + 1, B, T', D)
    assert_clean_error(cli(capsys, "export-onnx", model_dir("wavlm", "large"), "--out", out), 2, "--overwrite")


def test_shrink_onnx_writes_a_checked_model_onnx(capsys, pruned_run, tmp_path):
    out = tmp_path / "model"
    code, stdout, err = cli(capsys, "shrink", pruned_run, "--out", out, "--onnx", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["onnx"]["file"] == "model.onnx" and report["onnx"]["max_relative_error"] < 1e-4
    assert report["onnx"]["inputs"] == ["input_values", "attention_mask"]  # a Large-style WavLM
    assert (out / "model.onnx").is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bench_times_onnxruntime_against_the_torch_baseline(capsys, model_dir, tmp_path):
    shrunk = write_shrunk(tmp_path / "shrunk", "wav2vec2", "base")
    code, stdout, err = cli(capsys, "bench", shrunk, "--baseline", model_dir("wav2vec2"), "--runtime", "onnxruntime",
                            "--quantize", "int8", "--device", "cpu", "--warmup", "0", "--repeat", "1", "--min-time", "0",
                            "--seconds", "0.5", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    baseline, model = report["models"]
    assert (baseline["runtime"], baseline["quantize"]) == ("torch", None)
    assert (model["runtime"], model["quantize"], model["label"]) == ("onnxruntime", "int8", "shrunk [onnxruntime int8]")
    assert model["quantization"].startswith("ORT dynamic int8: MatMul")
    assert "ONNX Runtime" in model["note"] and report["results"][1]["speedup"] > 0


def test_bench_times_the_baseline_in_onnxruntime_when_asked(capsys, model_dir, tmp_path):
    shrunk = write_shrunk(tmp_path / "shrunk", "wav2vec2", "base")
    code, stdout, err = cli(capsys, "bench", shrunk, "--baseline", model_dir("wav2vec2"), "--runtime", "onnxruntime",
                            "--quantize", "int8", "--baseline-runtime", "onnxruntime", "--baseline-quantize", "int8",
                            "--device", "cpu", "--warmup", "0", "--repeat", "1", "--min-time", "0", "--seconds", "0.5",
                            "--json")
    assert code == 0, err
    report = json.loads(stdout)
    baseline, model = report["models"]
    assert (baseline["runtime"], baseline["quantize"]) == ("onnxruntime", "int8")
    assert baseline["label"] == report["baseline"] and baseline["label"].endswith(" [onnxruntime int8] (baseline)")
    assert "ONNX Runtime" in baseline["note"] and baseline["quantization"].startswith("ORT dynamic int8")
    assert report["results"][0]["speedup"] == 1.0 and report["results"][1]["speedup"] > 0


@pytest.mark.parametrize("args,words", [
    (["--runtime", "tensorrt"], ["--runtime", "torch, onnxruntime"]),
    (["--baseline", "b", "--baseline-runtime", "tensorrt"], ["--baseline-runtime", "torch, onnxruntime"]),
    (["--baseline-runtime", "onnxruntime"], ["--baseline-runtime", "name a --baseline"]),
    (["--baseline", "b", "--baseline-runtime", "onnxruntime", "--compile"], ["--compile", "--baseline-runtime"]),
    (["--runtime", "onnxruntime", "--dtype", "bfloat16"], ["--dtype", "onnxruntime"]),
    (["--runtime", "onnxruntime", "--compile"], ["--compile", "onnxruntime"]),
    (["--runtime", "onnxruntime", "--breakdown"], ["--breakdown", "onnxruntime"]),
])
def test_bench_runtime_option_errors(capsys, model_dir, no_loading, args, words):
    assert_clean_error(cli(capsys, "bench", model_dir("wav2vec2"), "--device", "cpu", *args), 2, *words)


def test_onnx_errors_before_loading(capsys, model_dir, pruned_run, tmp_path, no_loading, monkeypatch):
    stock = model_dir("wav2vec2")
    assert_clean_error(cli(capsys, "export-onnx", pruned_run, "--out", tmp_path / "x.onnx"), 2, "prune run", "shrink")
    assert_clean_error(cli(capsys, "export-onnx", stock, "--out", tmp_path / "no" / "x.onnx"), 2, "does not exist")
    assert_clean_error(cli(capsys, "export-onnx", "someone/model"), 2, "--out")
    assert_clean_error(cli(capsys, "bench", pruned_run, "--runtime", "onnxruntime", "--device", "cpu"), 2,
                       "prune runs", "shrink")
    assert_clean_error(cli(capsys, "bench", stock, "--baseline", pruned_run, "--baseline-runtime", "onnxruntime",
                           "--device", "cpu"), 2, "--baseline-runtime onnxruntime", "prune runs", "shrink")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    for argv in (["export-onnx", stock, "--out", tmp_path / "x.onnx"],
                 ["bench", stock, "--runtime", "onnxruntime", "--device", "cpu"],
                 ["shrink", pruned_run, "--out", tmp_path / "m", "--onnx"]):
        assert_clean_error(cli(capsys, *argv), 1, "onnxruntime", "pip install 'speechprune[onnx]'")
    assert list(tmp_path.iterdir()) == []


def test_quantizing_a_folders_model_onnx_writes_nothing_into_the_folder(capsys, pruned_run, tmp_path):
    """int8 of the folder's own export is made in a temporary folder: the model folder stays as it was."""
    out = tmp_path / "model"
    code, _, err = cli(capsys, "shrink", pruned_run, "--out", out, "--onnx")
    assert code == 0, err
    before = sorted(path.name for path in out.iterdir())
    code, stdout, err = cli(capsys, "bench", out, "--runtime", "onnxruntime", "--quantize", "int8", "--device", "cpu",
                            "--warmup", "0", "--repeat", "1", "--min-time", "0", "--seconds", "0.5", "--json")
    assert code == 0, err
    assert "the folder's model.onnx, checked against torch" in json.loads(stdout)["models"][0]["note"]
    assert sorted(path.name for path in out.iterdir()) == before


def test_bench_reuses_a_folders_model_onnx_only_while_it_matches_the_weights(capsys, pruned_run, tmp_path):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "model"
    code, _, err = cli(capsys, "shrink", pruned_run, "--out", out, "--onnx")
    assert code == 0, err

    def bench_note() -> str:
        code, stdout, err = cli(capsys, "bench", out, "--runtime", "onnxruntime", "--device", "cpu", "--warmup", "0",
                                "--repeat", "1", "--min-time", "0", "--seconds", "0.5", "--json")
        assert code == 0, err
        return json.loads(stdout)["models"][0]["note"]

    # a Large-style WavLM: the graph takes a padding mask too, fed as ones
    assert "the folder's model.onnx, checked against torch" in bench_note()
    weights = load_file(out / "model.safetensors")
    name = next(k for k in weights if k.endswith("feature_projection.projection.weight"))
    weights[name] = weights[name] * 1.5  # the weights changed after the export
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    note = bench_note()
    assert "differs from its weights" in note and "fresh export" in note
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), out / "model.onnx")
    assert_clean_error(cli(capsys, "bench", out, "--runtime", "onnxruntime", "--device", "cpu", "--seconds", "0.5"),
                       1, "not an export of speechprune's", "export-onnx", only_line=False)  # after "loading"


def test_sessions_do_not_spin_between_calls(tmp_path):
    """bench times several sessions and torch models in turn: a session's idle threads must
    not hold the cores the next model needs."""
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "identity.onnx")
    options = session(tmp_path / "identity.onnx", threads=2).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
