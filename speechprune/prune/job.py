"""The ``prune`` job: gated distillation of an encoder down to its budgets (parameters, MACs,
predicted latency).

Reading order: ``prune`` checks everything that is cheap (options, model config, run
folder, audio) before it loads any weights, then hands over to ``lifecycle.Pruning``, whose
``run`` is the training loop: a pruning phase (gates, weights and Lagrange multipliers trained
together while the target ramps up, one ``step.train_step`` at a time), the decision that
lands on the budget, and an optional final phase that distils with the masks frozen.
"""

from __future__ import annotations

import contextlib
import json
import math

import torch

from ..checks import check_fits_in_memory, check_long_enough
from ..errors import DataError, DiskFullError
from ..folders.run import RunFolder
from ..io.audio import corpus_fingerprint, scan_reported
from ..io.batches import split_validation
from ..io.outputs import OutputLock, check_output
from ..io.progress import Reporter
from ..io.reading import read_text
from ..method.accounting import spec_parameter_count
from ..method.budget import Budget, macs_budget, params_budget
from ..method.currencies import CURRENCIES, LATENCY, MACS, PARAMS
from ..method.gates import GateLayout, gate_flat
from ..method.latency import CostTable, check_architecture, latency_budget
from ..method.widths import width_rule
from ..model.device import check_precision, resolve_device
from ..model.loading import ModelInfo, describe_source, inspect_model, load_encoder
from ..model.memory import FLOAT_BYTES
from .config import PruneConfig
from .distributed import Distributed
from .lifecycle import Pruning
from .records import budget_records, run_options

TRAINING_WEIGHT_COPIES = 5  # the teacher, the student, its gradients and Adam's two moments


def prune(config: PruneConfig, reporter: Reporter | None = None) -> dict:
    """Run (or resume) a pruning job and return its summary."""
    reporter = reporter or Reporter()
    config.validate()
    check_output(config.out, "--out", prune_inputs(config), folder=True, overwrite=config.overwrite)
    ranks = Distributed.from_env()
    try:  # one writer per run folder: rank 0 holds its lock (the other ranks write nothing)
        with OutputLock(config.out) if ranks.is_main else contextlib.nullcontext():
            return _prune(config, reporter, ranks)
    except DiskFullError as error:
        error.rerun = "rerun with --resume"
        raise


def prune_inputs(config: PruneConfig) -> dict[str, str | None]:
    """Every file or folder a run reads, which its --out must stay apart from."""
    return {"MODEL": config.model, "--data": config.data, "--scores": config.scores,
            "--latency-table": config.latency_table}


def _training_audio(config: PruneConfig, reporter: Reporter, processes: int):
    """(the scanned --data, its training part, its validation part), with a line saying what was found."""
    corpus = scan_reported(config.data, reporter, min_seconds=config.min_seconds)
    train, val = split_validation(corpus, fraction=config.val_fraction, max_files=config.val_max_files, seed=config.seed)
    if len(train.files) < processes:
        raise DataError(f"{len(train.files)} training files for {processes} processes; every process needs at least "
                        "one file")
    reporter.message(
        f"audio: {len(corpus.files)} files, {corpus.seconds / 3600:.2f} h from {config.data}"
        + (f" (skipped {corpus.skipped.describe()})" if corpus.skipped.total else "")
        + f"; {len(val.files)} held out for validation"
    )
    return corpus, train, val


