"""The records of a run folder: typed and versioned, each option stored once, runs of 0.1.0 still
read, and a model card whose prune command, run as printed, makes the same masks."""

import json
import os
import shlex
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from speechprune.errors import RunFolderError
from speechprune.folders.run import RunFolder, read_run
from speechprune.folders.run_record import RunRecord, RunSummary, prune_command
from speechprune.shrink.report import ShrinkReport
from helpers.commands import run_captured
from helpers.data import write_scores, write_table
from helpers.models import tiny_spec

FAST = ["--crop-seconds", "1.5", "--batch-seconds", "3", "--device", "cpu"]


def test_prune_command_writes_the_options_that_differ_from_their_defaults():
    options = {"model": "m", "sparsity": 0.5, "data": "/d", "out": "o", "revision": None, "structures": ["head", "int"],
               "ste": False, "lr": 0.0002, "gate_lr": 1e-05, "init_from_scores": False, "seed": 3, "resume": True}
    defaults = {"structures": ["conv", "head", "int"], "ste": True, "lr": 0.0002, "gate_lr": 0.02,
                "init_from_scores": False, "seed": 0, "resume": False}
    assert prune_command(options, defaults) == [
        "prune", "m", "--sparsity", "0.5", "--data", "/d", "--structures", "head,int", "--no-ste", "--gate-lr", "1e-05",
        "--seed", "3"]
    # without defaults (runs of format 1) every option is written, except where the run goes
    assert prune_command({**options, "ste": True, "init_from_scores": True}) == [
        "prune", "m", "--sparsity", "0.5", "--data", "/d", "--structures", "head,int", "--ste", "--lr", "0.0002",
        "--gate-lr", "1e-05", "--init-from-scores", "--seed", "3"]


def card_commands(model_folder) -> list[list[str]]:
    """The commands under "How it was made" in a model card, split as a shell would."""
    text = (model_folder / "README.md").read_text().split("## How it was made", 1)[1]
    block = text.split("```", 2)[1]
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def absolute(options, cwd) -> dict:
    """``options`` with the paths of its inputs made absolute from ``cwd``, and without --out."""
    paths = {k: str((cwd / options[k]).resolve()) for k in ("model", "data", "scores", "latency_table") if options[k]}
    return {**options, **paths, "out": None}


def masks_and_weights(run, model):
    return load_file(str(run / "masks.safetensors")), load_file(str(model / "model.safetensors"))


@pytest.fixture
def inputs(model_dir, audio_dir, tmp_path, monkeypatch):
    """Model, audio, scores and cost table named by paths relative to the working folder, tmp_path/work."""
    model = model_dir("wav2vec2")
    write_scores(tmp_path / "scores.json", model)
    write_table(tmp_path / "table.json", tiny_spec())
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return {name: os.path.relpath(path) for name, path in (("model", model), ("audio", audio_dir),
                                                            ("scores", tmp_path / "scores.json"),
                                                            ("table", tmp_path / "table.json"))}


@pytest.mark.parametrize("case", ["trained", "one-shot"])
def test_the_model_cards_command_run_as_printed_makes_the_same_masks(inputs, tmp_path, monkeypatch, case):
    options = {
        "trained": ["--sparsity", "0.5", "--macs-sparsity", "0.3", "--macs-seconds", "2", "--steps", "5",
                    "--warmup-steps", "2", "--final-steps", "1", "--seed", "3", "--lr", "0.0005", "--gate-lr", "0.3",
                    "--lambda-lr", "0.05", "--anneal", "4", "--structures", "int,conv,head,qk", "--distill-layers", "0,3",
                    "--distill-weights", "1,2", "--tolerance", "0.02", "--min-seconds", "1.2", "--val-fraction", "0.1"],
        "one-shot": ["--sparsity", "0.6", "--steps", "0", "--scores", inputs["scores"],
                     "--latency-table", inputs["table"], "--speedup", "1.3"],
    }[case]
    code, _, err = run_captured("prune", inputs["model"], "--data", inputs["audio"], "--out", "first", *FAST, *options)
    assert code == 0, err
    code, _, err = run_captured("shrink", "first", "--out", "first-model")
    assert code == 0, err
    prune_argv, shrink_argv = card_commands(tmp_path / "work" / "first-model")
    assert shrink_argv == ["speechprune", "shrink", "first", "--out", "first-model"]
    assert prune_argv[:2] == ["speechprune", "prune"] and "--out" not in prune_argv
    if case == "trained":
        assert prune_argv[prune_argv.index("--structures") + 1] == "conv,head,qk,int"  # as resolved

    elsewhere = tmp_path / "elsewhere"  # where the relative paths of the first run lead nowhere
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_captured(*prune_argv[1:])
    assert code == 0, err
    (again,) = (elsewhere / "runs").iterdir()  # the default --out
    code, _, err = run_captured("shrink", again, "--out", "again-model")
    assert code == 0, err

    first = RunFolder(tmp_path / "work" / "first").record()
    second = RunFolder(again).record()
    assert absolute(first.options, tmp_path / "work") == absolute(second.options, elsewhere)
    assert second.command == first.command
    masks, weights = masks_and_weights(tmp_path / "work" / "first", tmp_path / "work" / "first-model")
    masks_again, weights_again = masks_and_weights(again, elsewhere / "again-model")
    assert masks.keys() == masks_again.keys() and weights.keys() == weights_again.keys()
    assert all(torch.equal(masks[k], masks_again[k]) for k in masks)
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)


