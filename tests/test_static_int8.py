"""`--quantize int8-static`: ONNX Runtime's static int8 of the convolutions, calibrated on audio
(`deploy.calibration`), with the MatMul nodes dynamic; through `bench` and `eval` in ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest
import torch

from speechprune.deploy.calibration import CLIPS, calibration_clips, read_calibration
from speechprune.deploy.onnx import export_onnx
from speechprune.deploy.quantize import quantize_onnx
from speechprune.deploy.sessions import session
from speechprune.folders.target import load_target, read_target
from speechprune.io.audio import load_audio, scan_audio
from speechprune.io.batches import normalized
from speechprune.io.synth import speechlike, write_corpus
from helpers.commands import assert_clean_error, cli
from helpers.data import write_tones
from helpers.models import write_shrunk

RATE = 16000
FAST = ["--device", "cpu", "--warmup", "0", "--repeat", "1", "--min-time", "0", "--seconds", "0.5"]
# The least cosine to float32 of a tiny random model's hidden states (mean over frames), by style.
# Measured: 0.9994 for the Large style, whose LayerNorm after every conv bounds what the next conv
# reads (the trained CTC teacher of the quality benchmark, Large style too: 0.9998); 0.876 for the
# Base style, whose random convs feed each other unnormalised through GELU (each conv costs 0.02 to
# 0.05). A broken calibration (ranges of other audio, or of none) falls far below either.
MIN_COSINE = {"large": 0.99, "base": 0.8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """More files than calibration takes, so that the seed chooses among them."""
    folder = tmp_path_factory.mktemp("calibration")
    write_corpus(folder, n_files=CLIPS + 8, seconds=(1.0, 5.0), seed=3)
    return folder


def exported(folder, style, tmp_path):
    """(the float32 graph with hidden states of a tiny shrunk model, the target, takes_mask)."""
    model = write_shrunk(folder, "wav2vec2", style)
    target = read_target(str(model))
    net, _, _ = load_target(target, torch.device("cpu"))
    path = tmp_path / f"{style}.onnx"
    export_onnx(net, path, attention_mask=target.attention_mask, sampling_rate=RATE, hidden_states=True)
    return path, target


def cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per hidden state: the cosine of each frame, (L + 1, B, T', D) -> (L + 1,), mean over frames."""
    dot = (got * expected).sum(-1)
    return (dot / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)).mean(axis=(1, 2))


@pytest.mark.parametrize("style", ["base", "large"])
def test_static_int8_quantizes_the_convolutions_but_the_first(style, corpus, tmp_path):
    source, target = exported(tmp_path / "shrunk", style, tmp_path)
    clips = read_calibration(scan_audio(corpus), sampling_rate=RATE, normalize=target.normalize, seed=0)
    quantized = tmp_path / "static.onnx"
    quantize_onnx(source, quantized, "int8-static", clips)

    graph = onnx.load(str(quantized)).graph
    made_by = {output: node for node in graph.node for output in node.output}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    assert len(convolutions) == 8  # 7 CNN layers and the positional convolution
    dequantized = [[name in made_by and made_by[name].op_type == "DequantizeLinear" for name in node.input[:2]]
                   for node in convolutions]  # (input, weights) of each: made by a DequantizeLinear node?
    assert dequantized == [[False, False]] + [[True, True]] * 7  # input and weights in QDQ but the waveform's conv
    kinds = {node.op_type for node in graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= kinds  # the Linear layers: dynamic int8

    rng = np.random.default_rng(5)  # other audio than the calibration's
    inputs = {"input_values": normalized(np.stack([speechlike(2.0, RATE, rng) for _ in range(2)])).astype(np.float32)}
    if target.attention_mask:
        inputs["attention_mask"] = np.ones(inputs["input_values"].shape, dtype=np.int64)
    expected = session(source, 1).run(["hidden_states"], inputs)[0]  # (L + 1, B, T', D)
    got = session(quantized, 1).run(["hidden_states"], inputs)[0]
    assert got.shape == expected.shape
    assert MIN_COSINE[style] < cosines(got, expected).min() and cosines(got, expected).max() < 1 - 1e-6  # not float32


def test_calibration_is_chosen_by_the_seed_and_quantizes_alike(corpus, tmp_path):
    files = scan_audio(corpus)
    same = [read_calibration(files, sampling_rate=RATE, normalize=True, seed=0) for _ in range(2)]
    other = read_calibration(files, sampling_rate=RATE, normalize=True, seed=1)
    assert len(same[0]) == len(other) == CLIPS
    assert all(np.array_equal(a, b) for a, b in zip(*same))
    assert any(not np.array_equal(a, b) for a, b in zip(same[0], other))
    assert all(abs(float(clip.mean())) < 1e-4 and abs(float(clip.std()) - 1) < 1e-3 for clip in other)  # normalised
    chosen = sorted(np.random.default_rng(0).permutation(len(files.files))[:CLIPS])
    assert [len(clip) for clip in same[0]] == [min(files.files[i].frames, 4 * RATE) for i in chosen]  # centre 4 s
    long_files = scan_audio(write_corpus(tmp_path / "long", n_files=1, seconds=6.0, seed=4)[0].parent)
    (centre,) = read_calibration(long_files, sampling_rate=RATE, normalize=True, seed=0)
    whole = load_audio(long_files.files[0], RATE)
    assert np.allclose(centre, normalized(whole[RATE : 5 * RATE]), atol=1e-5)  # the centre 4 s of 6, normalised
    already_read = [np.full(100, float(i)) for i in range(CLIPS + 4)]
    picked = calibration_clips(already_read, normalize=False, seed=0)
    assert len(picked) == CLIPS and picked == sorted(picked, key=lambda clip: clip[0])  # in order, as float32
    assert all(clip.dtype == np.float32 for clip in picked)

    source, _ = exported(tmp_path / "shrunk", "base", tmp_path)
    written = []
    for name in ("a", "b"):
        quantize_onnx(source, tmp_path / f"{name}.onnx", "int8-static", same[0])
        written.append((tmp_path / f"{name}.onnx").read_bytes())
    assert written[0] == written[1]


@pytest.mark.parametrize("args,words", [
    (["--runtime", "onnxruntime", "--quantize", "int8-static"], ["--quantize int8-static", "pass --data"]),
    (["--quantize", "int8-static", "--data", "audio"], ["--quantize int8-static", "--runtime onnxruntime"]),
    (["--runtime", "onnxruntime", "--quantize", "int8", "--data", "audio"], ["--data", "int8-static", "drop it"]),
    (["--baseline", "b", "--baseline-quantize", "int8-static"],
     ["--baseline-quantize int8-static", "--baseline-runtime onnxruntime"]),
    (["--baseline", "b", "--baseline-runtime", "onnxruntime", "--baseline-quantize", "int8-static"],
     ["--baseline-quantize int8-static", "pass --data"]),
    (["--runtime", "onnxruntime", "--quantize", "int8-static", "--data", "audio", "--cost-model", "t.json"],
     ["--cost-model", "calibrated", "--quantize int8"]),
])
def test_bench_refuses_static_int8_without_its_audio_or_runtime(capsys, no_loading, tmp_path, monkeypatch, args,
                                                               words):
    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "base")
    monkeypatch.chdir(tmp_path)  # t.json and audio are relative
    assert_clean_error(cli(capsys, "bench", model, "--device", "cpu", *args), 2, *words)


