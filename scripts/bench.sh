#!/usr/bin/env bash
# The side-by-side benchmark in one command: scripts/bench.sh [bench/run.py options]
# Installs ephemesh (scripts/setup.sh) and, into the same venv, the peers from
# bench/requirements.txt (dicom2stl, vtk) when they are missing; then writes
# bench/results.md.  Takes about 10 minutes on 2 cores with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python bench/run.py "$@"
