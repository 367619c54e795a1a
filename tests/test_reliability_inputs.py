"""Nothing silently wrong, part 2: every file read is checked before use (cost tables, scores,
configs, weights files, audio amplitude), what a run recorded (its audio) is compared on
--resume, and sizes in options are checked before anything is allocated. Numbers in the test
names are the cases of issue 21."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import Wav2Vec2Model

from speechprune.io.audio import AudioFile, decode_peak, is_finite, scan_audio
from speechprune.method.gates import GateLayout, gate_dict
from speechprune.method.latency import CostTable, architecture
from speechprune.model.loading import inspect_model, quiet_transformers
from helpers.commands import cli, refused

TINY = ["--steps", "2", "--crop-seconds", "1.5", "--batch-seconds", "3", "--min-seconds", "1", "--device", "cpu"]


@pytest.fixture
def model(model_dir, tmp_path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir("wav2vec2"), copy)
    return copy


def table_dict(model: Path) -> dict:
    """A plausible cost table of ``model`` for 1 s, batch 1, float32 on one CPU thread."""
    info = inspect_model(str(model))
    layer = {"const": 0.01, "attention": 0.02, "heads": 0.005, "projection_macs": 0.05, "score_macs": 0.08,
             "ffn": 0.02, "ffn_macs": 0.05}
    return {
        "format": 1,
        "conditions": {"device": "cpu", "device_name": "test", "threads": 1, "dtype": "float32", "batch": 1,
                       "seconds": 1.0},
        "architecture": architecture(info.spec, info.audio.sampling_rate),
        "coefficients": {"conv": [{"macs": 0.05, "outputs": 0.02, "outputs_squared": 0.03, "const": 0.005}
                                  for _ in info.spec.conv_channels],
                         "projection": {"macs": 0.05, "const": 0.005}, "pos_conv": {"const": 0.02}, "layer": layer,
                         "scale": 1.2, "overhead": 0.01},
        "fit": {}, "provenance": {"model": "synthetic"},
    }


def spoil(table: dict, change: str) -> str:
    """Apply one of BAD_TABLES to ``table``; returns the field the refusal must name."""
    c = table["coefficients"]
    if change == "nan coefficient":
        c["layer"]["ffn_macs"] = math.nan
        return "coefficients.layer.ffn_macs"
    if change == "negative coefficient":
        c["conv"][2]["macs"] = -0.4
        return "coefficients.conv[2].macs"
    if change == "scale -1":
        c["scale"] = -1
        return "coefficients.scale"
    if change == "scale 1e308":
        c["scale"] = 1e308
        return "coefficients.scale"
    if change == "scale 0":
        c["scale"], c["overhead"] = 0, 0
        return "coefficients.scale"
    if change == "missing key":
        del c["projection"]["macs"]
        return "coefficients.projection lacks macs"
    if change == "3 of 7 conv entries":
        c["conv"] = c["conv"][:3]
        return "coefficients.conv has 3 entries for 7"
    if change == "string coefficient":
        c["pos_conv"]["const"] = "0.02"
        return "coefficients.pos_conv.const"
    if change == "no threads":
        del table["conditions"]["threads"]
        return "conditions lacks threads"
    raise AssertionError(change)


BAD_TABLES = ["nan coefficient", "negative coefficient", "scale -1", "scale 1e308", "scale 0", "missing key",
              "3 of 7 conv entries", "string coefficient", "no threads"]


# ---------------------------------------------------------------- cost tables (4, 5, 6, 11)


@pytest.mark.parametrize("change", BAD_TABLES)
def test_a_cost_table_is_checked_when_it_is_read_naming_the_field(model, tmp_path, change):
    table = table_dict(model)
    field = spoil(table, change)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))  # NaN written as the bare NaN a hand edit leaves
    with pytest.raises(Exception) as caught:
        CostTable.read(str(path))
    message = str(caught.value)
    assert type(caught.value).__name__ == "UsageError" and field in message and str(path) in message
    assert "bench MODEL --cost-model" in message


def test_a_good_table_still_reads(model, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table_dict(model)))
    assert CostTable.read(str(path)).coefficients["scale"] == 1.2


@pytest.mark.parametrize("change", ["nan coefficient", "scale -1", "3 of 7 conv entries"])
def test_prune_refuses_a_bad_table_before_the_run_folder_exists(capsys, model, audio_dir, tmp_path, change):
    table = table_dict(model)
    field = spoil(table, change)
    (tmp_path / "t.json").write_text(json.dumps(table))
    out = tmp_path / "run"
    refused(cli(capsys, "prune", model, "--speedup", "1.5", "--latency-table", tmp_path / "t.json", "--data",
                audio_dir, "--out", out, *TINY), 2, field.split(" ")[0])
    assert not out.exists()


@pytest.mark.parametrize("change", ["negative coefficient", "missing key", "string coefficient"])
def test_bench_refuses_a_bad_table_before_timing(capsys, model, tmp_path, change, no_loading):
    table = table_dict(model)
    field = spoil(table, change)
    (tmp_path / "t.json").write_text(json.dumps(table))
    refused(cli(capsys, "bench", model, "--latency-table", tmp_path / "t.json", "--device", "cpu", "--seconds", "1",
                "--threads", "1"), 2, field.split(" ")[0])


def test_a_table_that_predicts_no_time_is_refused(capsys, model, tmp_path, no_loading):
    table = table_dict(model)
    c = table["coefficients"]
    for part in c["conv"] + [c["projection"], c["pos_conv"], c["layer"]]:
        part.update(dict.fromkeys(part, 0.0))
    c["overhead"] = 0.0  # every field in range, yet the model would cost 0 ms and any speedup look free
    (tmp_path / "t.json").write_text(json.dumps(table))
    refused(cli(capsys, "bench", model, "--latency-table", tmp_path / "t.json", "--device", "cpu", "--seconds", "1",
                "--threads", "1"), 2, "predicts 0.0 ms", "measure it again")


# ---------------------------------------------------------------- scores (9)


def scores_file(model: Path, tmp_path: Path, bad) -> Path:
    layout = GateLayout(inspect_model(str(model)).spec)
    scores = gate_dict(layout, torch.linspace(0, 1, layout.size, dtype=torch.float64))
    scores["head"][1][2] = bad
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"format": 1, "gate_scores": scores}))
    return path


@pytest.mark.parametrize("bad", [math.nan, -math.inf, None, "high"])
def test_scores_that_are_not_finite_numbers_are_refused_naming_the_entry(capsys, model, audio_dir, tmp_path, bad):
    path = scores_file(model, tmp_path, bad)
    out = tmp_path / "run"
    refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--steps", "0", "--scores", path, "--data", audio_dir,
                "--out", out, "--device", "cpu"), 1, str(path), "gate_scores.head[1][2]", "not a finite number")
    assert not out.exists()
    refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--init-from-scores", "--scores", path, "--data",
                audio_dir, "--out", out, *TINY), 1, "gate_scores.head[1][2]")


# ---------------------------------------------------------------- audio amplitude (7)


def test_finite_but_absurd_samples_are_skipped_and_counted_as_non_finite(tmp_path, audio_dir):
    data = tmp_path / "data"
    shutil.copytree(audio_dir, data)
    rng = np.random.default_rng(0)
    sf.write(data / "huge.wav", rng.standard_normal(32000) * 1e30, 16000, subtype="DOUBLE")
    warnings = []
    corpus = scan_audio(data, warn=warnings.append)
    assert corpus.skipped.non_finite == 1 and all("huge" not in file.path for file in corpus.files)
    assert any("huge.wav" in warning and "out of range" in warning for warning in warnings)
    peak, frames = decode_peak(AudioFile(str(data / "huge.wav"), 32000, 16000, 1))
    assert peak == math.inf and frames == 32000


def test_every_crop_is_checked_for_absurd_amplitudes():
    assert is_finite(np.array([0.5, -1.0, 3.0], dtype=np.float32))
    assert not is_finite(np.array([0.5, 1e30], dtype=np.float32))  # float32 variance of this overflows
    assert not is_finite(np.array([0.5, np.nan], dtype=np.float32))


# ---------------------------------------------------------------- --resume compares the audio (8)


def test_resume_refuses_audio_that_changed_and_warns_on_runs_that_did_not_record_it(capsys, model, audio_dir,
                                                                                    tmp_path):
    data = tmp_path / "data"
    shutil.copytree(audio_dir, data)
    out = tmp_path / "run"
    args = ["prune", model, "--sparsity", "0.5", "--data", data, "--out", out, "--checkpoint-every", "1", *TINY]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert json.loads((out / "data.json").read_text())["files"] == 12
    (out / "summary.json").unlink()  # the run is back before its end: --resume continues it
    shutil.copy(data / sorted(os.listdir(data))[0], data / "added.wav")
    refused(cli(capsys, *args, "--resume"), 1, "changed", "12 files", "13 files", "another --out")

    (data / "added.wav").unlink()
    (out / "data.json").unlink()  # a run of a version that did not record its audio
    code, _, err = cli(capsys, *args, "--resume")
    assert code == 0, err
    assert "could not be compared" in err


# ---------------------------------------------------------------- sizes in options (10, 12, 13)


def test_macs_seconds_that_make_no_frame_are_a_usage_error(capsys, model, audio_dir, tmp_path):
    out = tmp_path / "run"
    refused(cli(capsys, "prune", model, "--macs-sparsity", "0.5", "--macs-seconds", "0.01", "--data", audio_dir,
                "--out", out, *TINY), 2, "--macs-seconds 0.01", "at least")
    assert not out.exists()


def test_bench_seconds_beyond_the_memory_are_refused_before_loading(capsys, model, no_loading):
    refused(cli(capsys, "bench", model, "--seconds", "1e9", "--device", "cpu"), 2, "--seconds 1e+09", "GB", "lower --seconds to at most")


@pytest.mark.parametrize("where", ["/proc/x.json", "a-file/x.json"])
def test_cost_model_output_is_checked_before_measuring(capsys, model, tmp_path, monkeypatch, where):
    import speechprune.bench.cost_model as cost_model

    monkeypatch.setattr(cost_model, "_Timer", lambda *_: pytest.fail("measured before the output was checked"))
    (tmp_path / "a-file").write_text("x")
    path = where if where.startswith("/") else tmp_path / where
    refused(cli(capsys, "bench", model, "--cost-model", path, "--device", "cpu", "--seconds", "1"), 1, "--cost-model")


# ---------------------------------------------------------------- configs and weights files (14, 15, 16, 18)


@pytest.mark.parametrize("key,value", [("num_hidden_layers", 1_000_000), ("hidden_size", 10_000_000),
                                       ("intermediate_size", "wide"), ("conv_dim", [512] * 1000)])
def test_config_sizes_beyond_any_encoder_are_refused_before_allocation(capsys, model, audio_dir, tmp_path, key,
                                                                        value):
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, key: value}))
    refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY),
            1, key, "config.json", "damaged")
    refused(cli(capsys, "bench", model, "--device", "cpu", "--seconds", "1"), 1, key)


def test_a_config_with_absurd_total_size_is_refused(capsys, model, audio_dir, tmp_path):
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 900, "hidden_size": 60000}))
    refused(cli(capsys, "bench", model, "--device", "cpu", "--seconds", "1"), 1, "parameters", "damaged")


def test_a_missing_shard_is_named(capsys, model, tmp_path, audio_dir):
    folder = tmp_path / "sharded"
    with quiet_transformers():
        Wav2Vec2Model.from_pretrained(model).save_pretrained(folder, max_shard_size="100KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    shards[1].unlink()
    refused(cli(capsys, "prune", folder, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY),
            1, shards[1].name, "model.safetensors.index.json", "missing shards")


def test_weights_linked_to_a_device_file_are_named(capsys, model, audio_dir, tmp_path):
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").symlink_to("/dev/zero")
    refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY),
            1, "a link to /dev/zero", "not a regular file")


@pytest.mark.parametrize("content", ["random", "not utf-8"])
def test_weights_replaced_by_other_bytes_are_said_to_be_damaged_in_every_command(capsys, model, tmp_path, content):
    size = (model / "model.safetensors").stat().st_size
    if content == "random":
        data = np.random.default_rng(0).bytes(size)
    else:  # a plausible header length, then bytes that are no text
        data = (64).to_bytes(8, "little") + b"\xff\xfe" * 32 + bytes(size - 72)
    (model / "model.safetensors").write_bytes(data)
    for command in (["bench", model, "--device", "cpu", "--seconds", "1"], ["export-onnx", model, "--out",
                                                                           tmp_path / "m.onnx"]):
        refused(cli(capsys, *command), 1, "model.safetensors", "not a safetensors file", "re-download")


# ---------------------------------------------------------------- training: a finite loss with non-finite gradients


class NanGradient(torch.autograd.Function):
    """The identity forward; NaN gradients backward (a finite loss whose gradients are not)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def test_a_finite_loss_with_non_finite_gradients_skips_the_step(capsys, model, audio_dir, tmp_path, monkeypatch):
    import speechprune.prune.step as step

    real, calls = step.distill_loss, []

    def nan_gradients_on_the_second_step(*args, **kwargs):
        total, pairs = real(*args, **kwargs)
        calls.append(1)
        return (NanGradient.apply(total), pairs) if len(calls) == 2 else (total, pairs)

    monkeypatch.setattr(step, "distill_loss", nan_gradients_on_the_second_step)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", out,
                            "--val-fraction", "0", "--json", "--steps", "3", *TINY[2:])
    assert code == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m.get("skipped", False) for m in metrics] == [False, True, False]
    assert math.isfinite(metrics[1]["loss"])  # the loss was finite: only the gradients were not
    assert json.loads(stdout)["skipped_steps"] == 1
    from safetensors.torch import load_file

    checkpoint = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "student.safetensors")).values())


# ---------------------------------------------------------------- manifests as editors write them


def test_a_manifest_with_a_byte_order_mark_and_crlf_lines_reads_every_file(tmp_path, audio_dir):
    names = sorted(p.name for p in audio_dir.iterdir())
    manifest = tmp_path / "train.tsv"
    lines = [str(audio_dir)] + [f"{name}\t32000  " for name in names] + ["", "# a comment"]
    manifest.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")  # Notepad's UTF-8
    corpus = scan_audio(manifest)
    assert len(corpus.files) == len(names) and corpus.skipped.total == 0