def test_eval_refuses_static_int8_in_torch(capsys, no_loading, tmp_path):
    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "base")
    tones = write_tones(tmp_path / "tones", per_class=2)
    result = cli(capsys, "eval", model, "--data", tones, "--quantize", "int8-static")
    assert_clean_error(result, 2, "--quantize int8-static", "--runtime onnxruntime")


def test_bench_times_static_int8_of_a_folder_writing_nothing_into_it(capsys, corpus, tmp_path):
    """The folder's own model.onnx is the graph quantized, in a temporary folder."""
    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "large")
    code, _, err = cli(capsys, "export-onnx", model)
    assert code == 0, err
    before = {path.name: path.read_bytes() for path in model.iterdir()}
    code, out, err = cli(capsys, "bench", model, "--runtime", "onnxruntime", "--quantize", "int8-static", "--data",
                         corpus, "--threads", "1", *FAST, "--json")
    assert code == 0, err
    (row,) = json.loads(out)["models"]
    assert row["quantize"] == "int8-static" and row["label"] == "shrunk [onnxruntime int8-static]"
    assert row["quantization"].startswith("ORT static int8 (QDQ, calibrated on --data)")
    assert "the folder's model.onnx" in row["note"] and f"({CLIPS} clips)" in row["note"]
    assert {path.name: path.read_bytes() for path in model.iterdir()} == before


def test_eval_probes_static_int8_calibrated_on_its_training_clips(capsys, tmp_path):
    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "large")
    tones = write_tones(tmp_path / "tones", per_class=4)
    code, out, err = cli(capsys, "eval", model, "--data", tones, "--runtime", "onnxruntime", "--quantize",
                         "int8-static", "--no-per-layer", "--epochs", "20", "--json")
    assert code == 0, err
    report = json.loads(out)
    quantization = report["quantization"]
    assert (quantization["scheme"], quantization["runtime"]) == ("int8-static", "onnxruntime")
    assert quantization["quantized"].startswith("ORT static int8")
    cosine = quantization["fidelity"]["cosine"]
    assert len(cosine) == report["layers"] + 1 and MIN_COSINE["large"] < min(cosine) and max(cosine) < 1 - 1e-6


def test_bench_refuses_audio_whose_calibration_windows_are_silent(capsys, tmp_path):
    """Speech in every file, but none in the centre 4 s calibration reads: one line naming the
    folder and the fix, exit 1, before any weights load."""
    import soundfile

    model = write_shrunk(tmp_path / "shrunk", "wav2vec2", "large")
    silent = tmp_path / "silent"
    silent.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # 1 s of speech, then 9 s of silence: the centre (3-7 s) is silent
        audio = np.concatenate([speechlike(1.0, RATE, rng), np.zeros(9 * RATE)]).astype(np.float32)
        soundfile.write(silent / f"s{i}.wav", audio, RATE)
    result = cli(capsys, "bench", model, "--runtime", "onnxruntime", "--quantize", "int8-static", "--data", silent,
                 "--threads", "1", *FAST)
    assert_clean_error(result, 1, "no readable speech to calibrate on", str(silent), "--data", only_line=False)
