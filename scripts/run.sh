#!/usr/bin/env bash
# Install everything and run ephemesh.
#   scripts/run.sh            the whole service on this machine (ephemesh serve):
#                             open http://127.0.0.1:8000/, Ctrl-C stops it
#   scripts/run.sh ARGS...    any ephemesh command, e.g. scripts/run.sh convert scan/ -o out.stl
# It also puts this checkout's `ephemesh` on the PATH (a link in /usr/local/bin
# when that is writable, else in ~/.local/bin; EPHEMESH_BIN_DIR chooses), so the
# README's commands work as written.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

link_dir="${EPHEMESH_BIN_DIR:-}"
if [ -z "$link_dir" ]; then
  if [ -w /usr/local/bin ]; then link_dir=/usr/local/bin; else link_dir="$HOME/.local/bin"; fi
fi
target="$PWD/.venv/bin/ephemesh"
if [ "$(readlink "$link_dir/ephemesh" 2>/dev/null || true)" != "$target" ]; then
  if [ -e "$link_dir/ephemesh" ] && [ ! -L "$link_dir/ephemesh" ]; then
    printf 'run.sh: %s/ephemesh exists and is not a link; left alone (run %s)\n' "$link_dir" "$target" >&2
  else
    mkdir -p "$link_dir"
    ln -sfn "$target" "$link_dir/ephemesh"
    printf 'run.sh: ephemesh is now %s/ephemesh (this checkout'"'"'s)\n' "$link_dir" >&2
  fi
fi
case ":$PATH:" in
  *":$link_dir:"*) ;;
  *) printf 'run.sh: %s is not on your PATH; to type the README'"'"'s ephemesh commands: export PATH="%s:$PATH"\n' \
       "$link_dir" "$link_dir" >&2 ;;
esac

if [ $# -gt 0 ]; then exec .venv/bin/ephemesh "$@"; fi
exec .venv/bin/ephemesh serve
