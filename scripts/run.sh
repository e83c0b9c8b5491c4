#!/usr/bin/env bash
# Install everything and run ephemesh.
#   scripts/run.sh            the whole service on this machine (ephemesh serve):
#                             open http://127.0.0.1:8000/, Ctrl-C stops it
#   scripts/run.sh ARGS...    any ephemesh command, e.g. scripts/run.sh convert scan/ -o out.stl
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -gt 0 ]; then exec .venv/bin/ephemesh "$@"; fi
exec .venv/bin/ephemesh serve
