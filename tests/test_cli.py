"""The `speechprune` command line: help and version, clean one-line errors for every bad input
(checked before any weights load), and what a good run prints and leaves in its run folder.

Commands run in-process through `speechprune.cli.app.main(argv)`, except one real subprocess
that proves `python -m speechprune` and its exit codes work end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers

from speechprune import __version__
from speechprune.io.synth import speechlike
from speechprune.model.loading import quiet_transformers
from helpers.commands import TINY, assert_clean_error, cli, lines, run_captured

SUMMARY_KEYS = {"params_dense", "params_pruned", "sparsity", "target_sparsity", "steps", "run_dir"}
METRIC_KEYS = {"step", "loss", "expected_sparsity", "target_sparsity", "lambda1", "lambda2", "lr",
               "audio_seconds_per_second"}


# ---------------------------------------------------------------- helpers


def write_wav(path: Path, seconds: float, sample_rate: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    mono = speechlike(seconds, sample_rate, rng)
    audio = mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)
    sf.write(path, audio, sample_rate, subtype="PCM_16")
    return path


def unusable_audio(folder: Path) -> Path:
    """Only a corrupt .wav (random bytes) and an empty .wav (a header with no frames)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    sf.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mixed_audio(tmp_path_factory, audio_dir) -> Path:
    """The generated corpus plus one corrupt file, one stereo 44.1 kHz file and one 8 kHz file."""
    folder = tmp_path_factory.mktemp("mixed-audio")
    for path in audio_dir.iterdir():
        shutil.copy(path, folder / path.name)
    (folder / "broken.wav").write_bytes(np.random.default_rng(2).bytes(3000))
    write_wav(folder / "stereo_44k.wav", 2.0, sample_rate=44100, channels=2, seed=3)
    sub = folder / "nested"
    sub.mkdir()
    write_wav(sub / "narrow_8k.wav", 2.0, sample_rate=8000, seed=4)
    return folder