def _prune(config: PruneConfig, reporter: Reporter, ranks: Distributed) -> dict:
    device = resolve_device(config.device, ranks.local_rank)
    check_precision(config.precision, device, "--precision")

    info = inspect_model(config.model, config.revision)
    config.resolve(len(info.spec.layers))
    if config.macs_sparsity is not None:  # MACs of audio that makes no frame are no budget
        check_long_enough(config.reference_seconds, "--macs-seconds", config.model, info.spec, info.audio.sampling_rate)
    layout = GateLayout(info.spec, config.structures)
    table = read_latency_table(config, info) if config.latency_table else None
    rounding = width_rule(config.round_to, table, config.latency_table, config.speedup)
    budgets = build_budgets(config, info.spec, layout, info.audio.sampling_rate, table)
    for budget in budgets:
        budget.check_reachable(layout, config.structures)
    # before the run folder exists: a crop that makes no frame would crash the run mid-way
    check_long_enough(config.crop_seconds, "--crop-seconds", config.model, info.spec, info.audio.sampling_rate)
    check_fits_in_memory(config.model, info.spec, info.audio.sampling_rate, length=("--crop-seconds", config.crop_seconds),
                         count=("--batch-seconds", config.batch_seconds), per_input=config.crop_seconds,
                         training=True, weight_bytes=TRAINING_WEIGHT_COPIES * FLOAT_BYTES * spec_parameter_count(info.spec),
                         what="one training step")
    scores = read_scores(config.scores, layout) if config.scores else None

    run = RunFolder(config.out)
    plan = run.plan(run_options(config, ranks.world_size), resume=config.resume, overwrite=config.overwrite)
    if plan != "fresh":
        run.check_budgets(budget_records(budgets))
    if plan == "finished":
        reporter.message(f"{run.root} is a finished run; nothing to do")
        return run.summary().to_dict()
    if ranks.is_main:
        run.remove_stale_temporaries()

    corpus, train, val = _training_audio(config, reporter, ranks.world_size)
    data = corpus_fingerprint(corpus)
    if plan == "resume":  # before the weights load: changed audio would train on another validation set
        run.check_data(data, config.data, reporter.warning)

    loaded = load_encoder(info)
    reporter.message(describe_source(loaded))
    if plan == "resume":
        run.check_source(loaded.weights_sha256)

    ranks.init(device)
    try:
        job = Pruning(config, loaded, layout, budgets, rounding, run, ranks, device, reporter, train, val)
        if plan == "resume":
            job.load_checkpoint()
        else:
            job.start(corpus, scores)
            if ranks.is_main:
                run.save_data(data)
        return job.run(corpus)
    finally:
        ranks.close()


def build_budgets(config: PruneConfig, spec, layout: GateLayout, sampling_rate: int,
                  table: CostTable | None = None) -> list[Budget]:
    """The run's budgets, one per currency given, in the order of ``CURRENCIES``; at least one."""
    build = {
        PARAMS: lambda sparsity: params_budget(spec, layout, sparsity, config.tolerance),
        MACS: lambda sparsity: macs_budget(spec, layout, sparsity, config.reference_samples(sampling_rate),
                                           config.tolerance),
        LATENCY: lambda speedup: latency_budget(table, spec, layout, speedup, config.tolerance),
    }
    given = [(currency, getattr(config, currency.field)) for currency in CURRENCIES]
    return [build[currency](value) for currency, value in given if value is not None]


def read_latency_table(config: PruneConfig, info: ModelInfo) -> CostTable:
    """--latency-table, refused unless it was measured for this model's architecture."""
    table = CostTable.read(config.latency_table)
    check_architecture(table, info.spec, info.audio.sampling_rate, config.model)
    return table


def first_not_finite(value, field: str) -> tuple[str, object] | None:
    """(field, value) of the first entry of nested dicts and lists that is not a finite number
    (NaN, infinities, null, text, true), or None."""
    if isinstance(value, (dict, list)):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            bad = first_not_finite(item, f"{field}.{key}" if isinstance(value, dict) else f"{field}[{key}]")
            if bad is not None:
                return bad
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return field, value
    return None


def read_scores(path: str, layout: GateLayout) -> torch.Tensor:
    """(N,) structure scores from `speechprune analyze` output (higher: more worth keeping)."""
    try:
        data = json.loads(read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read --scores {path}: {error}; pass the JSON written by speechprune analyze --out")
    if not isinstance(data, dict) or not isinstance(data.get("gate_scores"), dict):
        raise DataError(f"--scores {path} has no gate_scores; write it with speechprune analyze MODEL --out FILE")
    bad = first_not_finite(data["gate_scores"], "gate_scores")
    if bad is not None:  # NaN would rank like -inf and silently change the decision
        field, value = bad
        raise DataError(f"--scores {path}: {field} is {json.dumps(value)}, not a finite number; "
                        "write the scores again with speechprune analyze MODEL --out FILE")
    try:
        return gate_flat(layout, data["gate_scores"])
    except ValueError as error:
        raise DataError(f"--scores {path} does not fit this model ({error}); analyze the same model") from None
