"""`export-onnx --quantize int8|int8-static`: the quantized graph a user deploys, written as bench
quantizes it, kept only when its hidden states stay close to torch float32 (`deploy.quantized_export`),
and never taken by bench or eval for a folder's float32 model.onnx."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

import speechprune.deploy.quantized_export as quantized_export
from speechprune.deploy.calibration import read_calibration
from speechprune.deploy.onnx import export_onnx
from speechprune.deploy.quantize import quantize_onnx
from speechprune.deploy.quantized_export import COSINE_FLOOR, export_quantized
from speechprune.deploy.sessions import quantized_scheme, session
from speechprune.errors import ExportError
from speechprune.folders.target import load_target, read_target
from speechprune.io.audio import scan_audio
from helpers.commands import assert_clean_error, cli
from helpers.data import speech_input
from helpers.models import shrunk_encoder, write_shrunk

FAST_BENCH = ["--device", "cpu", "--warmup", "0", "--repeat", "1", "--min-time", "0", "--seconds", "0.5", "--json"]


def exported(capsys, *args) -> dict:
    code, out, err = cli(capsys, "export-onnx", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def torch_outputs(folder, waveforms: torch.Tensor, mask: torch.Tensor | None):
    """(last_hidden_state, hidden states stacked) of the folder's model in torch float32."""
    model, _, _ = load_target(read_target(str(folder)), torch.device("cpu"))
    with torch.no_grad():
        out = model.encode(waveforms, mask)
    return out.last_hidden_state.numpy(), torch.stack(out.hidden_states).numpy()


def test_int8_export_is_smaller_runs_at_another_length_and_reports_its_check(capsys, model_dir, tmp_path):
    stock = model_dir("wav2vec2")
    float32 = exported(capsys, stock, "--out", tmp_path / "float32.onnx")
    assert (float32["quantize"], float32["quantization"], float32["cosine"], float32["calibration"]) == (None,) * 4
    assert float32["max_relative_error"] < 1e-4 and float32["outputs"] == ["last_hidden_state"]

    report = exported(capsys, stock, "--out", tmp_path / "int8.onnx", "--quantize", "int8")
    assert report["path"] == str(tmp_path / "int8.onnx") and report["kind"] == "stock"
    assert report["quantize"] == "int8" and report["quantization"].startswith("ORT dynamic int8: MatMul")
    cosine = report["cosine"]
    assert cosine["floor"] == COSINE_FLOOR["int8"] < cosine["min"] <= cosine["mean"] < 1 - 1e-6  # close, not float32
    assert 1e-4 < report["max_relative_error"] < 0.5 and report["calibration"] is None
    assert report["bytes"] == (tmp_path / "int8.onnx").stat().st_size < 0.8 * float32["bytes"]  # int8 MatMul weights

    runner = session(tmp_path / "int8.onnx", threads=1)
    assert quantized_scheme(runner) == "int8" and quantized_scheme(session(tmp_path / "float32.onnx", 1)) is None
    assert "MatMulInteger" in {node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    waveforms = torch.cat([speech_input(0.8, seed=4), speech_input(0.8, seed=5)])  # another length than the check's
    (got,) = runner.run(None, {"input_values": waveforms.numpy()})
    expected, _ = torch_outputs(stock, waveforms, None)
    assert got.shape == expected.shape
    assert (got * expected).sum() / np.linalg.norm(got) / np.linalg.norm(expected) > COSINE_FLOOR["int8"]


def test_int8_static_export_is_bench_s_graph_with_hidden_states(capsys, audio_dir, tmp_path):
    """The default file beside the float32 model.onnx, calibrated as bench calibrates (the same
    clips, the same graph), with the padding mask and hidden states of a Large-style model."""
    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "large")
    before = sorted(path.name for path in model.iterdir())
    report = exported(capsys, model, "--quantize", "int8-static", "--data", audio_dir, "--seed", "3", "--hidden-states")
    written = model / "model.int8-static.onnx"
    assert report["path"] == str(written)
    assert sorted(path.name for path in model.iterdir()) == sorted(before + [written.name])  # no model.onnx either
    assert report["inputs"] == ["input_values", "attention_mask"]
    assert report["outputs"] == ["last_hidden_state", "hidden_states"]
    assert report["calibration"] == {"data": str(audio_dir), "seed": 3, "clips": 12}  # every file of 12 (16 at most)
    assert report["cosine"]["mean"] > COSINE_FLOOR["int8-static"] and report["quantization"].startswith("ORT static")

    target = read_target(str(model))
    net, _, _ = load_target(target, torch.device("cpu"))
    export_onnx(net, tmp_path / "float32.onnx", attention_mask=True, sampling_rate=16000, hidden_states=True)
    clips = read_calibration(scan_audio(audio_dir), sampling_rate=16000, normalize=target.normalize, seed=3)
    quantize_onnx(tmp_path / "float32.onnx", tmp_path / "bench.onnx", "int8-static", clips)  # as bench quantizes it
    waveforms = torch.cat([speech_input(1.1, seed=6), speech_input(1.1, seed=7)])
    mask = torch.ones(waveforms.shape, dtype=torch.long)
    mask[1, 9000:] = 0
    fed = {"input_values": waveforms.numpy(), "attention_mask": mask.numpy()}
    ours, bench = session(written, 1).run(None, fed), session(tmp_path / "bench.onnx", 1).run(None, fed)
    assert all(np.array_equal(a, b) for a, b in zip(ours, bench))
    last, states = torch_outputs(model, waveforms, mask)
    assert ours[0].shape == last.shape and ours[1].shape == states.shape  # (B, T', D), (L + 1, B, T', D)
    assert quantized_scheme(session(written, 1)) == "int8-static"

    assert_clean_error(cli(capsys, "export-onnx", model, "--quantize", "int8-static", "--data", audio_dir), 2,
                       "exists", "--overwrite")
    again = exported(capsys, model, "--quantize", "int8-static", "--data", audio_dir, "--seed", "3", "--hidden-states",
                     "--overwrite")
    assert again["cosine"] == report["cosine"]


