"""`speechprune shrink` end to end: the model folder, its loaders, and bad inputs."""

import json
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

import speechprune
from speechprune.cli.app import main
from speechprune.errors import DiskFullError
from speechprune.folders.run import read_run
from speechprune.folders.shrunk import stock_compatible, write_model_folder
from speechprune.model.spec import EncoderSpec
from speechprune.prune.job import prune
from speechprune.shrink.job import shrink_run
from speechprune.shrink.slicing import shrink_encoder
from helpers.commands import RUN_STEPS, fast_config
from helpers.models import tiny_spec

LOAD_WITHOUT_SPEECHPRUNE = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "speechprune" or name.startswith("speechprune."):
                raise ImportError("speechprune is not installed here")
    sys.meta_path.insert(0, Block())
    try:
        import speechprune
        sys.exit("speechprune was importable")
    except ImportError:
        pass
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    waveforms = torch.load(sys.argv[2])
    with torch.no_grad():
        out = model(waveforms, output_hidden_states=True)
    torch.save({"last": out.last_hidden_state, "hidden": out.hidden_states}, sys.argv[3])
    """
)


@pytest.fixture
def pruned_run(finished_run):
    """The shared finished run of the tiny WavLM Large (the hardest family: position bias, pre-LN, conv LayerNorms)."""
    return finished_run("wavlm", "large")


def file_elements(path) -> int:
    with safe_open(str(path), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def masked_outputs(run_dir, waveforms):
    snap = read_run(run_dir)
    from speechprune.model.encoder import Encoder

    dense = Encoder(snap.spec).eval()
    dense.load_state_dict(snap.state)
    with torch.no_grad():
        return dense(waveforms, None, snap.layout.values(snap.values).masks())


def test_cli_shrink_writes_an_exact_loadable_model(pruned_run, audio_dir, tmp_path, capsys):
    out = tmp_path / "model"
    code = main(["shrink", str(pruned_run), "--out", str(out), "--data", str(audio_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    summary = json.loads((pruned_run / "summary.json").read_text())
    assert report["params"] == summary["params_pruned"] == file_elements(out / "model.safetensors")
    assert report["max_relative_error_vs_masked"] < 1e-4
    assert set(report["fidelity_cosine"]) == {"0", "1", "2", "3"}
    assert all(-1 <= v <= 1 for v in report["fidelity_cosine"].values())
    for name in ("config.json", "model.safetensors", "modeling_speechprune.py", "README.md", "preprocessor_config.json"):
        assert (out / name).exists()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "speechprune" and config["auto_map"]["AutoModel"].endswith("SpeechpruneModel")
    layers = config["encoder"]["layers"]
    assert all({"heads", "qk_dim", "vo_dim", "ffn_dim", "attention", "ffn"} <= set(layer) for layer in layers)
    card = (out / "README.md").read_text()
    assert f"{summary['params_pruned']:,}" in card and "speechprune shrink" in card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left

    waveforms = torch.randn(2, 12000, generator=torch.Generator().manual_seed(0))
    expected = masked_outputs(pruned_run, waveforms)
    model = speechprune.load(out)
    with torch.no_grad():
        got = model(waveforms, output_hidden_states=True)
    assert len(got.hidden_states) == len(expected.hidden_states)
    for a, b in zip(expected.hidden_states, got.hidden_states):
        assert (a - b).abs().max() / a.abs().max() < 1e-4

    torch.save(waveforms, tmp_path / "in.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_SPEECHPRUNE, str(out), str(tmp_path / "in.pt"),
                           str(tmp_path / "out.pt")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    remote = torch.load(tmp_path / "out.pt")
    assert (remote["last"] - got.last_hidden_state).abs().max() < 1e-6


def test_half_precision_file(pruned_run, tmp_path):
    full = shrink_run(pruned_run, tmp_path / "fp32")
    half = shrink_run(pruned_run, tmp_path / "fp16", dtype="float16")
    assert half["params"] == full["params"]
    assert half["file_bytes"] < 0.6 * full["file_bytes"]
    model = speechprune.load(tmp_path / "fp16")
    assert next(model.parameters()).dtype == torch.float16


def test_unfinished_run_shrinks_its_checkpoint(pruned_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(pruned_run, run)
    (run / "summary.json").unlink()
    (run / "masks.safetensors").unlink()
    code = main(["shrink", str(run), "--out", str(tmp_path / "model")])
    assert code == 0
    assert "not finished" in capsys.readouterr().err
    assert json.loads((tmp_path / "model" / "config.json").read_text())["speechprune"]["run_step"] == RUN_STEPS


def _changed(spec, **layer0):
    """``spec`` with fields of its first layer replaced (a copy)."""
    changed = EncoderSpec.from_dict(spec.to_dict())
    changed.layers[0] = replace(changed.layers[0], **layer0)
    return changed


def test_only_uniform_ffn_units_fit_a_stock_config():
    dense = tiny_spec("hubert")
    narrower = EncoderSpec.from_dict(dense.to_dict())
    narrower.layers = [replace(layer, ffn_dim=40) for layer in narrower.layers]
    assert stock_compatible(dense, dense) and stock_compatible(narrower, dense)
    assert not stock_compatible(_changed(narrower, ffn_dim=48), dense)  # uneven FFN widths
    assert not stock_compatible(_changed(dense, heads=[0, 1, 2]), dense)
    assert not stock_compatible(_changed(dense, vo_dim=8, vo_dims=[8, 12, 12, 12]), dense)
    assert not stock_compatible(_changed(dense, attention=False), dense)
    fewer_channels = EncoderSpec.from_dict(dense.to_dict())
    fewer_channels.conv_channels = [24] * 6 + [20]
    assert not stock_compatible(fewer_channels, dense)


def test_stock_compatible_result_also_gets_a_stock_config(model_dir, audio_dir, tmp_path):
    run = tmp_path / "run"
    prune(fast_config(model_dir("hubert"), audio_dir, run, 0.3, structures=["int"]))
    snap = read_run(run)
    values = snap.layout.values(torch.ones(snap.layout.size, dtype=torch.float64))
    for l in range(3):
        values.get("int", l)[:40] = 0  # the same FFN width in every layer
    spec, state = shrink_encoder(snap.spec, snap.state, snap.layout, values.flat)
    assert stock_compatible(spec, snap.spec)
    from speechprune.shrink.job import _stock_export

    write_model_folder(tmp_path / "model", spec, state, dtype="float32", card="card", provenance={},
                       preprocessor={}, stock=_stock_export(snap, spec, state))
    from transformers import AutoModel

    stock = AutoModel.from_pretrained(tmp_path / "model" / "stock").eval()  # no remote code
    assert type(stock).__name__ == "HubertModel" and stock.config.intermediate_size == 56
    waveforms = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (stock(waveforms).last_hidden_state - speechprune.load(tmp_path / "model")(waveforms).last_hidden_state
                ).abs().max() < 1e-5


def test_bad_inputs(pruned_run, model_dir, tmp_path, capsys):
    cases = [  # (argv, exit code: 2 for a bad option, 1 for a bad run or output folder, words)
        (["shrink", str(tmp_path / "missing")], 1, "not a folder"),
        (["shrink", str(model_dir("wav2vec2"))], 1, "is a model folder, not a prune run"),
        (["shrink", str(pruned_run), "--dtype", "int8", "--out", str(tmp_path / "x")], 2, "--dtype"),
    ]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases.append((["shrink", str(pruned_run), "--out", str(taken)], 1, "--overwrite"))
    for argv, expected, words in cases:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == expected and words in err and "Traceback" not in err, (argv, code, err)
    assert (taken / "keep.txt").read_text() == "mine"

    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(pruned_run, old)
    config = json.loads((old / "config.json").read_text())
    config["format"] = 99
    (old / "config.json").write_text(json.dumps(config))
    assert main(["shrink", str(old), "--out", str(tmp_path / "y")]) == 1
    assert "incompatible" in capsys.readouterr().err


def test_failed_write_leaves_nothing_behind(pruned_run, tmp_path, monkeypatch):
    import speechprune.io.atomic as atomic

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "save_file", disk_full)
    with pytest.raises(DiskFullError) as raised:
        shrink_run(pruned_run, tmp_path / "model")
    assert str(raised.value) == f"no space left on device while writing {tmp_path / 'model'}; free space and rerun"
    assert list(tmp_path.iterdir()) == []
