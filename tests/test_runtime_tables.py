"""Cost tables for the runtime a model is deployed in (``bench --cost-model --runtime onnxruntime
--quantize int8``): every part runs in ONNX Runtime as torch runs it, the table records its
runtime and the stock model's float32 eager torch time, bench and prune read it and report the
speedup in that runtime and against stock, and combinations that make no sense are refused
before anything loads. No timing is asserted."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from speechprune.bench import cost_model
from speechprune.deploy.runtime import encoder_call, part_call
from speechprune.method.latency import CostTable, predict_ms, stock_speedup
from speechprune.model.encoder import Encoder
from speechprune.model.inference import InferenceConvLayer
from speechprune.model.layers import EncoderLayer, FeatureProjection
from speechprune.prune.records import summary_line
from helpers.commands import assert_clean_error, cli, fake_gpu, run_captured
from helpers.data import synthetic_table, with_steps, write_scores
from helpers.models import tiny_spec

TIMING = ["--warmup", "1", "--repeat", "1", "--min-time", "0", "--threads", "1", "--seconds", "0.5"]
TABLE_TIMING = TIMING[:2] + ["--repeat", "3"] + TIMING[4:]  # a fit of three whole encoders: no single outlier
ORT_INT8 = ["--runtime", "onnxruntime", "--quantize", "int8"]


@pytest.fixture(scope="module")
def ort_table(model_dir, tmp_path_factory):
    """(a cost table of the tiny wav2vec2 measured in ONNX Runtime int8, what bench printed)."""
    path = tmp_path_factory.mktemp("ort-table") / "ort-int8.json"
    code, out, err = run_captured("bench", model_dir("wav2vec2"), "--cost-model", path, *ORT_INT8, *TABLE_TIMING,
                                  "--block-step", "8")
    assert code == 0, err
    return path, out


def test_each_part_runs_in_onnxruntime_as_in_torch():
    """A part's ONNX Runtime call (fixed-shape export) computes what torch computes, optional
    inputs left out (a layer's mask; WavLM's position bias given); int8 stays close."""
    torch.manual_seed(0)
    spec, wavlm = tiny_spec("wav2vec2"), tiny_spec("wavlm")
    frames = 20
    parts = [
        (InferenceConvLayer(spec, 1).eval(), (torch.randn(1, spec.conv_channels[0], 200),)),
        (FeatureProjection(spec).eval(), (torch.randn(1, frames, spec.conv_channels[-1]),)),
        (EncoderLayer(spec, spec.layers[0]).eval(), (torch.randn(1, frames, spec.hidden_size), None, None)),
        (EncoderLayer(wavlm, wavlm.layers[0]).eval(),
         (torch.randn(1, frames, wavlm.hidden_size), None, torch.randn(wavlm.num_heads, frames, frames))),
        (Encoder(spec).eval(), (torch.randn(1, 4000),)),
    ]
    for module, inputs in parts:
        with torch.no_grad():
            expected = module(*inputs)
        expected = getattr(expected, "last_hidden_state", expected)
        expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
        got = part_call(module, inputs, threads=1)()[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1.0), type(module).__name__
        quantized = part_call(module, inputs, threads=1, quantize="int8")()[0]
        cosine = (quantized * expected).sum() / np.linalg.norm(quantized) / np.linalg.norm(expected)
        assert quantized.shape == expected.shape and cosine > 0.9


def test_whole_encoders_run_as_deployed(monkeypatch, model_dir, tmp_path):
    """The table's whole encoders run as export-onnx exports them (a dynamic length, so one graph
    serves another length too), quantized as asked: the fit's scale is of the deployed graph."""
    torch.manual_seed(0)
    encoder = Encoder(tiny_spec("wav2vec2")).eval()
    for length in (4000, 5600):
        audio = torch.randn(1, length)
        with torch.no_grad():
            expected = encoder.encode(audio, None).last_hidden_state.numpy()
        got = encoder_call(encoder, audio, threads=1, quantize=None, sampling_rate=16000)()[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1.0)
    calls = []

    def recording(model, input_values, **options):
        calls.append(options)
        return encoder_call(model, input_values, **options)

    monkeypatch.setattr(cost_model, "encoder_call", recording)
    code, _, err = run_captured("bench", model_dir("wav2vec2"), "--cost-model", tmp_path / "t.json", *ORT_INT8,
                                *TABLE_TIMING, "--block-step", "8")
    assert code == 0, err
    assert [c["quantize"] for c in calls] == ["int8"] * 3  # the encoder at 1, 1/2 and 1/4 of its widths


