"""`speechprune prune`: gated distillation of an encoder to its budgets (parameters, MACs, predicted latency)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from ..errors import DataError, UsageError
from ..method.currencies import CURRENCIES, DEFAULT_TOLERANCE, ask_for_budget
from ..method.gates import GATE_KINDS
from ..model.device import DTYPES
from ..prune.config import PruneConfig
from ..prune.distributed import Distributed
from .lists import comma_list
from .options import DeviceOption, JsonOption, QuietOption, overwrite_option, seed_option
from .output import Output

NO_DATA = (
    "no audio given: pass --data with a folder (or manifest) of unlabelled speech in the model's language, "
    "e.g. a LibriSpeech split such as train-clean-100, or set SPEECHPRUNE_DATA; "
    "to try the tool without data run `speechprune prune --demo`"
)
DEMO_FOLDER = Path("runs") / "demo-inputs"

SeedOption = seed_option("data order, crops and gate noise")
OverwriteOption = overwrite_option("the run (or other speechprune output) in --out")


def command(
    model: Optional[str] = typer.Argument(None, help="Hub id (facebook/wav2vec2-base) or local folder saved with save_pretrained."),
    sparsity: Optional[float] = typer.Option(None, help="Fraction of encoder parameters to remove, in (0, 1). [default: 0.72 with --demo]"),
    macs_sparsity: Optional[float] = typer.Option(None, help="Fraction of encoder MACs to remove, in (0, 1), for --macs-seconds of audio; alone or with --sparsity."),
    macs_seconds: Optional[float] = typer.Option(None, help="Audio length (batch 1) the MACs budget counts. [default: 10]"),
    speedup: Optional[float] = typer.Option(None, help="Predicted speedup to reach, above 1 (e.g. 3: a third of the dense latency), predicted by --latency-table; alone or with the other budgets."),
    latency_table: Optional[str] = typer.Option(None, help="Cost table of this model from speechprune bench MODEL --cost-model FILE, for --speedup; with width steps it also guides --round-to auto."),
    round_to: Optional[str] = typer.Option(None, help="Where the decision's widths (conv channels, FFN units, per-head dims) land: N rounds each to a multiple of N, auto to widths --latency-table says run fast, none keeps them. [default: auto with a table of width steps, else none]"),
    data: Optional[str] = typer.Option(None, envvar="SPEECHPRUNE_DATA", help="Folder of audio (searched recursively) or manifest file."),
    out: Optional[str] = typer.Option(None, help="Run folder. [default: runs/<model>-<sparsity>]"),
    demo: bool = typer.Option(False, "--demo", help="Run offline on a built-in tiny model and generated audio."),
    revision: Optional[str] = typer.Option(None, help="Hub revision (branch, tag or commit) of MODEL."),
    structures: str = typer.Option(",".join(GATE_KINDS), help=f"Structures to gate, from {','.join(GATE_KINDS)}."),
    ste: bool = typer.Option(True, "--ste/--no-ste", help="Straight-through estimator (binary masks in training) or relaxed gates."),
    steps: Optional[int] = typer.Option(None, help="Pruning steps; 0 decides in one shot from --scores. [default: 20000; 150 with --demo]"),
    warmup_steps: Optional[int] = typer.Option(None, help="Steps over which the target ramps from 0. [default: 30% of --steps]"),
    final_steps: int = typer.Option(0, help="Extra distillation steps with the masks frozen."),
    scores: Optional[str] = typer.Option(None, help="JSON from speechprune analyze --out: one-shot ranking (--steps 0) or warm start."),
    init_from_scores: bool = typer.Option(False, "--init-from-scores", help="Start the gates of a full run from --scores."),
    lr: float = typer.Option(2e-4, help="Learning rate of the weights."),
    gate_lr: float = typer.Option(2e-2, help="Learning rate of the gate logits."),
    lambda_lr: float = typer.Option(2e-2, help="Learning rate of the Lagrange multipliers."),
    anneal: float = typer.Option(30.0, help="Gate sharpness reached at the end of the pruning phase, from 1 once the target ramp is done, with the expected costs held on the targets: the decision lands where training went. 1 turns annealing off."),
    distill_layers: Optional[str] = typer.Option(None, help="Hidden states to distil, e.g. 0,4,8,12 (0 = input of layer 1). [default: 0 and every third layer]"),
    distill_weights: Optional[str] = typer.Option(None, help="Loss weight per distilled layer, e.g. 1,1,1,2."),
    crop_seconds: Optional[float] = typer.Option(None, help="Length of the random crops. [default: 4; 2 with --demo]"),
    batch_seconds: Optional[float] = typer.Option(None, help="Audio seconds per batch and process. [default: 64; 16 with --demo]"),
    min_seconds: float = typer.Option(1.0, help="Skip files shorter than this."),
    val_fraction: float = typer.Option(0.02, help="Share of files held out for the validation loss."),
    val_max_files: int = typer.Option(100, help="At most this many files held out for the validation loss."),
    tolerance: float = typer.Option(DEFAULT_TOLERANCE, help="Allowed relative miss of each budget target (parameters, MACs) by the final keep decision, in (0, 1)."),
    seed: SeedOption = 0,
    precision: str = typer.Option("float32", help=f"Numeric precision of training (autocast): {'|'.join(DTYPES)} (fp32, bf16, fp16 also accepted)."),
    device: DeviceOption = "auto",
    prefetch: bool = typer.Option(True, help="Read and crop the next batch of audio on a background thread while a step trains (the batches are the same either way)."),
    checkpoint_every: int = typer.Option(500, help="Save a checkpoint every N steps."),
    log_every: int = typer.Option(50, help="Log line every N steps when not on a terminal."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (starts it if there is none)."),
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Prune MODEL to --sparsity (parameters), --macs-sparsity (compute) and/or --speedup (predicted latency) by gated distillation on unlabelled audio.

    \b
    Example: speechprune prune facebook/wav2vec2-base --sparsity 0.72 --macs-sparsity 0.72 --data /data/LibriSpeech/train-clean-100
    """
    main_rank = Distributed.from_env().is_main  # under torchrun only rank 0 talks
    output = Output(json_mode=json_output and main_rank, quiet=quiet or not main_rank)
    if demo:
        if model is not None:
            raise UsageError("--demo brings its own model; drop MODEL or drop --demo")
        from ..prune.demo import prepare_demo

        output.info(f"demo: tiny random wav2vec2 model and generated audio in {DEMO_FOLDER}/")
        model_dir, audio_dir = prepare_demo(DEMO_FOLDER)
        model, data = str(model_dir), str(audio_dir)
        sparsity = 0.72 if sparsity is None else sparsity
        steps = 150 if steps is None else steps
        crop_seconds = 2.0 if crop_seconds is None else crop_seconds
        batch_seconds = 16.0 if batch_seconds is None else batch_seconds
        out = out or "runs/demo"
    if model is None:
        raise UsageError("missing MODEL: give a hub id or model folder, e.g. speechprune prune facebook/wav2vec2-base --sparsity 0.72")
    # Every option goes as given into the PruneConfig field of its name (tests/test_records.py checks
    # that each field has one), --demo's values included; a few are given in another form (below)
    given = locals()
    if all(given[currency.field] is None for currency in CURRENCIES):
        raise UsageError(f"missing budget: {ask_for_budget()}")
    if not data:
        raise DataError(NO_DATA)
    config = PruneConfig(**{f.name: given[f.name] for f in fields(PruneConfig)} | dict(
        out=out or default_out(model, sparsity, macs_sparsity, speedup),
        structures=[s.strip() for s in structures.split(",") if s.strip()],
        steps=20_000 if steps is None else steps,
        distill_layers=comma_list("--distill-layers", distill_layers, int) if distill_layers else None,
        distill_weights=comma_list("--distill-weights", distill_weights, float) if distill_weights else None,
        crop_seconds=4.0 if crop_seconds is None else crop_seconds,
        batch_seconds=64.0 if batch_seconds is None else batch_seconds,
    ))
    config.validate()

    from ..prune.job import prune
    from ..prune.records import summary_line

    summary = prune(config, output.reporter(log_every))
    output.result(summary, summary_line(summary))


def default_out(model: str, sparsity: float | None, macs_sparsity: float | None, speedup: float | None) -> str:
    """runs/<model>-p<sparsity>-m<macs sparsity>-x<speedup> (each currency's ``folder_tag``), each
    value exactly as the float it is (0.72 -> p0.72, 0.725 -> p0.725, 3 -> x3): two runs of
    different budgets never share a folder."""
    name = Path(model.rstrip("/")).name
    given = zip(CURRENCIES, (sparsity, macs_sparsity, speedup))
    budgets = [f"{currency.folder_tag}{exact(value)}" for currency, value in given if value is not None]
    return str(Path("runs") / "-".join([name, *budgets]))


def exact(value: float) -> str:
    """The shortest text that reads back as ``value`` (Python's repr), without a trailing ".0";
    unlike a rounded form (:g keeps six digits) it differs for every two different values."""
    text = repr(float(value))
    return text.removesuffix(".0")
