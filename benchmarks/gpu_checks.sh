#!/usr/bin/env bash
# What speechprune checks on a CUDA GPU, in one script: the CUDA tests (tests/test_gpu.py, skipped
# on machines without a GPU), then a Base-size wav2vec2 against its 0.72 shrunk version with
# benchmarks/shrink_speed.py and `speechprune bench` (CUDA graphs are exercised by the tests). Results go to $OUT
# (default gpu-results/).
#
#     bash benchmarks/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"
# tests/test_gpu.py skips itself without CUDA: here that would pass without testing anything
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else
    'error: torch ' + torch.__version__ + ' sees no CUDA GPU (a CPU build?); tests/test_gpu.py would only skip')"

# A failing CUDA test fails the script, after the benchmarks below have still run.
tests_status=0
python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/pytest-gpu.txt" || tests_status=$?

models=$(mktemp -d)
python benchmarks/shrink_speed.py --device cuda --dtype bfloat16 --batch 8 --rounds 20 --keep "$models" --json \
    > "$out/shrink-speed-bfloat16-b8.json"
python -m speechprune bench "$models/shrunk" --baseline "$models/dense" --device cuda --dtype float32,bfloat16 \
    --seconds 10 --batch 1,8 --json > "$out/bench-base-0.72.json"
# the method's own one-shot choices under each budget (analyze scores), stock against pruned
python benchmarks/speed_budget.py --device cuda --dtype float32,bfloat16 --batch 1,8 --work "$models/speed-budget" \
    --json > "$out/speed-budget.json"
if [ "$tests_status" -ne 0 ]; then
    echo "error: CUDA tests failed (exit $tests_status): see $out/pytest-gpu.txt" >&2
    exit "$tests_status"
fi
