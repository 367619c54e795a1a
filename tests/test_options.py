"""Each option rule has one owner: prune's options come from ``PruneConfig``'s fields, one
precision rule (``model/device.py``), one audio-input rule (``model/loading.AudioInput``), and
export-onnx writes under the output lock like every command."""

from __future__ import annotations

import itertools
from dataclasses import MISSING, fields

import pytest
import typer

from speechprune.cli.app import app
from speechprune.cli.prune import DEMO
from speechprune.model.loading import AudioInput
from speechprune.prune.config import PruneConfig
from helpers.commands import assert_clean_error, cli, hold_lock


def test_every_prune_option_takes_its_default_and_help_from_its_config_field():
    """A field is an option with the field's default (a list comma-joined; none on the command
    line where --demo sets one) and the field's help: a new option is one field."""
    params = {p.name: p for p in typer.main.get_command(app).commands["prune"].params}
    for field in fields(PruneConfig):
        param = params[field.name]
        if field.name == "device":  # every command's --device (cli/options.py)
            assert param.default == field.default
            continue
        default = field.default_factory() if field.default_factory is not MISSING else field.default
        default = ",".join(default) if isinstance(default, list) else default
        assert param.help.startswith(field.metadata["help"]), field.name
        if field.name in DEMO:
            assert param.default is None and f"{DEMO[field.name]:g} with --demo]" in param.help
        else:
            assert param.default == (None if default is MISSING else default), field.name


@pytest.mark.parametrize("rate,normalize,mask", list(itertools.product((8000, 16000), (False, True), (False, True))))
def test_the_preprocessor_config_shrink_writes_reads_back_as_the_same_audio_input(rate, normalize, mask):
    audio = AudioInput(rate, normalize, mask)
    for conv_norm in ("group", "layer"):  # what the file says wins over the defaults of the conv norm
        assert AudioInput.from_preprocessor(audio.to_preprocessor(), conv_norm) == audio


def test_prune_and_bench_refuse_a_precision_in_the_same_words(capsys, model_dir, audio_dir, tmp_path, no_loading):
    model = model_dir("wav2vec2")
    prune = assert_clean_error(cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out",
                                   tmp_path / "run", "--device", "cpu", "--precision", "fp16"), 2, "--precision")
    bench = assert_clean_error(cli(capsys, "bench", model, "--device", "cpu", "--dtype", "float16"), 2, "--dtype")
    assert prune.replace("--precision", "--dtype") == bench
    assert "float16 is not supported on cpu; use float32 or bfloat16" in bench
    assert not (tmp_path / "run").exists()


def test_export_onnx_waits_for_no_one_else_writing_its_file(capsys, model_dir, tmp_path, no_loading):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    holder = hold_lock(out)  # another process: the lock is re-entrant within one
    try:
        assert_clean_error(cli(capsys, "export-onnx", model_dir("wav2vec2"), "--out", out), 1, "being written by")
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()
