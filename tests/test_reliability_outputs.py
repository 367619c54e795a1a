"""Nothing lost, part 2: every writing option of every command goes through the one output rule
(io/outputs.py): outputs apart from every input (the cost table included), --overwrite only of
speechprune's own outputs, never the home, root or current folder, and one ``~`` rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

from speechprune.cli.app import app
from speechprune.io.outputs import MARKER, is_own_folder, mark_own, write_json_file
from helpers.commands import cli, hold_lock, refused

TINY = ["--steps", "2", "--crop-seconds", "1.5", "--batch-seconds", "3", "--min-seconds", "1", "--device", "cpu"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model(model_dir, tmp_path) -> Path:
    """A private copy of the tiny wav2vec2 (tests write next to and into it)."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir("wav2vec2"), copy)
    return copy


# ---------------------------------------------------------------- the four loss cases


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_cost_model_never_replaces_a_file_of_the_model(capsys, model, name, no_loading):
    before = snapshot(model)
    message = refused(cli(capsys, "bench", model, "--cost-model", model / name, "--device", "cpu", "--seconds", "1"),
                      2, "--cost-model", "lies inside MODEL")
    assert name in message
    assert snapshot(model) == before


def test_prune_out_holding_its_latency_table_is_refused(capsys, model, audio_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("a prune run written by speechprune\n")  # even a folder of speechprune's own
    (out / "cost.json").write_text(json.dumps({"format": 1, "measured": "for an hour"}))
    before = snapshot(out)
    refused(cli(capsys, "prune", model, "--latency-table", out / "cost.json", "--speedup", "1.5", "--data", audio_dir,
                "--out", out, "--overwrite", *TINY), 2, "contains --latency-table")
    assert snapshot(out) == before


def test_overwrite_refuses_the_home_folder(capsys, model, audio_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    monkeypatch.setenv("HOME", str(home))
    for out in (home, "~", home.parent):
        refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", out, "--overwrite",
                    *TINY), 2, "home folder")
    assert (home / ".ssh" / "id_ed25519").read_text() == "secret"


