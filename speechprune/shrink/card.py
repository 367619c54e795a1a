"""The model card (README.md) of a shrunk model folder: where it came from, its budgets and
shape, how to load it, and the commands that made it."""

from __future__ import annotations

import shlex

from ..folders.run import RunSnapshot
from ..folders.run_record import RunRecord
from ..method.currencies import BY_NAME, LATENCY
from ..model.spec import EncoderSpec
from .report import ShrinkReport


def model_card(snap: RunSnapshot, spec: EncoderSpec, report: ShrinkReport, command: str | None) -> str:
    record = snap.record
    rows = "\n".join(
        f"| {i + 1} | {len(layer.heads) if layer.attention else '-'} | "
        f"{sum(layer.head_widths()[0]) if layer.attention else 0} | {sum(layer.head_widths()[1]) if layer.attention else 0} | "
        f"{layer.ffn_dim if layer.ffn else '-'} |"
        for i, layer in enumerate(spec.layers)
    )
    fidelity = report.fidelity_cosine
    fidelity_text = (
        "Cosine similarity to the dense teacher per distilled layer: "
        + ", ".join(f"layer {k}: {v}" for k, v in fidelity.items())
        if fidelity
        else "Fidelity to the teacher not measured (run `speechprune shrink` with `--data`)."
    )
    return f"""---
library_name: transformers
tags: [speechprune, pruned, {spec.family}]
---

# {spec.family} encoder pruned by speechprune

- Source model: `{report.source_model}` ({record.source.architecture}; encoder taken)
- Parameters: {report.params_dense:,} -> {report.params:,} (sparsity {report.sparsity:.4f})
- Budgets: {'; '.join(_budget_line(name, budget) for name, budget in record.budgets.items())}
- Saved as {report.dtype}; run step {report.run_step}{'' if report.run_finished else ' (unfinished run)'}
- Shrunk model vs masked model: max relative error {report.max_relative_error_vs_masked:.1e}
- {fidelity_text}

## Load

```python
from transformers import AutoModel
model = AutoModel.from_pretrained("PATH", trust_remote_code=True)   # torch + transformers only
# or, with speechprune installed, without remote code:
import speechprune
model = speechprune.load("PATH")
```

Inputs are raw 16 kHz waveforms as for the source model (`input_values`, optional `attention_mask`);
`output_hidden_states=True` returns the input of the first layer and every layer's output.

## Shape

CNN channels: {spec.conv_channels}

| layer | heads | q/k dims | v/o dims | FFN units |
|---|---|---|---|---|
{rows}

## How it was made

```
{_launcher(record.world_size)} {shlex.join(record.command)}
{command or 'speechprune shrink ' + shlex.quote(str(snap.run.root))}
```

{_command_note(record, snap.finished)}
"""


def _launcher(world_size: int) -> str:
    """How the run was started: one process, or as many as it had under torchrun."""
    return "speechprune" if world_size == 1 else f"torchrun --nproc-per-node {world_size} -m speechprune"


def _command_note(record: RunRecord, finished: bool) -> str:
    """What the prune command of the card is, and what it takes to get the same masks from it."""
    versions = f"speechprune {record.speechprune}, torch {record.torch}, transformers {record.transformers}"
    if record.format == 1:
        written = (f"every option the run recorded, paths as they were given (the run was made by {versions}, "
                   "before runs recorded their command)")
    else:
        written = "the run's options that differ from their defaults, local paths made absolute"
    result = "the same masks" if finished else "the finished run (this model is a checkpoint of it)"
    return (f"The prune command gives {written}; add `--out FOLDER` to choose where the new run goes. Run as "
            f"printed with {versions} on the same kind of device, it makes {result}.")


def _budget_line(name: str, budget: dict) -> str:
    """One budget of the run's config.json, as the model card states it."""
    if name == LATENCY.name:
        c = budget["conditions"]
        return (f"predicted speedup {budget['speedup']:g}x ({budget['option']}) from a cost table measured on "
                f"{c['device_name']} ({c['device']}, {c['threads']} threads, {c['dtype']}, {c['seconds']:g} s x{c['batch']})")
    unit = BY_NAME[name].unit
    return f"remove {budget['sparsity']:g} of the {unit} ({budget['option']} {budget['sparsity']:g})"
