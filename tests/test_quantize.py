"""Shrunk models compose with torch's dynamic int8 quantization and torch.compile; `bench` and
`eval` with --quantize int8."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModel

import speechprune
from speechprune.model.loading import quiet_transformers
from helpers.commands import assert_clean_error, cli, fake_gpu
from helpers.data import speech_input, write_tones
from helpers.models import build_model, encoder_from, shrunk_encoder, write_shrunk

FAST = ["--device", "cpu", "--warmup", "0", "--repeat", "1", "--min-time", "0", "--seconds", "0.5"]

# Base's widths (768 wide, 12 heads of 64, 3072 FFN units, 512 CNN channels) in 4 layers
BASE_SHAPE = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=4,
                  conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


@pytest.mark.parametrize("family,style", [("wav2vec2", "base"), ("hubert", "large"), ("wavlm", "large")])
def test_dynamic_int8_through_both_loaders(family, style, tmp_path):
    folder = write_shrunk(tmp_path / "model", family, style, **BASE_SHAPE)
    spec = speechprune.load(folder).spec
    assert spec.layers[0].qk_dims is not None and spec.layers[1].heads == [] and spec.layers[3].ffn_dim == 0
    waveforms = speech_input()
    with quiet_transformers():
        remote = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    for model in (speechprune.load(folder), remote):
        with torch.no_grad():
            expected = model(waveforms).last_hidden_state
            quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
            assert type(quantized.encoder.layers[0].attention.q_proj) is not nn.Linear
            got = quantized(waveforms).last_hidden_state
        cosine = nn.functional.cosine_similarity(got, expected, dim=-1)  # (1, T')
        assert cosine.min() > 0.99


def test_fullgraph_compile_of_uneven_heads():
    small = shrunk_encoder("wavlm", "large")
    assert small.encoder.layers[0].attention.slots["qk"] is not None
    waveforms = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(small, fullgraph=True, backend="eager")  # graph capture is what is checked here
    with torch.no_grad():
        expected = small(waveforms).last_hidden_state
        torch._dynamo.reset()
        assert (compiled(waveforms).last_hidden_state - expected).abs().max() < 1e-5


def test_dense_layers_run_without_padding():
    dense = encoder_from(build_model("wav2vec2", "base"), "wav2vec2")
    for layer in dense.encoder.layers:
        assert set(layer.attention.slots.values()) == {None}


# ---------------------------------------------------------------- bench and eval --quantize int8


@pytest.fixture(scope="module")
def tiny_shrunk(tmp_path_factory) -> Path:
    return write_shrunk(tmp_path_factory.mktemp("quantize") / "shrunk", "wav2vec2", "base")


def test_bench_quantizes_the_models_under_test(capsys, tiny_shrunk, model_dir):
    code, out, err = cli(capsys, "bench", tiny_shrunk, "--baseline", model_dir("wav2vec2"), "--quantize", "int8",
                         *FAST, "--json")
    assert code == 0, err
    report = json.loads(out)
    baseline, model = report["models"]
    assert (baseline["quantize"], baseline["quantization"]) == (None, None)
    assert model["quantize"] == "int8" and model["label"] == "shrunk [int8]"
    assert model["quantization"] == "dynamic int8: nn.Linear layers; CNN, positional conv and norms stay float32"
    assert model["params"] == sum(p.numel() for p in speechprune.load(tiny_shrunk).parameters())
    assert [r["model"] for r in report["results"]] == [baseline["label"], "shrunk [int8]"]
    assert report["results"][1]["speedup"] > 0


def test_bench_quantizes_the_baseline_when_asked(capsys, tiny_shrunk, model_dir):
    code, out, err = cli(capsys, "bench", tiny_shrunk, "--baseline", model_dir("wav2vec2"),
                         "--baseline-quantize", "int8", *FAST)
    assert code == 0, err
    assert "(baseline)" in out and "[int8] (baseline)" in out and "dynamic int8: nn.Linear layers" in out


@pytest.mark.parametrize("args,words", [
    (["--quantize", "int4"], ["--quantize", "int8", "'int4'"]),
    (["--baseline-quantize", "int8"], ["--baseline-quantize", "needs a --baseline"]),
    (["--quantize", "int8", "--dtype", "bfloat16"], ["--quantize", "float32", "--dtype bfloat16"]),
    (["--quantize", "int8", "--compile"], ["--compile", "quantized"]),
])
def test_bench_quantize_option_errors(capsys, tiny_shrunk, no_loading, args, words):
    assert_clean_error(cli(capsys, "bench", tiny_shrunk, "--device", "cpu", *args), 2, *words)


def test_quantize_on_a_gpu_is_a_usage_error(capsys, tiny_shrunk, no_loading, monkeypatch, tmp_path):
    fake_gpu(monkeypatch)
    result = cli(capsys, "bench", tiny_shrunk, "--device", "cuda", "--quantize", "int8")
    assert_clean_error(result, 2, "--quantize int8", "CPU only", "--device cpu")
    tones = write_tones(tmp_path / "tones", per_class=2)
    result = cli(capsys, "eval", tiny_shrunk, "--data", tones, "--device", "cuda", "--quantize", "int8")
    assert_clean_error(result, 2, "--quantize int8", "CPU only")
    result = cli(capsys, "eval", tiny_shrunk, "--data", tones, "--quantize", "int4")
    assert_clean_error(result, 2, "--quantize must be one of int8")


def test_the_default_device_runs_quantized_models_on_the_cpu(monkeypatch):
    """--device auto is the GPU, but the CPU when the options run only there: the default never
    refuses --quantize or --runtime onnxruntime."""
    from speechprune.bench.job import BenchOptions, check_options as check_bench
    from speechprune.eval.job import EvalOptions, check_options as check_eval

    fake_gpu(monkeypatch)
    assert check_bench(BenchOptions(models=["m"])).type == "cuda"
    assert check_eval(EvalOptions(model="m", data="d")).type == "cuda"
    for options in (dict(quantize="int8"), dict(baseline="b", baseline_quantize="int8"), dict(runtime="onnxruntime")):
        assert check_bench(BenchOptions(models=["m"], **options)).type == "cpu", options
    assert check_eval(EvalOptions(model="m", data="d", quantize="int8")).type == "cpu"


@pytest.mark.parametrize("kind", ["shrunk", "stock", "run"])
def test_eval_probes_the_quantized_model(capsys, tiny_shrunk, model_dir, finished_run, tmp_path, kind):
    model = {"shrunk": lambda: tiny_shrunk, "stock": lambda: model_dir("wav2vec2", "large"),
             "run": lambda: finished_run("wav2vec2", "large")}[kind]()  # a run: quantized with its masks
    tones = write_tones(tmp_path / "tones", per_class=4)
    code, out, err = cli(capsys, "eval", model, "--data", tones, "--quantize", "int8", "--no-per-layer",
                         "--epochs", "20", "--json")
    assert code == 0, err
    report = json.loads(out)
    quantization = report["quantization"]
    assert quantization["scheme"] == "int8" and quantization["quantized"].startswith("dynamic int8")
    fidelity = quantization["fidelity"]
    assert len(fidelity["cosine"]) == len(fidelity["cka"]) == report["layers"] + 1
    assert all(0.9 < c <= 1.0 + 1e-6 for c in fidelity["cosine"]) and fidelity["cosine"][0] < 1.0
    assert fidelity["clips"] == report["data"]["test_clips"] and fidelity["frames"] > 0
    assert report["passes"]["float32_forward"] >= 1 and 0 <= report["probe"]["accuracy"] <= 1
    code, out, err = cli(capsys, "eval", model, "--data", tones, "--quantize", "int8", "--no-per-layer",
                         "--epochs", "20")
    assert code == 0 and "quantized (dynamic int8" in out and "q.cos" in out, err
