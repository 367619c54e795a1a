#!/usr/bin/env bash
# The quality benchmark in one command: install the TTS engines (apt), then regenerate data,
# both teachers (CTC and self-supervised), students, probes, docs/results.md and
# docs/results-ssl.md. Stages are cached in benchmarks/quality/work; pass --fresh to rebuild
# everything, --table ctc|ssl for one table, --scale smoke for a few-minute check of the pipeline.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash benchmarks/quality/setup.sh
if ! python -c "import speechprune, matplotlib" 2>/dev/null; then
    echo "error: this Python lacks speechprune or matplotlib; activate the venv of the README's first command" \
         "or run: pip install torch==2.13.0 -e '.[plot]'" >&2
    exit 1
fi
exec python benchmarks/quality/reproduce.py "$@"