def test_a_table_measured_in_onnxruntime_int8_records_its_runtime(ort_table):
    path, printed = ort_table
    data = json.loads(path.read_text())
    assert data["format"] == 3
    assert (data["conditions"]["runtime"], data["conditions"]["quantize"], data["conditions"]["dtype"]) == (
        "onnxruntime", "int8", "float32")
    assert data["provenance"]["onnxruntime"] and "TorchScript" in data["provenance"]["exporter"]
    reference = data["reference"]  # the stock model in float32 eager torch, timed in the encoder's rounds
    assert reference["model"] == "stock Wav2Vec2Model, float32, eager torch"
    assert reference["table_dense_ms"] == data["fit"]["encoder"][0]["measured_ms"]
    assert all(reference[key] > 0 for key in ("dense_ms", "table_dense_ms", "table_dense_predicted_ms"))
    assert data["widths"]["steps"]["ffn.units"]["widths"] == list(range(8, 97, 8))  # the steps, measured in ORT
    table = CostTable.read(str(path))
    assert table.runtime == "onnxruntime int8" and table.format == 3
    assert reference["table_dense_predicted_ms"] == pytest.approx(predict_ms(table, tiny_spec()), abs=1e-3)
    assert table.stock_speedup(reference["table_dense_predicted_ms"]) == pytest.approx(
        reference["dense_ms"] / reference["table_dense_ms"], rel=1e-3)
    assert "in onnxruntime int8" in printed and "stock Wav2Vec2Model" in printed
    assert "the fit's shapes timed twice, the faster kept" in printed
    assert f"all {data['provenance']['passes']['shapes']} shapes" in printed


def test_a_table_in_torch_int8_records_its_quantization(model_dir, tmp_path):
    path = tmp_path / "torch-int8.json"
    code, out, err = run_captured("bench", model_dir("hubert"), "--cost-model", path, "--quantize", "int8", *TABLE_TIMING,
                                  "--block-step", "1000", "--json")
    assert code == 0, err
    data = json.loads(path.read_text())
    assert (data["conditions"]["runtime"], data["conditions"]["quantize"]) == ("torch", "int8")
    assert "onnxruntime" not in data["provenance"] and data["reference"]["model"] == "stock HubertModel, float32, eager torch"
    assert all(len(sweep["widths"]) == 1 for sweep in data["widths"]["steps"].values())  # one block: the dense width
    assert CostTable.read(str(path)).runtime == "torch int8"


