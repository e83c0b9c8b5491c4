#!/usr/bin/env bash
# The side-by-side benchmark in one command: scripts/bench.sh [bench/run.py options]
# Installs ephemesh (scripts/setup.sh) unless the venv already has it, then
# bench/run.py installs the peers from bench/requirements.txt (dicom2stl, vtk)
# into the same venv when they are missing, runs everything and writes
# bench/results.md.  About 5–10 minutes on 2 cores with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import converter.pipeline, converter._marching" 2>/dev/null; then
  scripts/setup.sh
fi
exec .venv/bin/python bench/run.py "$@"