def test_a_graph_that_does_not_compute_the_model_is_not_written(capsys, tmp_path, monkeypatch):
    """A graph of other weights (the same architecture, quantized) falls far below the floor:
    exit 1, and neither the file nor a temporary is left."""
    other = shrunk_encoder("wav2vec2", "base", seed=1)
    export_onnx(other, tmp_path / "other.onnx", attention_mask=False, sampling_rate=16000)
    def other_graph(source, target, scheme, calibration):  # the other weights' graph, in the place of the model's
        quantize_onnx(tmp_path / "other.onnx", target, scheme)

    monkeypatch.setattr(quantized_export, "quantize_onnx", other_graph)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match="mean cosine of -?0[.][01]"):
        export_quantized(shrunk_encoder("wav2vec2", "base"), out / "q.onnx", "int8", None, attention_mask=False,
                         sampling_rate=16000)
    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "base")
    result = cli(capsys, "export-onnx", model, "--quantize", "int8", "--out", out / "q.onnx")
    assert_clean_error(result, 1, "int8 graph", "floor 0.99", "nothing was written", only_line=False)
    assert list(out.iterdir()) == []


def test_bench_never_runs_a_quantized_model_onnx_as_the_float32_graph(capsys, tmp_path):
    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "base")
    assert_clean_error(cli(capsys, "export-onnx", model, "--quantize", "int8", "--out", model / "model.onnx"), 2,
                       "float32 graph", "model.int8.onnx")
    exported(capsys, model, "--quantize", "int8")
    shutil.copy(model / "model.int8.onnx", model / "model.onnx")  # put where the float32 export belongs
    code, out, err = cli(capsys, "bench", model, "--runtime", "onnxruntime", *FAST_BENCH)
    assert code == 0, err
    note = json.loads(out)["models"][0]["note"]
    assert "model.onnx is quantized (int8, export-onnx --quantize)" in note and "a fresh export ran instead" in note


@pytest.mark.parametrize("args,code,words", [
    (["--quantize", "int4"], 2, ["--quantize must be one of int8, int8-static", "int4"]),
    (["--quantize", "int8-static"], 2, ["--quantize int8-static", "pass --data"]),
    (["--data", "AUDIO"], 2, ["--data", "--quantize int8-static", "drop it"]),
    (["--quantize", "int8", "--data", "AUDIO"], 2, ["--data", "--quantize int8-static", "drop it"]),
    (["--quantize", "int8-static", "--data", "AUDIO", "--seed", "-1"], 2, ["--seed", "at least 0"]),
    (["--quantize", "int8-static", "--data", "MISSING"], 1, ["MISSING", "does not exist"]),
    (["--quantize", "int8-static", "--data", "AUDIO", "--out", "AUDIO/q.onnx"], 2, ["lies inside --data"]),
])
def test_options_are_checked_before_weights_load(capsys, model_dir, audio_dir, tmp_path, no_loading, args, code, words):
    def placed(text: str) -> str:  # AUDIO and MISSING: the generated audio, and a folder that is not there
        return text.replace("AUDIO", str(audio_dir)).replace("MISSING", str(tmp_path / "missing"))

    args, words = [placed(arg) for arg in args], [placed(word) for word in words]
    model = model_dir("wav2vec2")
    before = sorted(path.name for path in model.iterdir())
    assert_clean_error(cli(capsys, "export-onnx", model, *args), code, *words)
    assert sorted(path.name for path in model.iterdir()) == before and not (audio_dir / "q.onnx").exists()
