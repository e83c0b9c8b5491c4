#!/usr/bin/env bash
# Install everything the tests need, then run them: scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
set +e
.venv/bin/python -m pytest "$@"
code=$?
[ $code -eq 5 ] && { echo "no tests collected" >&2; exit 1; }
exit $code
