"""Messages for bad input and broken environments (issue 11): each fault is one clear line and
the right exit code, found before any weights load where the fault is in the options."""

from __future__ import annotations

import errno
import os
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from rich.console import Console
from safetensors import SafetensorError

from speechprune.cli import analyze as analyze_cli
from speechprune.cli.output import Output
from speechprune.errors import DataError
from speechprune.io.audio import scan_reported
from speechprune.io.progress import Reporter
from helpers.commands import TINY, assert_clean_error, cli


@pytest.fixture
def run_dir(finished_run) -> Path:
    """The shared finished run of the tiny wav2vec2 (with a non-default --tolerance)."""
    return finished_run("wav2vec2", "base")


def unfinished_copy(run_dir: Path, target: Path) -> Path:
    """The run as if interrupted: no summary, no masks."""
    shutil.copytree(run_dir, target)
    (target / "summary.json").unlink()
    (target / "masks.safetensors").unlink()
    return target


def latest(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


# ---------------------------------------------------------------- 6, 16: the output layer


def test_warnings_print_user_text_as_typed(capsys):
    Output().warning("runs/run[exp1] and runs/r[/x] and [bold]")
    assert "runs/run[exp1] and runs/r[/x] and [bold]" in capsys.readouterr().err


def test_shrink_warning_with_brackets_in_the_run_path(capsys, run_dir, tmp_path):
    run = unfinished_copy(run_dir, tmp_path / "r[" / "x]")
    code, _, err = cli(capsys, "shrink", run, "--out", tmp_path / "m[exp1]")
    assert code == 0, err
    assert f"warning: {run} is not finished" in err


def test_quiet_silences_warnings(capsys, run_dir, tmp_path):
    Output(quiet=True).warning("not shown")
    assert capsys.readouterr().err == ""
    run = unfinished_copy(run_dir, tmp_path / "unfinished")
    code, _, err = cli(capsys, "shrink", run, "--out", tmp_path / "m", "--quiet")
    assert (code, err) == (0, "")


class CountingReporter(Reporter):
    def __init__(self):
        self.calls = []

    def count(self, task, done, total):
        self.calls.append((task, done, total))

    def finish(self):
        self.calls.append("finish")


def test_a_folder_scan_reports_its_progress(audio_dir, tmp_path):
    reporter = CountingReporter()
    corpus = scan_reported(audio_dir, reporter)
    *counts, end = reporter.calls
    assert end == "finish" and len(counts) >= len(corpus.files)
    assert {task for task, _, _ in counts} == {f"scanning {audio_dir.name}"}
    assert [done for _, done, _ in counts] == list(range(1, len(counts) + 1))  # one call per file checked
    assert counts[-1][1] == counts[-1][2]  # and the last says all are done
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError):
        scan_reported(tmp_path / "nothing", reporter)
    assert reporter.calls[-1] == "finish"  # a failed scan ends its count too: no bar outlives it


# what each command loads right after its audio scan: the test stops it there
LOADED_AFTER_THE_SCAN = {"prune": "speechprune.prune.job.load_encoder", "analyze": "speechprune.analyze.job.load_target",
                         "eval": "speechprune.eval.job.load_target", "shrink": "speechprune.shrink.job.read_run"}


