#!/usr/bin/env bash
# The quality benchmark in one command: install the TTS engines (apt), then regenerate data,
# teacher, students, probes and docs/results.md. Stages are cached in benchmarks/quality/work;
# pass --fresh to rebuild everything, --scale smoke for a 2-3 minute check of the pipeline.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash benchmarks/quality/setup.sh
if ! python -c "import speechprune, matplotlib" 2>/dev/null; then
    echo "error: this Python lacks speechprune or matplotlib; activate the venv of the README's first command" \
         "or run: pip install torch==2.13.0 -e '.[plot]'" >&2
    exit 1
fi
exec python benchmarks/quality/reproduce.py "$@"
