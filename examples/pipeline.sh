#!/usr/bin/env bash
# A pipeline of an MLOps job: prune -> shrink -> bench, reading each result as JSON.
#
#   MODEL=facebook/wav2vec2-base DATA=/data/LibriSpeech/train-clean-100 examples/pipeline.sh
#
# Without MODEL/DATA it uses the built-in demo inputs.
set -euo pipefail
SPARSITY=${SPARSITY:-0.72}
RUN=${RUN:-runs/pipeline-run}

if [[ -z "${MODEL:-}" ]]; then
    python -c "from speechprune.prune.demo import prepare_demo; prepare_demo('runs/demo-inputs')"
    MODEL=runs/demo-inputs/model DATA=runs/demo-inputs/audio EXTRA=(--steps 150 --crop-seconds 2 --batch-seconds 16)
else
    EXTRA=()
fi

# --resume makes the step idempotent and preemption-safe: it continues a run or starts it.
# Progress goes to stderr; stdout carries exactly one JSON document.
summary=$(speechprune prune "$MODEL" --data "$DATA" --sparsity "$SPARSITY" --out "$RUN" --resume --json "${EXTRA[@]}")

python - "$summary" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
assert s["within_tolerance"], "missed the parameter target"
print(f"pruned {s['params_dense']:,} -> {s['params_pruned']:,} ({s['sparsity']:.1%}), run in {s['run_dir']}")
PY

# Shrink: --overwrite keeps the step idempotent (the run folder is the source of truth).
report=$(speechprune shrink "$RUN" --out "$RUN-model" --data "$DATA" --overwrite --json)
python - "$report" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["max_relative_error_vs_masked"] < 1e-4
print(f"model: {r['model_dir']} ({r['file_bytes'] / 1e6:.1f} MB), cosine to teacher {r['fidelity_cosine']}")
PY

# Bench: the shrunk model against the source model, interleaved in one process.
bench=$(speechprune bench "$RUN-model" --baseline "$MODEL" --seconds 10 --batch 1 --json)
python - "$bench" <<'PY'
import json, sys
b = json.loads(sys.argv[1])
for row in b["results"]:
    print(f"{row['model']}: {row['latency_ms']['median']:.1f} ms for {row['seconds']:g} s, speedup {row['speedup']:.2f}x")
PY
