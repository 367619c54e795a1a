"""What a run writes about itself: the record of config.json (options, the command that
makes the run again, versions, source, audio, gates, budgets) and summary.json (what the
decision keeps and costs), both from the state of ``lifecycle.Pruning`` and typed in
``folders/run_record``; and the one-line summary the command prints.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

import torch

from .. import __version__
from ..folders.run_record import (AudioRecord, MacsFigures, PredictedLatency, RunRecord, RunSummary, SourceRecord,
                                  PATH_OPTIONS, prune_command)
from ..io.audio import AudioCorpus
from ..method.accounting import component_totals, dense_count, kept_structure, parameter_breakdown, parameter_count
from ..method.budget import Budget
from ..method.currencies import LATENCY, PARAMS
from ..method.decision import binding, lands
from ..method.gates import GateValues
from ..method.latency import runtime_label, stock_speedup
from ..method.macs import macs, pruned_macs
from ..model.loading import describe_source, resolved_path
from .config import PruneConfig

if TYPE_CHECKING:  # the records describe a run; the run imports this module
    from .lifecycle import Pruning


def run_options(config: PruneConfig, world_size: int) -> dict:
    """The options that define the run's result: a resumed run must have the same."""
    return {**config.result_defining(), "world_size": world_size}


def budget_records(budgets: list[Budget]) -> dict:
    """What config.json keeps of each budget; a resumed run must have the same (a latency
    budget's table is named by the hash of its content)."""
    return {b.name: {"option": b.currency.option, "sparsity": b.sparsity, "dense": b.dense, **b.record} for b in budgets}


def command(config: PruneConfig, num_layers: int) -> list[str]:
    """The ``speechprune`` arguments that make the run of ``config`` (resolved) again: every
    option that differs from its default, local paths made absolute."""
    options = config.to_dict()
    options.update({k: resolved_path(options[k]) for k in PATH_OPTIONS if options[k] is not None})
    return prune_command(options, config.implied(num_layers))


def config_record(job: Pruning, corpus: AudioCorpus) -> RunRecord:
    """config.json of a fresh run."""
    info, loaded, config = job.info, job.loaded, job.config
    return RunRecord(
        speechprune=__version__,
        torch=torch.__version__,
        transformers=_transformers_version(),
        python=platform.python_version(),
        options=config.to_dict(),
        world_size=job.ranks.world_size,
        command=command(config, len(job.spec.layers)),
        source=SourceRecord(model=info.source, revision=info.revision, commit=loaded.commit,
                            weights_sha256=loaded.weights_sha256, family=info.family.name,
                            architecture=info.architecture, taken=describe_source(loaded),
                            left_out=loaded.left_out),
        audio=AudioRecord(
            **vars(info.audio),
            files=len(corpus.files),
            hours=round(corpus.seconds / 3600, 4),
        ),
        gate_count=job.layout.size,
        params_dense=dense_count(job.spec, job.layout),
        budgets=budget_records(job.budgets),
    )


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def summary(job: Pruning, corpus: AudioCorpus, values: torch.Tensor) -> RunSummary:
    """summary.json of a finished run (also what ``--json`` prints), for its final gate ``values`` (N,)."""
    spec, layout, budget_list, config = job.spec, job.layout, job.budgets, job.config
    keep = GateValues(layout, values)
    binary = GateValues(layout, (values > 0).double())
    params = int(round(parameter_count(spec, binary).item()))
    ones = GateValues(layout, torch.ones(layout.size, dtype=torch.float64))
    dense = dense_count(spec, layout)
    samples = config.reference_samples(job.info.audio.sampling_rate)
    macs_dense, macs_pruned = macs(spec, samples)["total"], pruned_macs(spec, binary, samples)
    costs = {b.name: b.exact(binary) for b in budget_list}
    budgets = {b.name: b.summary(costs[b.name]) for b in budget_list}
    latency = next((b for b in budget_list if b.currency is LATENCY), None)  # predictions need its table
    predicted = costs.get(LATENCY.name)
    params_target = budgets.get(PARAMS.name, {}).get("target")
    return RunSummary(
        run_dir=str(job.run_folder.root),
        model=job.info.source,
        family=job.info.family.name,
        params_dense=dense,
        params_pruned=params,
        sparsity=round(1 - params / dense, 6),
        target_sparsity=config.sparsity,
        target_params=params_target,
        target_miss=round(params / params_target - 1, 6) if params_target else None,
        macs=MacsFigures(macs_seconds=config.reference_seconds, macs_dense=macs_dense, macs_pruned=macs_pruned,
                         macs_sparsity=round(1 - macs_pruned / macs_dense, 6),
                         target_macs_sparsity=config.macs_sparsity),
        predicted=_predicted(latency, predicted) if latency else None,
        budgets=budgets,
        binding_budget=binding(budget_list, costs).name,
        within_tolerance=lands(budget_list, costs),
        decision_adjusted=job.adjusted,
        decision_adjusted_share=round(job.adjusted / max(layout.size, 1), 6),
        round_to=job.rounding.setting if job.rounding else "none",
        rounded_widths=job.rounded_widths,
        steps=job.step,
        skipped_steps=job.skipped_steps,
        final_steps=config.final_steps,
        world_size=job.ranks.world_size,
        val_distill=job.last_val,
        params_by_component={
            "dense": component_totals(parameter_breakdown(spec, ones)),
            "pruned": component_totals(parameter_breakdown(spec, binary)),
        },
        kept=kept_structure(spec, keep),
        audio={"files": len(corpus.files), "hours": round(corpus.seconds / 3600, 4),
               "skipped": job.sampler.skipped.to_dict()},
        train_seconds=round(job.elapsed, 1),
    )