@pytest.mark.parametrize("command", sorted(LOADED_AFTER_THE_SCAN))
def test_a_terminal_shows_the_audio_scan_and_pipelines_do_not(capsys, command, model_dir, audio_dir, run_dir,
                                                             tmp_path, monkeypatch):
    from test_probe import write_tones

    class Scanned(Exception):
        pass

    def stop(*_):
        raise Scanned("stopped after the scan")

    monkeypatch.setattr(LOADED_AFTER_THE_SCAN[command], stop)
    model = model_dir("wav2vec2")
    args = {
        "prune": ["prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY],
        "analyze": ["analyze", model, "--data", audio_dir, "--device", "cpu"],
        "eval": ["eval", model, "--data", write_tones(tmp_path / "tones", per_class=2), "--device", "cpu"],
        "shrink": ["shrink", run_dir, "--out", tmp_path / "model", "--data", audio_dir],
    }[command]
    for terminal, quiet, shown in ((False, False, False), (True, True, False), (True, False, True)):
        if terminal:
            monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes stderr for a terminal
        code, _, err = cli(capsys, *args, *(["--quiet"] if quiet else []))
        assert "stopped after the scan" in err, err  # the scan ran, and nothing loaded before it
        assert ("scanning" in err) == shown, (terminal, quiet, err)  # a bar, drawn and cleared; no line per file


# ---------------------------------------------------------------- 7: --out checked before loading


@pytest.mark.parametrize("command", ["prune", "shrink", "analyze", "eval"])
def test_unwritable_out_is_refused_before_loading(capsys, tmp_path, model_dir, audio_dir, run_dir, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = {
        "prune": ["prune", model_dir("wav2vec2"), "--sparsity", "0.5", "--data", audio_dir, *TINY],
        "shrink": ["shrink", run_dir],
        "analyze": ["analyze", model_dir("wav2vec2"), "--data", audio_dir],
        "eval": ["eval", model_dir("wav2vec2"), "--data", audio_dir],
    }[command]
    for out, words in ((blocker / "sub" / "x", ("a-file is a file, not a folder",)),
                       ("/proc/speechprune-out", ("cannot write in /proc",))):
        assert_clean_error(cli(capsys, *args, "--out", out), 1, str(out), *words)


# ---------------------------------------------------------------- 8, 22: run folders


def test_shrink_with_a_missing_student_file(capsys, run_dir, tmp_path):
    run = unfinished_copy(run_dir, tmp_path / "run")
    student = latest(run) / "student.safetensors"
    student.unlink()
    message = assert_clean_error(cli(capsys, "shrink", run, "--out", tmp_path / "m"), 1, str(student), "missing",
                                 only_line=False)
    assert "speechprune prune" in message


def test_shrink_of_a_model_folder_says_so(capsys, model_dir, tmp_path):
    assert_clean_error(cli(capsys, "shrink", model_dir("wav2vec2"), "--out", tmp_path / "m"), 1,
                       "is a model folder, not a prune run", "--out folder of speechprune prune")


def test_dangling_latest_pointer_advice_names_prune(capsys, run_dir, tmp_path):
    run = unfinished_copy(run_dir, tmp_path / "run")
    shutil.rmtree(latest(run))
    message = assert_clean_error(cli(capsys, "shrink", run, "--out", tmp_path / "m"), 1, "latest checkpoint")
    assert "speechprune prune ... --overwrite" in message


# ---------------------------------------------------------------- 9: crops shorter than the CNN's input


def test_crop_shorter_than_the_receptive_field(capsys, model_dir, audio_dir, tmp_path):
    out = tmp_path / "run"
    args = ["prune", model_dir("wav2vec2"), "--sparsity", "0.5", "--data", audio_dir, "--out", out, *TINY]
    assert_clean_error(cli(capsys, *args, "--crop-seconds", "0.01", "--min-seconds", "0.01"), 2,
                       "--crop-seconds 0.01 is too short", "at least 0.025 s")
    assert not out.exists()


# ---------------------------------------------------------------- 10: a full disk


def test_disk_full_while_shrinking(capsys, run_dir, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" }) (os error 28)")

    monkeypatch.setattr("speechprune.io.atomic.save_file", full)
    out = tmp_path / "m"
    assert_clean_error(cli(capsys, "shrink", run_dir, "--out", out), 1,
                       f"no space left on device while writing {out}; free space and rerun", only_line=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_disk_full_anywhere_is_not_reported_as_a_bug(capsys, model_dir, audio_dir, tmp_path, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("speechprune.io.atomic.write_json", full)
    out = tmp_path / "run"
    result = cli(capsys, "prune", model_dir("wav2vec2"), "--sparsity", "0.5", "--data", audio_dir, "--out", out, *TINY)
    assert_clean_error(result, 1, f"no space left on device while writing {out / 'config.json'}", only_line=False)


# ---------------------------------------------------------------- 15: heatmaps without colour


def test_heatmaps_without_colour_use_shades():
    report = {"model": "m", "kind": "stock", "family": "wav2vec2", "layers": 2, "audio": None, "run": None,
              "teacher": None, "heads": {"entropy": [[0.0, 1.0], [2.0, 4.0]]}}
    output = Output()
    output.out = Console(file=io.StringIO(), force_terminal=True, no_color=True, highlight=False, width=100)
    analyze_cli.show_rich(output, report)
    text = output.out.file.getvalue()
    assert "\x1b[38" not in text  # no colour codes
    assert "L1    ░░" in text and "L2  ▒▒██" in text and "  ░░▒▒▓▓██ 4" in text


# ---------------------------------------------------------------- 21: --tolerance


def test_tolerance_option(capsys, run_dir, model_dir, audio_dir, tmp_path):
    assert json.loads((run_dir / "config.json").read_text())["options"]["tolerance"] == 0.02
    args = ["prune", model_dir("wav2vec2"), "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "r", *TINY]
    for value in ("1.5", "0", "nan"):
        assert_clean_error(cli(capsys, *args, "--tolerance", value), 2, "--tolerance")


def test_anneal_option_is_checked_before_loading(capsys, model_dir, audio_dir, tmp_path):
    args = ["prune", model_dir("wav2vec2"), "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "r", *TINY]
    for value in ("0.5", "nan", "inf"):
        assert_clean_error(cli(capsys, *args, "--anneal", value), 2, "--anneal")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- 22: numbers that are not finite


@pytest.mark.parametrize("args", [["bench", "--seconds", "inf"], ["bench", "--seconds", "nan"],
                                  ["shrink", "--fidelity-seconds", "inf"], ["analyze", "--max-seconds", "inf"]])
def test_infinite_numbers_are_refused(capsys, tmp_path, args):
    command, option, value = args
    result = cli(capsys, command, tmp_path / "never-read", option, value)
    assert_clean_error(result, 2, f"{option} must be a finite positive number, got {value}")


def test_bench_min_time_inf_would_never_end(capsys, tmp_path):
    assert_clean_error(cli(capsys, "bench", tmp_path / "x", "--min-time", "inf"), 2, "--min-time a finite number")


# ---------------------------------------------------------------- 5: WavLM without any attention head


@pytest.mark.parametrize("style", ["base", "large"])
def test_wavlm_that_keeps_no_head_shrinks_and_loads(style, tmp_path):
    from speechprune.folders.shrunk import load, write_model_folder
    from speechprune.method.gates import GateLayout
    from speechprune.model.spec import EncoderSpec
    from test_shrink import assert_same_outputs, dense_encoder, shrunk_pair

    encoder = dense_encoder("wavlm", style)
    layout = GateLayout(encoder.spec)
    values = layout.values(torch.ones(layout.size, dtype=torch.float64))
    for layer in range(len(encoder.spec.layers)):
        values.get("head", layer).zero_()  # every attention block kept, without heads
    small = shrunk_pair(encoder, values)
    assert small.spec.rel_heads == [] and EncoderSpec.from_dict(small.spec.to_dict()).rel_heads == []
    assert_same_outputs(encoder, small, values.masks())
    write_model_folder(tmp_path / "m", small.spec, small.state_dict(), dtype="float32", card="", provenance={},
                       preprocessor={})
    loaded = load(tmp_path / "m")
    assert_same_outputs(encoder, lambda waveforms, mask: loaded.encode(waveforms, mask), values.masks())


def test_specs_without_rel_heads_keep_every_head():
    from speechprune.model.spec import EncoderSpec
    from test_shrink import dense_encoder

    saved = dense_encoder("wavlm", "base").spec.to_dict()
    del saved["rel_heads"]  # written before the field existed
    assert EncoderSpec.from_dict(saved).rel_heads == [0, 1, 2, 3]


# ---------------------------------------------------------------- 17: local paths and an unreachable hub


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """A hub that refuses connections at once and an empty cache, whatever this machine's network."""
    from huggingface_hub import constants

    from speechprune.model.loading import hub_offline

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    hub_offline.cache_clear()
    yield
    hub_offline.cache_clear()


def prune_args(model, audio_dir, tmp_path) -> list:
    return ["prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY]


def test_missing_relative_folder_is_not_sent_to_the_hub(capsys, tmp_path, audio_dir, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    start = time.monotonic()
    assert_clean_error(cli(capsys, *prune_args("models/nothing", audio_dir, tmp_path)), 1,
                       "model folder models/nothing does not exist", "no local folder")
    assert time.monotonic() - start < 10


def test_unreachable_hub_fails_fast_with_advice(capsys, tmp_path, audio_dir, no_hub):
    start = time.monotonic()
    assert_clean_error(cli(capsys, *prune_args("facebook/wav2vec2-base", audio_dir, tmp_path)), 1,
                       "cannot reach the Hugging Face Hub for facebook/wav2vec2-base", "HF_HUB_OFFLINE=1")
    assert time.monotonic() - start < 10


def test_hub_offline_mode_without_the_model_in_the_cache(capsys, tmp_path, audio_dir, no_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_clean_error(cli(capsys, "bench", "facebook/wav2vec2-base", "--device", "cpu"), 1,
                       "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")


# ---------------------------------------------------------------- 18, 19: weights files


def model_copy(model_dir, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(model_dir("wav2vec2"), folder)
    return folder


def test_pickle_that_needs_code_execution(capsys, tmp_path, model_dir, audio_dir):
    from safetensors.torch import load_file

    folder = model_copy(model_dir, tmp_path)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": np.zeros(3)}, folder / "pytorch_model.bin")  # numpy: refused by weights_only
    message = assert_clean_error(cli(capsys, *prune_args(folder, audio_dir, tmp_path)), 1,
                                 "pytorch_model.bin is a pickle that needs code execution", "speechprune refuses",
                                 "convert it to safetensors", only_line=False)
    assert "weights_only=True" not in message and "damaged" not in message


def test_shape_mismatch_names_the_first_tensor(capsys, tmp_path, model_dir, audio_dir):
    folder = model_copy(model_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 80}))
    key = "encoder.layers.0.feed_forward.intermediate_dense.weight"
    shapes = ("is (96, 48) in the weights file but (80, 48) by the config"
              if int(transformers.__version__.split(".")[0]) >= 5  # 4.x tells which tensors differ, not the file's shapes
              else "in the weights file is not (80, 48) as by the config")
    message = assert_clean_error(cli(capsys, *prune_args(folder, audio_dir, tmp_path)), 1, f"{key} {shapes}",
                                 only_line=False)
    assert "above report" not in message and "damaged" not in message


def test_unreadable_weights_file(capsys, tmp_path, model_dir, audio_dir, monkeypatch):
    folder = model_copy(model_dir, tmp_path)
    weights = folder / "model.safetensors"
    real_access = os.access  # tests run as root here, where chmod 000 changes nothing
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != weights and real_access(path, mode))
    assert_clean_error(cli(capsys, *prune_args(folder, audio_dir, tmp_path)), 1,
                       f"permission denied reading {weights}", only_line=False)


# ---------------------------------------------------------------- 20: what scanning skipped, and why


def test_non_finite_audio_is_not_called_silent(tmp_path, audio_dir):
    from speechprune.io.audio import scan_audio
    from speechprune.io.synth import write_corpus

    write_corpus(tmp_path, n_files=1, seconds=(1.5, 1.5), seed=0)
    bad = np.full(24000, np.nan, dtype=np.float32)
    bad[:100] = 0.5
    import soundfile as sf

    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    skipped = scan_audio(tmp_path).skipped
    assert (skipped.non_finite, skipped.silent) == (1, 0) and skipped.describe() == "1 non-finite"


def test_missing_manifest_entries_are_named(tmp_path):
    from speechprune.errors import DataError
    from speechprune.io.audio import scan_audio

    manifest = tmp_path / "train.tsv"
    manifest.write_text("".join(f"{tmp_path}/gone-{i}.wav\t16000\n" for i in range(5)))
    with pytest.raises(DataError) as error:
        scan_audio(manifest)
    assert (f"5 files skipped (5 missing ({tmp_path}/gone-0.wav, {tmp_path}/gone-1.wav, {tmp_path}/gone-2.wav, ...))"
            in str(error.value))


# ---------------------------------------------------------------- 23: a damaged mp3 keeps stderr ours


def test_damaged_mp3_does_not_print_decoder_errors(tmp_path, audio_dir):
    folder = tmp_path / "audio"
    shutil.copytree(audio_dir, folder)
    rng = np.random.default_rng(0)
    frame_header = bytes([0xFF, 0xFB, 0x90, 0x64])  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
    (folder / "damaged.mp3").write_bytes(b"".join(frame_header + rng.bytes(413) for _ in range(40)))
    script = ("from speechprune.io.audio import load_audio, scan_audio\n"
              f"corpus = scan_audio({str(folder)!r})\n"
              "[load_audio(f, 16000, seconds=1.0) for f in corpus.files]\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0 and done.stderr == "", done.stderr[:500]


# ---------------------------------------------------------------- next door: more options checked before loading


def test_analyze_crop_shorter_than_the_receptive_field(capsys, model_dir, audio_dir):
    for option in ("--crop-seconds", "--max-seconds"):
        assert_clean_error(cli(capsys, "analyze", model_dir("wav2vec2"), "--data", audio_dir, option, "0.01"), 2,
                           f"{option} 0.01 is too short", "at least 0.025 s")


def test_shrink_checks_data_before_reading_the_run(capsys, tmp_path):
    assert_clean_error(cli(capsys, "shrink", tmp_path / "no-run", "--data", tmp_path / "no-audio", "--out",
                           tmp_path / "m"), 1, f"audio source {tmp_path / 'no-audio'} does not exist")


def test_damaged_encoder_json_of_a_run(capsys, run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "encoder.json").write_text("{ truncated")
    assert_clean_error(cli(capsys, "shrink", run, "--out", tmp_path / "m"), 1, f"cannot read {run / 'encoder.json'}",
                       "damaged")