@pytest.fixture(scope="module")
def json_run(tmp_path_factory, model_dir, mixed_audio):
    """One finished run on the mixed corpus, with --json: (args, exit code, stdout, stderr, run folder)."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    args = ["prune", model_dir("wav2vec2"), "--sparsity", "0.5", "--data", mixed_audio, "--out", out, *TINY]
    code, stdout, stderr = run_captured(*args, "--json")
    return args, code, stdout, stderr, out


@pytest.fixture
def model(model_dir) -> Path:
    return model_dir("wav2vec2")


@pytest.fixture
def good(model, audio_dir) -> list:
    """A complete, valid `prune` command line except for --out."""
    return ["prune", model, "--sparsity", "0.5", "--data", audio_dir, *TINY]


# ---------------------------------------------------------------- help, version, stubs


def test_help_lists_the_commands(capsys):
    code, out, err = cli(capsys, "--help")
    assert code == 0
    for name in ("analyze", "prune", "shrink", "bench"):
        assert name in out
    assert "Traceback" not in err


def registered_commands() -> dict:
    import typer

    from speechprune.cli.app import app

    return typer.main.get_command(app).commands


@pytest.mark.parametrize("name", sorted(registered_commands()))
def test_every_command_help_has_an_example(capsys, name):
    code, out, _ = cli(capsys, name, "--help")
    assert code == 0
    examples = [line.strip() for line in out.splitlines() if line.strip().startswith("Example:")]
    assert examples and examples[0].startswith(f"Example: speechprune {name} "), out


@pytest.mark.parametrize("name", sorted(registered_commands()))
def test_shared_options_read_the_same_in_every_command(name):
    """--json, --quiet, --device and --seed: one definition (cli/options.py), one default each."""
    params = {p.name: p for p in registered_commands()[name].params}
    for option in ("json_output", "quiet"):
        assert params[option].default is False and params[option].opts[0] in ("--json", "--quiet")
    if "device" in params:
        assert params["device"].default == "auto" and "auto: a CUDA GPU" in params["device"].help
    if "seed" in params:
        assert params["seed"].default == 0 and params["seed"].help.startswith("Seed of ")
    assert ("device" in params) == (name not in ("shrink", "export-onnx"))  # those two run on the CPU


def test_no_arguments_shows_help(capsys):
    """No command is a usage error (exit 2): the help and the fix on stderr, nothing on stdout."""
    code, out, err = cli(capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("Usage: speechprune") and "prune" in err
    assert lines(err)[-1].startswith("error: no command given")
    assert "Traceback" not in err


def test_version(capsys):
    code, out, err = cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"speechprune {__version__}"


def test_prune_help(capsys):
    code, out, _ = cli(capsys, "prune", "--help")
    assert code == 0
    for option in ("--sparsity", "--data", "--out", "--demo", "--resume", "--overwrite", "--json", "--quiet"):
        assert option in out


# ---------------------------------------------------------------- bad models


def test_nonexistent_model_path(capsys, tmp_path, audio_dir):
    missing = tmp_path / "no-such-model"
    result = cli(capsys, "prune", missing, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    assert_clean_error(result, 1, str(missing), "does not exist")
    assert not (tmp_path / "run").exists()


def test_folder_without_config_is_not_a_model(capsys, tmp_path, audio_dir):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    result = cli(capsys, "prune", folder, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    assert_clean_error(result, 1, "not a model folder", "config.json")


def test_file_instead_of_model_folder(capsys, tmp_path, model, audio_dir):
    file = tmp_path / "model.safetensors"
    shutil.copy(model / "model.safetensors", file)
    result = cli(capsys, "prune", file, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    assert_clean_error(result, 1, "is a file")


def test_unsupported_architecture(capsys, tmp_path, audio_dir):
    folder = tmp_path / "bert"
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    with quiet_transformers():
        transformers.BertModel(config).save_pretrained(folder)
    result = cli(capsys, "prune", folder, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    assert_clean_error(result, 1, "unsupported architecture", "bert", "Wav2Vec2Model")


def test_model_folder_without_weights(capsys, tmp_path, model, audio_dir):
    folder = tmp_path / "config-only"
    folder.mkdir()
    shutil.copy(model / "config.json", folder / "config.json")
    result = cli(capsys, "prune", folder, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    message = assert_clean_error(result, 1, "cannot load weights", "model.safetensors", only_line=False)
    assert str(folder) in message


def test_corrupt_weights_file_is_a_clean_error(capsys, tmp_path, model, audio_dir):
    """A truncated or garbled model.safetensors (e.g. an interrupted download) is a user's problem,
    not a crash: it must be reported like a missing weights file, not as `unexpected SafetensorError`."""
    folder = tmp_path / "corrupt-weights"
    folder.mkdir()
    shutil.copy(model / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(5000))
    result = cli(capsys, "prune", folder, "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    message = assert_clean_error(result, 1, only_line=False)
    assert str(folder) in message
    assert "weights" in message or "safetensors" in message


def test_hub_like_id_with_too_many_slashes_is_a_missing_folder(capsys, tmp_path, audio_dir):
    result = cli(capsys, "prune", "a/b/c", "--sparsity", "0.5", "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    assert_clean_error(result, 1, "does not exist")


# ---------------------------------------------------------------- bad options (exit 2)


@pytest.mark.parametrize("value", ["0", "1", "-0.1", "1.5"])
def test_sparsity_out_of_range(capsys, tmp_path, good, value):
    result = cli(capsys, *good, "--sparsity", value, "--out", tmp_path / "run")
    assert_clean_error(result, 2, "--sparsity", "between 0 and 1")
    assert not (tmp_path / "run").exists()


def test_sparsity_not_a_number_is_a_usage_error(capsys, tmp_path, good):
    code, out, err = cli(capsys, *good, "--sparsity", "lots", "--out", tmp_path / "run")
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert "--sparsity" in err


def test_unknown_structure(capsys, tmp_path, good):
    result = cli(capsys, *good, "--structures", "head,bogus", "--out", tmp_path / "run")
    assert_clean_error(result, 2, "--structures", "bogus", "head")


def test_unreachable_sparsity_for_the_structures(capsys, tmp_path, good):
    result = cli(capsys, *good, "--sparsity", "0.9", "--structures", "head", "--out", tmp_path / "run")
    assert_clean_error(result, 2, "out of reach", "--structures head")
    assert not (tmp_path / "run").exists()


def test_missing_sparsity(capsys, tmp_path, model, audio_dir):
    result = cli(capsys, "prune", model, "--data", audio_dir, "--out", tmp_path / "run", *TINY)
    assert_clean_error(result, 2, "--sparsity")


def test_default_out_names_the_exact_budgets():
    from speechprune.cli.prune import default_out

    values = (0.72, 0.725, 0.7200001, 0.72000001)  # :g, or a percentage, would merge some of them
    assert len({default_out("facebook/wav2vec2-base", value, None, None) for value in values}) == len(values)
    assert default_out("facebook/wav2vec2-base", 0.725, None, None) == str(Path("runs") / "wav2vec2-base-p0.725")
    assert default_out("models/base/", 0.72, 0.5, 3.0) == str(Path("runs") / "base-p0.72-m0.5-x3")
    assert default_out("base", None, None, 2.5) == str(Path("runs") / "base-x2.5")


def test_resume_and_overwrite_contradict(capsys, tmp_path, good):
    result = cli(capsys, *good, "--out", tmp_path / "run", "--resume", "--overwrite")
    assert_clean_error(result, 2, "--resume", "--overwrite")


def test_cuda_device_without_a_gpu(capsys, tmp_path, good, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    result = cli(capsys, *good, "--out", tmp_path / "run", "--device", "cuda")
    assert_clean_error(result, 2, "--device cuda", "no CUDA GPU")


def test_not_a_device(capsys, tmp_path, good):
    result = cli(capsys, *good, "--out", tmp_path / "run", "--device", "tpu")
    assert_clean_error(result, 2, "--device", "tpu")


@pytest.mark.parametrize("spelling", ["float16", "fp16"])  # fp16: the short spelling of 0.1, an alias
def test_float16_on_cpu(capsys, tmp_path, good, spelling):
    result = cli(capsys, *good, "--out", tmp_path / "run", "--precision", spelling)
    assert_clean_error(result, 2, "--precision float16", "CPU")


def test_unknown_precision_names_the_choices(capsys, tmp_path, good):
    result = cli(capsys, *good, "--out", tmp_path / "run", "--precision", "half")
    assert_clean_error(result, 2, "--precision", "float32, bfloat16, float16", "'half'")


def test_demo_with_a_model_is_a_usage_error(capsys, tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli(capsys, "prune", model, "--demo")
    assert_clean_error(result, 2, "--demo")
    assert not (tmp_path / "runs").exists()  # refused before the demo inputs are written


# ---------------------------------------------------------------- bad audio


def test_no_data_and_no_environment(capsys, tmp_path, model, monkeypatch):
    monkeypatch.delenv("SPEECHPRUNE_DATA", raising=False)
    result = cli(capsys, "prune", model, "--sparsity", "0.5", "--out", tmp_path / "run", *TINY)
    assert_clean_error(result, 1, "unlabelled speech", "--data", "SPEECHPRUNE_DATA")


def test_data_from_environment(capsys, tmp_path, model, audio_dir, monkeypatch):
    monkeypatch.setenv("SPEECHPRUNE_DATA", str(audio_dir))
    code, out, err = cli(capsys, "prune", model, "--sparsity", "0.5", "--out", tmp_path / "run", "--json", *TINY)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["audio"]["files"] == len(list(audio_dir.glob("*.wav")))
    assert str(audio_dir) in err  # the "audio: ..." line names where the audio came from
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["options"]["data"] == str(audio_dir)


def test_data_folder_does_not_exist(capsys, tmp_path, good):
    missing = tmp_path / "no-audio-here"
    result = cli(capsys, *good, "--data", missing, "--out", tmp_path / "run")
    assert_clean_error(result, 1, str(missing), "does not exist")


def test_folder_without_usable_audio_counts_what_was_skipped(capsys, tmp_path, good):
    folder = unusable_audio(tmp_path / "bad-audio")
    result = cli(capsys, *good, "--data", folder, "--out", tmp_path / "run")
    assert_clean_error(result, 1, "no usable audio", "2 files skipped", "1 unreadable", "1 empty")
    assert not (tmp_path / "run").exists()


def test_audio_is_checked_before_weights_load(capsys, tmp_path, model):
    """Valid config.json, garbage weights, unusable audio: the audio is what gets reported."""
    folder = tmp_path / "garbage-weights"
    folder.mkdir()
    shutil.copy(model / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(5000))
    audio = unusable_audio(tmp_path / "bad-audio")
    result = cli(capsys, "prune", folder, "--sparsity", "0.5", "--data", audio, "--out", tmp_path / "run", *TINY)
    message = assert_clean_error(result, 1, "no usable audio", str(audio))
    assert "safetensors" not in message.lower() and "weights" not in message.lower()


# ---------------------------------------------------------------- the run folder (--out)


def test_out_is_an_unrelated_folder(capsys, tmp_path, good):
    out = tmp_path / "my-stuff"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01\x02")
    before = snapshot(out)
    result = cli(capsys, *good, "--out", out)
    assert_clean_error(result, 1, str(out), "not a speechprune run", "--overwrite")
    assert snapshot(out) == before


def test_out_is_a_file(capsys, tmp_path, good):
    out = tmp_path / "a-file"
    out.write_text("keep me")
    result = cli(capsys, *good, "--out", out)
    assert_clean_error(result, 1, "is a file")
    assert out.read_text() == "keep me"


def test_overwrite_refuses_an_unrelated_folder(capsys, tmp_path, good):
    out = tmp_path / "old-stuff"
    out.mkdir()
    (out / "notes.txt").write_text("old")
    (out / "sub").mkdir()
    (out / "sub" / "x").write_text("old")
    assert_clean_error(cli(capsys, *good, "--out", out, "--overwrite"), 1, "notes.txt, sub", "did not write")
    assert (out / "notes.txt").read_text() == "old" and (out / "sub" / "x").read_text() == "old"


def test_existing_run_needs_resume_or_overwrite(capsys, json_run):
    args, code, _, stderr, out = json_run
    assert code == 0, stderr
    before = snapshot(out)
    result = cli(capsys, *args)
    assert_clean_error(result, 1, str(out), "already holds a run", "--resume", "--overwrite")
    assert snapshot(out) == before


def test_resume_with_changed_sparsity_is_refused(capsys, json_run):
    args, code, _, stderr, out = json_run
    assert code == 0, stderr
    before = snapshot(out)
    changed = list(args)
    changed[changed.index("--sparsity") + 1] = "0.6"
    result = cli(capsys, *changed, "--resume")
    assert_clean_error(result, 1, "refusing to resume", "sparsity", "0.5", "0.6")
    assert snapshot(out) == before


def test_resume_a_finished_run_reports_the_same_summary(capsys, json_run):
    args, code, stdout, stderr, out = json_run
    assert code == 0, stderr
    before = snapshot(out)
    code, again, err = cli(capsys, *args, "--resume", "--json")
    assert code == 0, err
    assert json.loads(again) == json.loads(stdout)
    assert "finished run" in err
    assert snapshot(out) == before


def test_a_run_saved_with_the_short_precision_spelling_resumes_and_shrinks(capsys, json_run, tmp_path):
    """Runs of 0.1 stored "fp32": it resumes under either spelling, and shrinks."""
    args, code, stdout, stderr, out = json_run
    assert code == 0, stderr
    assert json.loads((out / "config.json").read_text())["options"]["precision"] == "float32"
    old = tmp_path / "old"
    shutil.copytree(out, old)
    config = json.loads((old / "config.json").read_text())
    config["options"]["precision"] = "fp32"  # run format 2 keeps each option once
    (old / "config.json").write_text(json.dumps(config))
    moved = [str(a) for a in args]
    moved[moved.index("--out") + 1] = str(old)
    for spelling in ([], ["--precision", "fp32"], ["--precision", "float32"]):
        code, again, err = cli(capsys, *moved, *spelling, "--resume", "--json")
        assert code == 0, err
        assert "finished run" in err
    code, report, err = cli(capsys, "shrink", old, "--out", tmp_path / "model", "--dtype", "fp16", "--json")
    assert code == 0, err
    assert json.loads(report)["dtype"] == "float16"


# ---------------------------------------------------------------- a good run


def test_good_run_json_on_stdout_progress_on_stderr(json_run, mixed_audio):
    _, code, stdout, stderr, out = json_run
    assert code == 0, stderr
    summary = json.loads(stdout)  # one JSON document and nothing else
    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 3
    assert summary["target_sparsity"] == 0.5
    assert 0 < summary["params_pruned"] < summary["params_dense"]
    assert summary["sparsity"] == pytest.approx(1 - summary["params_pruned"] / summary["params_dense"], abs=1e-5)
    assert Path(summary["run_dir"]) == out
    # 12 generated files + the stereo 44.1 kHz one + the nested 8 kHz one; the corrupt one is skipped
    assert summary["audio"]["files"] == 14
    assert summary["audio"]["skipped"]["unreadable"] == 1
    assert "Traceback" not in stderr
    assert "audio: 14 files" in stderr and "1 unreadable" in stderr
    assert "step 3" in stderr  # the log line of the last step
    assert "prune phase" in stderr


def test_good_run_folder_contents(json_run, model_dir):
    _, code, stdout, stderr, out = json_run
    assert code == 0, stderr
    config = json.loads((out / "config.json").read_text())
    assert config["speechprune"] == __version__
    assert config["torch"] == torch.__version__
    assert config["transformers"] == transformers.__version__
    sha = config["source"]["weights_sha256"]
    assert isinstance(sha, str) and len(sha) == 64 and int(sha, 16) >= 0
    assert config["source"]["model"] == str(model_dir("wav2vec2"))
    assert config["options"]["sparsity"] == 0.5
    assert config["audio"]["files"] == 14

    encoder = json.loads((out / "encoder.json").read_text())
    assert isinstance(encoder, dict) and encoder

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert METRIC_KEYS <= set(m), METRIC_KEYS - set(m)

    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert (out / "checkpoints" / latest / "state.json").exists()
    assert (out / "masks.safetensors").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text()) == json.loads(stdout)


def test_quiet_run_prints_nothing_on_stderr(capsys, tmp_path, good):
    code, out, err = cli(capsys, *good, "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    noise = [line for line in lines(err) if not line.startswith("warning:")]
    assert noise == [], err
    assert (tmp_path / "run" / "summary.json").exists()


def test_human_result_goes_to_stdout(capsys, tmp_path, good):
    code, out, err = cli(capsys, *good, "--out", tmp_path / "run")
    assert code == 0, err
    assert len(lines(out)) == 1
    assert "parameters" in out and str(tmp_path / "run") in out
    assert "parameters" not in err and "audio:" in err


def test_ctc_checkpoint_takes_the_encoder(capsys, tmp_path, model_dir, audio_dir):
    ctc = model_dir("wav2vec2", "base", "ForCTC")
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "prune", ctc, "--sparsity", "0.5", "--data", audio_dir, "--out", out, "--json", *TINY)
    assert code == 0, err
    json.loads(stdout)
    taken = [line for line in lines(err) if "Wav2Vec2ForCTC" in line]
    assert taken, err
    assert "took the Wav2Vec2Model encoder" in taken[0] and "left out: lm_head" in taken[0]
    source = json.loads((out / "config.json").read_text())["source"]
    assert source["architecture"] == "Wav2Vec2ForCTC"
    assert source["left_out"] == ["lm_head"]


def test_debug_shows_the_traceback(capsys, tmp_path, audio_dir):
    missing = tmp_path / "no-such-model"
    code, out, err = cli(capsys, "--debug", "prune", missing, "--sparsity", "0.5", "--data", audio_dir, *TINY)
    assert code == 1
    assert out == ""
    assert "Traceback" in err
    assert lines(err)[-1].startswith("error: ") and "does not exist" in lines(err)[-1]


def test_demo(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo-run"
    code, stdout, err = cli(capsys, "prune", "--demo", "--steps", "5", "--out", out, "--device", "cpu", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["steps"] == 5
    assert summary["target_sparsity"] == 0.72
    assert summary["within_tolerance"] is True
    assert (out / "summary.json").exists()
    assert (tmp_path / "runs" / "demo-inputs" / "model" / "config.json").exists()  # inputs under the working dir


# ---------------------------------------------------------------- the real console entry point


def test_python_dash_m_exit_codes(tmp_path, model, audio_dir):
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("SPEECHPRUNE_DATA", None)

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "speechprune", *map(str, args)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )

    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"speechprune {__version__}"

    missing = run("prune", tmp_path / "nope", "--sparsity", "0.5", "--data", audio_dir, *TINY)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert lines(missing.stderr) == [l for l in lines(missing.stderr) if l.startswith("error: ")]
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr

    usage = run("prune", model, "--sparsity", "1.5", "--data", audio_dir, *TINY)
    assert usage.returncode == 2
    assert usage.stdout == "" and usage.stderr.startswith("error: ") and "--sparsity" in usage.stderr