def _predicted(latency: Budget, pruned: float) -> PredictedLatency:
    """The latency budget's predictions in its table's runtime, and against stock float32 eager torch
    (a table of format 3 records the stock model's time)."""
    reference = latency.record.get("reference")
    stock = stock_speedup(reference, pruned)
    return PredictedLatency(predicted_ms_dense=round(latency.dense, 3), predicted_ms_pruned=round(pruned, 3),
                            predicted_speedup=round(latency.dense / pruned, 4),
                            predicted_runtime=runtime_label(latency.record["conditions"]),
                            stock_ms_dense=reference["dense_ms"] if reference else None,
                            predicted_speedup_vs_stock=None if stock is None else round(stock, 4))


def summary_line(data: dict) -> str:
    """The line ``prune`` prints for its summary ``data`` (summary.json of any readable format)."""
    summary = RunSummary.from_dict(data)
    # option_value: summaries of runs finished before latency budgets lack it
    targets = ", ".join(f"{b['option']} {b.get('option_value', b['target_sparsity']):g}" for b in summary.budgets.values())
    macs, latency = "", ""
    if (counted := summary.macs) is not None:  # 0.1.0 summaries have no MACs
        macs = (f", {counted.macs_dense / 1e9:.2f} -> {counted.macs_pruned / 1e9:.2f} GMACs per "
                f"{counted.macs_seconds:g} s (MACs sparsity {counted.macs_sparsity:.3f})")
    if (predicted := summary.predicted) is not None:
        runtime = f" in {predicted.predicted_runtime}" if predicted.predicted_runtime else ""
        stock = ""
        if predicted.predicted_speedup_vs_stock is not None:
            stock = (f"; {predicted.predicted_speedup_vs_stock:.2f}x against stock float32 eager torch at "
                     f"{predicted.stock_ms_dense:.1f} ms")
        latency = (f", predicted {predicted.predicted_ms_dense:.1f} -> {predicted.predicted_ms_pruned:.1f} ms{runtime} "
                   f"(speedup {predicted.predicted_speedup:.2f}x{stock})")
    return (
        f"{summary.params_dense / 1e6:.2f}M -> {summary.params_pruned / 1e6:.2f}M parameters "
        f"(sparsity {summary.sparsity:.3f}){macs}{latency}; targets {targets}; {summary.steps} steps; "
        f"run saved in {summary.run_dir}"
    )
