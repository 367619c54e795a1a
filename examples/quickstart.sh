#!/usr/bin/env bash
# The built-in demo, offline: a tiny random wav2vec2-style model and generated speech-like
# audio (written once to runs/demo-inputs/), pruned to 72% sparsity in 150 steps.
# About 35 s on 2 CPU cores. Rerunning needs --overwrite (or --resume) for runs/demo.
set -euo pipefail
speechprune prune --demo --overwrite "$@"

# What the run kept, per layer:
python - <<'PY'
import json
summary = json.load(open("runs/demo/summary.json"))
print(f"{summary['params_dense']:,} -> {summary['params_pruned']:,} parameters (sparsity {summary['sparsity']:.3f})")
print("conv channels kept:", summary["kept"]["conv_channels"])
for i, layer in enumerate(summary["kept"]["layers"], 1):
    print(f"layer {i}: heads {layer['heads']} qk dims {layer['qk_dims']} vo dims {layer['vo_dims']} "
          f"ffn units {layer['ffn_units']}")
PY