def test_bench_predicts_in_the_tables_runtime_and_refuses_another(ort_table, model_dir):
    path, _ = ort_table
    model = str(model_dir("wav2vec2"))
    table = CostTable.read(str(path))
    code, out, err = run_captured("bench", model, "--baseline", model, "--latency-table", path, *ORT_INT8, *TIMING,
                                  "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == 3
    reference = report["latency_reference"]
    assert reference["runtime"] == "onnxruntime int8" and reference["stock_dense_ms"] == table.reference["dense_ms"]
    assert reference["dense_ms"] == table.reference["table_dense_ms"]
    baseline, tested = report["results"]
    assert baseline["predicted_ms"] is None  # the baseline runs in torch float32: not the table's runtime
    assert tested["predicted_ms"] == pytest.approx(predict_ms(table, tiny_spec()))
    assert tested["predicted_speedup_vs_stock"] == pytest.approx(table.stock_speedup(tested["predicted_ms"]))

    # the dense model as the baseline in the table's runtime: speedups against what --speedup targets
    code, out, err = run_captured("bench", model, "--baseline", model, "--latency-table", path, *ORT_INT8, *TIMING,
                                  "--baseline-runtime", "onnxruntime", "--baseline-quantize", "int8", "--json")
    assert code == 0, err
    baseline, tested = json.loads(out)["results"]
    assert baseline["predicted_ms"] == tested["predicted_ms"] == pytest.approx(predict_ms(table, tiny_spec()))

    for args, words in (([], ["runtime onnxruntime", "torch"]),
                        (["--runtime", "onnxruntime"], ["quantize int8", "none"])):
        assert_clean_error(run_captured("bench", model, "--latency-table", path, *args, *TIMING), 2, *words)


def _ort_table(spec) -> CostTable:
    """A synthetic table of format 3: ONNX Runtime int8, its dense model 4x faster than stock."""
    table = with_steps(synthetic_table(spec, runtime="onnxruntime", quantize="int8"), {"ffn.units": {96: 1.0}})
    dense = predict_ms(table, spec)
    return replace(table, reference={"model": "stock Wav2Vec2Model, float32, eager torch", "dense_ms": 4 * dense,
                                     "table_dense_ms": dense, "table_dense_predicted_ms": dense})


def test_prune_targets_the_runtime_table_and_reports_both_speedups(model_dir, audio_dir, tmp_path):
    model, spec = model_dir("wav2vec2"), tiny_spec()
    table = _ort_table(spec)
    table.write(tmp_path / "t.json")
    write_scores(tmp_path / "scores.json", model)
    code, stdout, stderr = run_captured("prune", model, "--data", audio_dir, "--out", tmp_path / "run", "--json",
                                        "--device", "cpu", "--steps", "0", "--crop-seconds", "1.5", "--batch-seconds",
                                        "3", "--scores", tmp_path / "scores.json",
                                        "--latency-table", tmp_path / "t.json", "--speedup", "1.5")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["within_tolerance"] and summary["predicted_runtime"] == "onnxruntime int8"
    assert summary["predicted_speedup"] == pytest.approx(1.5, rel=0.006)
    assert summary["predicted_ms_dense"] == pytest.approx(predict_ms(table, spec), abs=1e-3)
    assert summary["stock_ms_dense"] == table.reference["dense_ms"]
    assert summary["predicted_speedup_vs_stock"] == pytest.approx(4 * summary["predicted_speedup"], rel=1e-3)
    line = summary_line(summary)
    assert "in onnxruntime int8 (speedup 1.5" in line and "against stock float32 eager torch" in line
    record = json.loads((tmp_path / "run" / "config.json").read_text())["budgets"]["latency"]
    assert record["conditions"]["runtime"] == "onnxruntime" and record["reference"] == table.reference


def test_older_tables_are_eager_torch_without_a_reference(tmp_path):
    spec = tiny_spec()
    older = with_steps(synthetic_table(spec), {"ffn.units": {96: 1.0}})  # format 2
    older.write(tmp_path / "t.json")
    again = CostTable.read(str(tmp_path / "t.json"))
    assert again.format == 2 and again.runtime == "torch float32" and again.stock_speedup(1.0) is None
    assert again.sha256 == older.sha256 and "runtime" not in json.loads((tmp_path / "t.json").read_text())["conditions"]
    assert stock_speedup(None, 1.0) is None
    damaged = _ort_table(spec).to_dict()
    damaged["reference"]["dense_ms"] = -1
    with pytest.raises(ValueError, match="reference.dense_ms"):
        CostTable.from_dict(damaged)
    with pytest.raises(ValueError, match="conditions.runtime"):
        CostTable.from_dict({**_ort_table(spec).to_dict(), "conditions": {**damaged["conditions"], "runtime": "tvm"}})


@pytest.mark.parametrize("args,words", [
    (["--runtime", "onnxruntime", "--dtype", "bfloat16"], ["--dtype bfloat16", "drop --dtype"]),
    (["--quantize", "int8", "--dtype", "bfloat16"], ["--quantize", "drop --dtype"]),
    (["--runtime", "onnxruntime", "--device", "cuda"], ["--runtime onnxruntime", "--device cpu"]),
    (["--quantize", "int8", "--device", "cuda"], ["--quantize int8", "--device cpu"]),
])
def test_runtime_tables_refuse_what_makes_no_sense(capsys, monkeypatch, model_dir, tmp_path, no_loading, args, words):
    fake_gpu(monkeypatch)  # a GPU here: the refusal is for ONNX Runtime and int8, not for a missing device
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    result = cli(capsys, "bench", model_dir("wav2vec2"), "--cost-model", tmp_path / "t.json", *args)
    assert_clean_error(result, 2, *words)
    assert not (tmp_path / "t.json").exists()