def test_overwrite_refuses_the_current_folder_and_the_root(capsys, model, audio_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    refused(cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", ".", "--overwrite", *TINY),
            2, "the current folder")
    refused(cli(capsys, "shrink", tmp_path / "no-run", "--out", "/", "--overwrite"), 2, "above")
    assert (work / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["prune", "shrink"])
def test_overwrite_refuses_a_folder_speechprune_did_not_write_and_names_what_is_in_it(capsys, model, audio_dir,
                                                                                        tmp_path, command):
    out = tmp_path / "thesis"
    out.mkdir()
    for name in ("chapter1.tex", "chapter2.tex", "figures", "refs.bib", "notes.md"):
        (out / name).write_text("mine")
    before = snapshot(out)
    args = (["prune", model, "--sparsity", "0.5", "--data", audio_dir, *TINY] if command == "prune"
            else ["shrink", tmp_path / "no-run"])
    message = refused(cli(capsys, *args, "--out", out, "--overwrite"), 1, "chapter1.tex", "did not write",
                      "and 1 more")
    assert "new or empty --out" in message
    assert snapshot(out) == before


def test_overwrite_replaces_speechprune_runs_old_and_new(capsys, model, audio_dir, tmp_path):
    out = tmp_path / "run"
    args = ["prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", out, *TINY]
    assert cli(capsys, *args)[0] == 0
    assert (out / MARKER).is_file() and is_own_folder(out)
    (out / MARKER).unlink()  # a run of a version before the marker: known by its config.json and encoder.json
    assert is_own_folder(out)
    code, _, err = cli(capsys, *args, "--overwrite", "--seed", "1")
    assert code == 0, err
    assert (out / MARKER).is_file() and json.loads((out / "config.json").read_text())["options"]["seed"] == 1


def test_old_shrunk_folders_are_recognised_by_their_config(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "speechprune"}))
    assert is_own_folder(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    assert not is_own_folder(folder)


# ---------------------------------------------------------------- every writing option


def hostile_file(tmp_path: Path, suffix: str) -> Path:
    """A user's file that a mistyped output option must not replace."""
    path = tmp_path / f"precious{suffix}"
    path.write_text(json.dumps({"name": "mine"}) if suffix == ".json" else "mine")
    return path


# command -> option -> the command line that points it at something that is not speechprune's;
# every other option of the command is listed in NOT_WRITTEN.
def writers(model: Path, audio: Path, tmp_path: Path) -> dict[str, dict[str, list]]:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    return {
        "prune": {"out": ["prune", model, "--sparsity", "0.5", "--data", audio, "--out", folder, "--overwrite", *TINY]},
        "shrink": {"out": ["shrink", tmp_path / "no-run", "--out", folder, "--overwrite"]},
        "analyze": {"out": ["analyze", model, "--data", audio, "--out", hostile_file(tmp_path, ".json")],
                    "png": ["analyze", model, "--data", audio, "--png", hostile_file(tmp_path, ".png")]},
        "eval": {"out": ["eval", model, "--data", audio, "--out", hostile_file(tmp_path, ".json")]},
        "bench": {"cost_model": ["bench", model, "--cost-model", hostile_file(tmp_path, ".json"), "--device", "cpu"]},
        "export-onnx": {"out": ["export-onnx", model, "--out", hostile_file(tmp_path, ".onnx"), "--overwrite"]},
    }


NOT_WRITTEN = {
    "prune": {"sparsity", "macs_sparsity", "macs_seconds", "speedup", "latency_table", "round_to", "data", "demo", "revision",
              "structures", "ste", "steps", "warmup_steps", "final_steps", "scores", "init_from_scores", "lr",
              "gate_lr", "lambda_lr", "anneal", "distill_layers", "distill_weights", "crop_seconds", "batch_seconds",
              "min_seconds", "val_fraction", "val_max_files", "tolerance", "seed", "precision", "device", "prefetch",
              "checkpoint_every", "log_every", "resume", "overwrite"},
    "shrink": {"dtype", "data", "fidelity_seconds", "overwrite", "onnx"},
    "analyze": {"data", "max_seconds", "crop_seconds", "batch_seconds", "projections", "drop_one", "teacher", "seed",
                "device"},
    "eval": {"data", "test_data", "test_fraction", "teacher", "max_per_class", "max_seconds_per_clip",
             "batch_seconds", "epochs", "per_layer", "seed", "device", "quantize", "runtime"},
    "bench": {"baseline", "block_step", "device", "dtype", "seconds", "batch", "threads", "warmup", "repeat", "min_time",
              "compile_", "breakdown", "seed", "quantize", "baseline_quantize", "runtime", "baseline_runtime", "latency_table",
              "data"},
    "export-onnx": {"hidden_states", "overwrite", "quantize", "data", "seed"},
}
EVERY_COMMAND_PRINTS = {"json_output", "quiet"}  # stdout only


def test_every_option_of_every_command_is_known_to_write_or_not(model, audio_dir, tmp_path):
    """A new command or option must be listed: as a writer (and then refused below) or as none."""
    known = writers(model, audio_dir, tmp_path)
    for name, command in typer.main.get_command(app).commands.items():
        options = {p.name for p in command.params if p.param_type_name == "option"} - EVERY_COMMAND_PRINTS
        assert name in known, f"new command {name}: add its writing options to writers()"
        assert options == set(known[name]) | NOT_WRITTEN[name], f"{name}: classify {options ^ (set(known[name]) | NOT_WRITTEN[name])}"


WRITING_OPTIONS = [(c, o) for c, options in {"prune": ["out"], "shrink": ["out"], "analyze": ["out", "png"],
                                               "eval": ["out"], "bench": ["cost_model"], "export-onnx": ["out"]}.items()
                   for o in options]


@pytest.mark.parametrize("command,option", WRITING_OPTIONS)
def test_every_writing_option_replaces_only_speechprunes_own_outputs(capsys, model, audio_dir, tmp_path, command,
                                                                      option, no_loading):
    args = writers(model, audio_dir, tmp_path)[command][option]
    target = Path(args[args.index(f"--{option.replace('_', '-')}") + 1])
    before = snapshot(tmp_path)
    message = refused(cli(capsys, *args), 1, str(target))
    assert "speechprune" in message and ("did not write" in message or "replaces only its own" in message)
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- outputs given as symbolic links


@pytest.mark.parametrize("points_at", ["a foreign file or folder", "an input", "the home folder", "the root", "nothing"])
@pytest.mark.parametrize("command,option", WRITING_OPTIONS)
def test_a_writing_option_given_as_a_link_never_replaces_what_it_points_at(capsys, model, audio_dir, tmp_path,
                                                                         monkeypatch, command, option, points_at,
                                                                         no_loading):
    """A link is followed (the output is its target), so it replaces only what its target may be
    replaced for; a link to nothing is refused, not written through."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    monkeypatch.setenv("HOME", str(home))
    args = writers(model, audio_dir, tmp_path)[command][option] + (["--data", audio_dir] if command == "shrink" else [])
    at = args.index(f"--{option.replace('_', '-')}") + 1
    folder_output = command in ("prune", "shrink")
    link = tmp_path / "link"
    link.symlink_to({"a foreign file or folder": args[at],  # what writers() made: a user's folder or file
                     "an input": audio_dir if folder_output else model / "config.json",
                     "the home folder": home, "the root": Path("/"), "nothing": tmp_path / "gone" / "out"}[points_at])
    args[at] = link
    before = snapshot(tmp_path), snapshot(model), snapshot(audio_dir)
    code, _, err = cli(capsys, *args)
    assert code in (1, 2) and "Traceback" not in err and "unexpected" not in err, err
    assert (snapshot(tmp_path), snapshot(model), snapshot(audio_dir)) == before
    assert link.is_symlink() and not (tmp_path / "gone").exists()


def test_a_link_to_an_output_takes_the_lock_of_what_it_points_at(capsys, tmp_path):
    target, link = tmp_path / "small", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    holder = hold_lock(target)
    try:
        refused(cli(capsys, "shrink", tmp_path / "no-run", "--out", link), 1, "is being written by process")
    finally:
        holder.kill()
        holder.wait()


def test_a_link_to_speechprunes_own_output_replaces_its_target_and_stays_a_link(capsys, finished_run, tmp_path):
    own, link = tmp_path / "models" / "small", tmp_path / "small"
    own.mkdir(parents=True)
    mark_own(own, "a shrunk model folder")
    link.symlink_to(own)
    code, _, err = cli(capsys, "shrink", finished_run(), "--out", link, "--overwrite")
    assert code == 0, err
    assert link.is_symlink() and (own / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "small"]  # nothing left beside the link
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"format": 1}))
    (tmp_path / "report-link.json").symlink_to(report)
    write_json_file(tmp_path / "report-link.json", "--out", {"format": 1, "new": True})
    assert (tmp_path / "report-link.json").is_symlink() and json.loads(report.read_text())["new"]


def test_replacing_a_run_deletes_the_links_inside_it_not_what_they_point_at(tmp_path):
    from speechprune.folders.run import RunFolder

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    mark_own(run, "a prune run")
    (run / "checkpoints").symlink_to(kept)
    (run / "metrics.jsonl").symlink_to(kept / "notes.txt")
    record = SimpleNamespace(to_dict=lambda: {"format": 2})  # start_fresh writes what these hold
    RunFolder(run).start_fresh(record, SimpleNamespace(to_dict=lambda: {}), source_config={})
    assert (kept / "notes.txt").read_text() == "mine" and sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in run.iterdir()) == sorted([MARKER, "config.json", "encoder.json", "source_config.json"])


# ---------------------------------------------------------------- one ~ rule


def test_tilde_is_the_home_folder_in_every_command(capsys, model, audio_dir, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "prune", model, "--sparsity", "0.5", "--data", audio_dir, "--out", "~/run", *TINY)
    assert code == 0, err
    assert (home / "run" / "summary.json").is_file() and not (tmp_path / "~").exists()
    code, _, err = cli(capsys, "analyze", "~/run", "--out=~/analysis.json")
    assert code == 0, err
    assert json.loads((home / "analysis.json").read_text())["format"] == 1


# ---------------------------------------------------------------- a crash in --overwrite's folder swap


def test_a_crash_between_the_renames_of_a_folder_swap_keeps_the_old_folder(tmp_path, monkeypatch):
    from speechprune.io import atomic
    from speechprune.io.outputs import OutputLock

    out, new = tmp_path / "model", tmp_path / "new"
    out.mkdir()
    (out / "model.safetensors").write_text("old weights")
    new.mkdir()
    (new / "model.safetensors").write_text("new weights")
    real_rename = Path.rename

    def fail_on_the_new_folder(self, target):
        if self == new:
            raise KeyboardInterrupt  # Ctrl-C between moving the old folder aside and the new one in
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", fail_on_the_new_folder)
    with pytest.raises(KeyboardInterrupt):
        atomic.swap_folder(new, out)
    monkeypatch.setattr(Path, "rename", real_rename)
    assert (out / "model.safetensors").read_text() == "old weights"  # put back at once

    aside = tmp_path / ".model.abcdefgh.speechprune-old"  # what a kill -9 between the renames leaves
    out.rename(aside)
    with OutputLock(out):  # the next writer of the output puts it back before anything else
        assert (out / "model.safetensors").read_text() == "old weights" and not aside.exists()
    atomic.swap_folder(new, out)
    assert (out / "model.safetensors").read_text() == "new weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_file_output_replaces_only_a_file_of_its_own_kind(tmp_path):
    from speechprune.errors import OutputError
    from speechprune.io.outputs import check_replaceable

    own = {"json": json.dumps({"format": 1, "gate_scores": {}}).encode(),
           "png": b"\x89PNG\r\n\x1a\n" + bytes(32),
           "onnx": b"\x08\n\x12\x07pytorch\x1a\n2.13.0+cpu:" + bytes(32)}  # how torch's exporter starts a file
    for kind, content in own.items():
        path = tmp_path / f"out.{kind}"
        path.write_bytes(content)
        check_replaceable(path, "--out", folder=False, kind=kind)
        for other, foreign in own.items():
            if other != kind:
                path.write_bytes(foreign)
                with pytest.raises(OutputError, match="replaces only its own"):
                    check_replaceable(path, "--out", folder=False, kind=kind)
