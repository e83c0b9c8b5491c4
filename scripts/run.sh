#!/usr/bin/env bash
# Install everything and run ephemesh.
#   scripts/run.sh            the whole service on this machine (ephemesh serve)
#   scripts/run.sh ARGS...    any ephemesh command, e.g. scripts/run.sh convert scan/ -o out.stl
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -gt 0 ]; then exec .venv/bin/ephemesh "$@"; fi
if .venv/bin/ephemesh --help | grep -q ' serve '; then
  exec .venv/bin/ephemesh serve
fi
# Until the service lands: the CLI on a sample series it generates.
sample=var/sample-series
.venv/bin/ephemesh sample "$sample" >/dev/null
.venv/bin/ephemesh series "$sample"
exec .venv/bin/ephemesh convert "$sample" --preset bone -o var/sample-bone.stl --report var/sample-report.json
