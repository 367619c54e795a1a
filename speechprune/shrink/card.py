"""The model card (README.md) of a shrunk model folder: where it came from, its budgets and
shape, how to load it, and the commands that made it."""

from __future__ import annotations

from ..folders.run import RunSnapshot, run_budgets
from ..model.spec import EncoderSpec


def model_card(snap: RunSnapshot, spec: EncoderSpec, report: dict, command: str | None) -> str:
    options = snap.record["options"]
    rows = "\n".join(
        f"| {i + 1} | {len(layer.heads) if layer.attention else '-'} | "
        f"{sum(layer.head_widths()[0]) if layer.attention else 0} | {sum(layer.head_widths()[1]) if layer.attention else 0} | "
        f"{layer.ffn_dim if layer.ffn else '-'} |"
        for i, layer in enumerate(spec.layers)
    )
    fidelity = report["fidelity_cosine"]
    budgets = run_budgets(snap.record)
    fidelity_text = (
        "Cosine similarity to the dense teacher per distilled layer: "
        + ", ".join(f"layer {k}: {v}" for k, v in fidelity.items())
        if fidelity
        else "Fidelity to the teacher not measured (run `speechprune shrink` with `--data`)."
    )
    prune_command = (
        f"speechprune prune {options['model']} {_budget_options(snap.record.get('all_options', options))} --data {options['data']} "
        f"--steps {options['steps']} --structures {','.join(options['structures'])}"
        + ("" if options["ste"] else " --no-ste")
        + (f" --final-steps {options['final_steps']}" if options["final_steps"] else "")
    )
    return f"""---
library_name: transformers
tags: [speechprune, pruned, {spec.family}]
---

# {spec.family} encoder pruned by speechprune

- Source model: `{report['source_model']}` ({snap.record['source']['architecture']}; encoder taken)
- Parameters: {report['params_dense']:,} -> {report['params']:,} (sparsity {report['sparsity']:.4f})
- Budgets: {'; '.join(_budget_line(name, budget) for name, budget in budgets.items())}
- Saved as {report['dtype']}; run step {report['run_step']}{'' if report['run_finished'] else ' (unfinished run)'}
- Shrunk model vs masked model: max relative error {report['max_relative_error_vs_masked']:.1e}
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
{prune_command}
{command or 'speechprune shrink ' + str(snap.run.root)}
```
"""


def _budget_line(name: str, budget: dict) -> str:
    """One budget of the run's config.json, as the model card states it."""
    if name == "latency":
        c = budget["conditions"]
        return (f"predicted speedup {budget['speedup']:g}x ({budget['option']}) from a cost table measured on "
                f"{c['device_name']} ({c['device']}, {c['threads']} threads, {c['dtype']}, {c['seconds']:g} s x{c['batch']})")
    unit = {"params": "parameters", "macs": "MACs"}[name]
    return f"remove {budget['sparsity']:g} of the {unit} ({budget['option']} {budget['sparsity']:g})"


def _budget_options(options: dict) -> str:
    given = [("--sparsity", options.get("sparsity")), ("--macs-sparsity", options.get("macs_sparsity")),
             ("--macs-seconds", options.get("macs_seconds")), ("--speedup", options.get("speedup"))]
    text = " ".join(f"{option} {value:g}" for option, value in given if value is not None)
    return text + (f" --latency-table {options['latency_table']}" if options.get("latency_table") else "")
