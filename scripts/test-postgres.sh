#!/usr/bin/env bash
# Make sure the tests have a PostgreSQL they can use without a password.
# Uses the one at 127.0.0.1:5432 when it accepts postgres@ without a password
# (CI and the team's machines); otherwise installs Debian's PostgreSQL and
# starts a private cluster (trust auth, loopback only) under /tmp and writes
# its URL to .venv/test-pg-url, which tests/conftest.py reads.
set -euo pipefail
cd "$(dirname "$0")/.."
url_file=.venv/test-pg-url
default_url="postgresql://postgres@127.0.0.1:5432/postgres"
try() { .venv/bin/python - "$1" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}
if try "$default_url"; then rm -f "$url_file"; exit 0; fi
if [ -f "$url_file" ] && try "$(cat "$url_file")"; then exit 0; fi
echo "setup: starting a private PostgreSQL for the tests" >&2
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=/tmp/ephemesh-test-pg
port=55432
as_pg=()
if [ "$(id -u)" -eq 0 ]; then as_pg=(runuser -u postgres --); fi
if [ ! -f "$dir/PG_VERSION" ]; then
  mkdir -p "$dir"; [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
  "${as_pg[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
fi
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/log" -w \
  -o "-p $port -k /tmp -c listen_addresses=127.0.0.1" start >/dev/null || true
url="postgresql://postgres@127.0.0.1:$port/postgres"
try "$url" || { echo "setup: PostgreSQL did not start" >&2; exit 1; }
echo "$url" > "$url_file"
