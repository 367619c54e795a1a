"""`speechprune prune`: gated distillation of an encoder to its budgets (parameters, MACs, predicted latency)."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Optional

import typer

from ..errors import DataError, UsageError
from ..method.currencies import CURRENCIES, ask_for_budget
from ..prune.config import PruneConfig
from ..prune.distributed import Distributed
from .lists import comma_list
from .options import DeviceOption, JsonOption, QuietOption
from .output import Output

NO_DATA = (
    "no audio given: pass --data with a folder (or manifest) of unlabelled speech in the model's language, "
    "e.g. a LibriSpeech split such as train-clean-100, or set SPEECHPRUNE_DATA; "
    "to try the tool without data run `speechprune prune --demo`"
)
DEMO_FOLDER = Path("runs") / "demo-inputs"


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


FIELDS = {f.name: f for f in fields(PruneConfig)}
# What --demo sets when the option is not given (its help says so beside the field's default)
DEMO = {"sparsity": 0.72, "steps": 150, "crop_seconds": 2.0, "batch_seconds": 16.0}


def config_option(name: str, *flags: str, **settings):
    """The ``typer.Option`` of the ``PruneConfig`` field ``name``, its default and help taken from
    the field (a list's default comma-joined). An option that --demo sets has no default on the
    command line: the field's applies when neither gives one, and the help names both."""
    field = FIELDS[name]
    default = field.default_factory() if field.default_factory is not MISSING else field.default
    default = ",".join(map(str, default)) if isinstance(default, list) else default
    text = field.metadata["help"]
    if name in DEMO:
        shown = [exact(default)] if default is not MISSING else []
        text += f" [default: {'; '.join(shown + [exact(DEMO[name]) + ' with --demo'])}]"
        default = None
    return typer.Option(None if default is MISSING else default, *flags, help=text, **settings)


def command(
    model: Optional[str] = typer.Argument(None, help=FIELDS["model"].metadata["help"]),
    sparsity: Optional[float] = config_option("sparsity"),
    macs_sparsity: Optional[float] = config_option("macs_sparsity"),
    macs_seconds: Optional[float] = config_option("macs_seconds"),
    speedup: Optional[float] = config_option("speedup"),
    latency_table: Optional[str] = config_option("latency_table"),
    round_to: Optional[str] = config_option("round_to"),
    data: Optional[str] = config_option("data", envvar="SPEECHPRUNE_DATA"),
    out: Optional[str] = config_option("out"),
    demo: bool = typer.Option(False, "--demo", help="Run offline on a built-in tiny model and generated audio."),
    revision: Optional[str] = config_option("revision"),
    structures: str = config_option("structures"),
    ste: bool = config_option("ste", "--ste/--no-ste"),
    steps: Optional[int] = config_option("steps"),
    warmup_steps: Optional[int] = config_option("warmup_steps"),
    final_steps: int = config_option("final_steps"),
    scores: Optional[str] = config_option("scores"),
    init_from_scores: bool = config_option("init_from_scores", "--init-from-scores"),
    lr: float = config_option("lr"),
    gate_lr: float = config_option("gate_lr"),
    lambda_lr: float = config_option("lambda_lr"),
    anneal: float = config_option("anneal"),
    distill_layers: Optional[str] = config_option("distill_layers"),
    distill_weights: Optional[str] = config_option("distill_weights"),
    crop_seconds: Optional[float] = config_option("crop_seconds"),
    batch_seconds: Optional[float] = config_option("batch_seconds"),
    min_seconds: float = config_option("min_seconds"),
    val_fraction: float = config_option("val_fraction"),
    val_max_files: int = config_option("val_max_files"),
    tolerance: float = config_option("tolerance"),
    seed: int = config_option("seed"),
    precision: str = config_option("precision"),
    device: DeviceOption = FIELDS["device"].default,
    prefetch: bool = config_option("prefetch"),
    checkpoint_every: int = config_option("checkpoint_every"),
    log_every: int = config_option("log_every"),
    resume: bool = config_option("resume", "--resume"),
    overwrite: bool = config_option("overwrite", "--overwrite"),
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Prune MODEL to --sparsity (parameters), --macs-sparsity (compute) and/or --speedup (predicted latency) by gated distillation on unlabelled audio.

    \b
    Example: speechprune prune facebook/wav2vec2-base --sparsity 0.72 --macs-sparsity 0.72 --data /data/LibriSpeech/train-clean-100
    """
    main_rank = Distributed.from_env().is_main  # under torchrun only rank 0 talks
    output = Output(json_mode=json_output and main_rank, quiet=quiet or not main_rank)
    config = prune_config(locals(), output)
    config.validate()

    from ..prune.job import prune
    from ..prune.records import summary_line

    summary = prune(config, output.reporter(log_every))
    output.result(summary, summary_line(summary))


def prune_config(given: dict, output: Output) -> PruneConfig:
    """The run's ``PruneConfig`` from the command's arguments ``given`` (each option in the field
    of its name; tests/test_records.py checks that each field has one), --demo's values
    included; a few are given in another form (comma lists)."""
    options = {name: given[name] for name in FIELDS}
    if given["demo"]:
        if options["model"] is not None:
            raise UsageError("--demo brings its own model; drop MODEL or drop --demo")
        from ..prune.demo import prepare_demo

        output.info(f"demo: tiny random wav2vec2 model and generated audio in {DEMO_FOLDER}/")
        model_dir, audio_dir = prepare_demo(DEMO_FOLDER)
        options |= {name: value for name, value in DEMO.items() if options[name] is None}
        options |= dict(model=str(model_dir), data=str(audio_dir), out=options["out"] or "runs/demo")
    if options["model"] is None:
        raise UsageError("missing MODEL: give a hub id or model folder, e.g. speechprune prune facebook/wav2vec2-base --sparsity 0.72")
    if all(options[currency.field] is None for currency in CURRENCIES):
        raise UsageError(f"missing budget: {ask_for_budget()}")
    if not options["data"]:
        raise DataError(NO_DATA)
    # options left out on the command line (None) that have a default of their own take it
    options = {name: value for name, value in options.items()
               if value is not None or FIELDS[name].default in (None, MISSING)}
    layers, weights = options["distill_layers"], options["distill_weights"]
    out = options["out"]  # "" is not "not given": check_output refuses it
    return PruneConfig(**options | dict(
        out=out if out is not None else default_out(options["model"], *(options[c.field] for c in CURRENCIES)),
        structures=[s.strip() for s in options["structures"].split(",") if s.strip()],
        distill_layers=comma_list("--distill-layers", layers, int) if layers else None,
        distill_weights=comma_list("--distill-weights", weights, float) if weights else None,
    ))