@pytest.fixture(scope="module")
def run_without_annealing(model_dir, audio_dir, tmp_path_factory):
    """A finished run that 0.1.0 could have made (no annealing, only a parameter budget)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    code, _, err = run_captured("prune", model_dir("hubert"), "--data", audio_dir, "--out", out, "--sparsity", "0.5",
                                "--steps", "4", "--anneal", "1", "--structures", "head,int", "--seed", "1", *FAST)
    assert code == 0, err
    return out


def test_a_new_run_stores_each_option_once(run_without_annealing):
    text = (run_without_annealing / "config.json").read_text()
    assert text.count('"structures"') == 1 and text.count('"ste"') == 1 and text.count('"seed"') == 1
    record = RunFolder(run_without_annealing).record()
    assert record.format == 2 and record.structures == ["head", "int"] and record.ste is True
    assert RunRecord.from_dict(record.to_dict()) == record
    with safe_open(str(run_without_annealing / "masks.safetensors"), "pt") as f:
        assert not (f.metadata() or {}).get("structures")
    summary = json.loads((run_without_annealing / "summary.json").read_text())
    assert summary["format"] == 3 and RunSummary.from_dict(summary).to_dict() == summary
    assert all(isinstance(budget["fits"], bool) for budget in summary["budgets"].values())


def test_a_format_2_summary_reads_its_budgets_within_tolerance_as_fits(run_without_annealing):
    """Format 2 wrote a budget's "at or under its window" as within_tolerance, the top level's
    "the decision lands" name; format 3 calls it fits, and reads the old name."""
    summary = json.loads((run_without_annealing / "summary.json").read_text())
    old_budgets = {name: {("within_tolerance" if key == "fits" else key): value for key, value in budget.items()}
                   for name, budget in summary["budgets"].items()}
    read = RunSummary.from_dict({**summary, "format": 2, "budgets": old_budgets})
    assert read.budgets == summary["budgets"] and read.within_tolerance == summary["within_tolerance"]


def test_the_shrink_report_is_typed_and_its_provenance_kept(run_without_annealing, tmp_path):
    code, stdout, err = run_captured("shrink", run_without_annealing, "--out", tmp_path / "model", "--json")
    assert code == 0, err
    report = ShrinkReport.from_dict(json.loads(stdout))
    assert report.format == 1 and report.run_finished
    assert report.file_bytes == (tmp_path / "model" / "model.safetensors").stat().st_size
    assert report.to_dict() == json.loads(stdout)
    assert json.loads((tmp_path / "model" / "config.json").read_text())["speechprune"] == report.provenance()
    with pytest.raises(ValueError, match="format 1"):
        ShrinkReport.from_dict({**report.to_dict(), "format": 2})


def test_the_card_of_a_run_of_several_processes_starts_as_many(run_without_annealing, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_without_annealing, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "world_size": 2}))
    code, _, err = run_captured("shrink", run, "--out", tmp_path / "model")
    assert code == 0, err
    prune_argv, _ = card_commands(tmp_path / "model")
    assert prune_argv[:6] == ["torchrun", "--nproc-per-node", "2", "-m", "speechprune", "prune"]


# Option names of speechprune 0.1.0, and those that did not define its result.
OPTIONS_0_1_0 = ("model", "sparsity", "data", "out", "revision", "structures", "ste", "steps", "warmup_steps",
                 "final_steps", "lr", "gate_lr", "lambda_lr", "distill_layers", "distill_weights", "crop_seconds",
                 "batch_seconds", "min_seconds", "val_fraction", "val_max_files", "tolerance", "scores",
                 "init_from_scores", "seed", "precision", "device", "checkpoint_every", "log_every", "resume", "overwrite")
NOT_RESULT_DEFINING_0_1_0 = ("out", "overwrite", "resume", "device", "log_every", "checkpoint_every")
SUMMARY_0_1_0 = ("run_dir", "model", "family", "params_dense", "params_pruned", "sparsity", "target_sparsity",
                 "target_params", "target_miss", "within_tolerance", "steps", "final_steps", "world_size",
                 "val_distill", "params_by_component", "kept", "audio", "train_seconds")


def as_written_by_0_1_0(run, folder):
    """A copy of ``run`` whose config.json and summary.json have the shape speechprune 0.1.0 wrote."""
    shutil.copytree(run, folder)
    new = json.loads((run / "config.json").read_text())
    options = {name: new["options"][name] for name in OPTIONS_0_1_0}
    old = {
        "format": 1, "speechprune": "0.1.0", "torch": "2.4.1", "transformers": "4.45.2", "python": "3.10.12",
        "options": {**{k: v for k, v in options.items() if k not in NOT_RESULT_DEFINING_0_1_0}, "world_size": 1},
        "all_options": options,
        "source": new["source"],
        "audio": new["audio"],
        "gates": {"structures": options["structures"], "count": new["gates"]["count"], "ste": options["ste"]},
        "params_dense": new["params_dense"],
    }
    (folder / "config.json").write_text(json.dumps(old))
    summary = json.loads((run / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({k: summary[k] for k in SUMMARY_0_1_0}))
    return options


def test_a_run_of_0_1_0_is_read_resumed_and_reproduced(run_without_annealing, audio_dir, tmp_path, monkeypatch):
    old = tmp_path / "old"
    options = as_written_by_0_1_0(run_without_annealing, old)
    snap = read_run(old)
    assert snap.record.format == 1 and snap.layout.kinds == ("head", "int") and snap.record.ste
    assert snap.record.budgets == {"params": {"option": "--sparsity", "sparsity": 0.5}}
    assert torch.equal(snap.values, read_run(run_without_annealing).values)

    # resuming with the same options finds it finished and prints its 0.1.0 summary (no MACs in it)
    code, stdout, err = run_captured("prune", options["model"], "--data", audio_dir, "--out", old, "--sparsity", "0.5",
                                     "--steps", "4", "--anneal", "1", "--structures", "head,int", "--seed", "1",
                                     *FAST, "--resume")
    assert code == 0 and "nothing to do" in err and "GMACs" not in stdout and "--sparsity 0.5" in stdout, err
    # another --anneal than the one 0.1.0 runs had (none) is a change of options
    code, _, err = run_captured("prune", options["model"], "--data", audio_dir, "--out", old, "--sparsity", "0.5",
                                "--steps", "4", "--structures", "head,int", "--seed", "1", *FAST, "--resume")
    assert code == 1 and "anneal: 1.0 -> 30.0" in err

    code, _, err = run_captured("shrink", old, "--out", tmp_path / "old-model")
    assert code == 0, err
    prune_argv, _ = card_commands(tmp_path / "old-model")
    assert prune_argv[prune_argv.index("--anneal") + 1] == "1.0"  # what reproduces a run without annealing
    monkeypatch.chdir(tmp_path)
    code, _, err = run_captured(*prune_argv[1:])
    assert code == 0, err
    (again,) = (tmp_path / "runs").iterdir()
    assert torch.equal(load_file(str(again / "masks.safetensors"))["values"],
                       load_file(str(old / "masks.safetensors"))["values"])


def test_records_of_another_format_are_refused_in_one_line(run_without_annealing, tmp_path):
    newer = tmp_path / "newer"
    shutil.copytree(run_without_annealing, newer)
    config = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps({**config, "format": 3, "speechprune": "9.0"}))
    with pytest.raises(RunFolderError, match=r"incompatible speechprune \(9.0, run format 3; this one reads formats "
                                             r"1 to 2\): use that speechprune version, or prune again"):
        read_run(newer)
    del config["source"]
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunFolderError, match=r"config.json is damaged \(KeyError: 'source'\)"):
        read_run(newer)
    summary = json.loads((run_without_annealing / "summary.json").read_text())
    with pytest.raises(RunFolderError, match="run format 4"):
        RunSummary.from_dict({**summary, "format": 4})


def test_every_option_of_a_run_has_a_command_line_flag():
    """Otherwise no printed command could reproduce a run that set it."""
    import inspect
    from dataclasses import fields

    from speechprune.cli.prune import command
    from speechprune.prune.config import PruneConfig

    assert {f.name for f in fields(PruneConfig)} <= set(inspect.signature(command).parameters)
