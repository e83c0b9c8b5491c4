"""Whether this process can do its work: the checks behind ``/readyz`` (the
web, ``web/ops.py``) and the worker's health port (``ephemesh worker
--health-port N``, served here).

Ready means Redis, the records database and the store answer, and a sweep
finished within two sweep periods (without sweeps nothing is deleted on
time).  Each check runs with a deadline (``CHECK_TIMEOUT_S``): an
unreachable host makes a check fail, never the probe hang.  ``/livez``
checks nothing: the process answers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis
from sqlalchemy import text

log = logging.getLogger("ephemesh.health")

#: the parts a readiness check names, in the order it checks them
PARTS = ("redis", "database", "store", "sweep")
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    part: str
    ok: bool
    detail: str  # fixed words and numbers only: never an address or a driver's text


class Probe:
    """The readiness checks of one process, on its own short-timeout Redis
    connection and the records' engine."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.redis = redis.Redis.from_url(ctx.settings.effective_redis_url,
                                          socket_connect_timeout=CHECK_TIMEOUT_S,
                                          socket_timeout=CHECK_TIMEOUT_S)

    def close(self) -> None:
        self.redis.close()

    def _redis(self) -> str:
        self.redis.ping()
        return "answers"

    def _database(self) -> str:
        with self.ctx.records.engine.connect() as c:
            c.execute(text("SELECT 1"))
        return "answers"

    def _store(self) -> str:
        _ = self.ctx.store  # opening a directory store makes its folders
        store = self.ctx.settings.store
        if store == "redis":
            self.redis.ping()
            return "answers (Redis)"
        if not (os.path.isdir(store) and os.access(store, os.W_OK | os.X_OK)):
            raise OSError("the store directory is missing or not writable")
        return "writable"

    def _sweep(self) -> str:
        period = self.ctx.settings.sweep_seconds
        last = self.ctx.records.last_sweep()
        if last is None:
            raise LookupError("no sweep has finished yet")
        age = time.time() - last
        if age > 2 * period:
            raise LookupError(f"the last sweep finished {age:.0f} s ago (more than two periods "
                              f"of {period} s)")
        return f"finished {age:.0f} s ago"

    def checks(self) -> list[Check]:
        """Every part, each within ``CHECK_TIMEOUT_S`` (run side by side)."""
        results: dict[str, Check] = {}

        def run(part):
            try:
                results[part] = Check(part, True, getattr(self, f"_{part}")())
            except (OSError, LookupError) as exc:
                results[part] = Check(part, False, str(exc) if part in ("store", "sweep")
                                      else "unreachable")
            except Exception:  # a driver's error: its text may name hosts; not shown
                results[part] = Check(part, False, "unreachable")

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in PARTS]
        for t in threads:
            t.start()
        end = time.monotonic() + CHECK_TIMEOUT_S + 0.5
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        return [results.get(p, Check(p, False, f"no answer within {CHECK_TIMEOUT_S:g} s"))
                for p in PARTS]


def readiness(checks: list[Check]) -> tuple[bool, dict]:
    """``(ready, body)``: the body names each part and, when not ready, the failing ones."""
    failing = [c for c in checks if not c.ok]
    body = {"ready": not failing,
            "checks": {c.part: {"ok": c.ok, "detail": c.detail} for c in checks}}
    if failing:
        body["failing"] = [c.part for c in failing]
    return not failing, body


def problem_body(body: dict) -> dict:
    """A not-ready answer as problem+json (the web's shape, ``web/problems.py``)."""
    detail = "; ".join(f"{p}: {body['checks'][p]['detail']}" for p in body["failing"])
    return {"type": "https://ephemesh.invalid/problems/not_ready", "title": "Not ready.",
            "status": 503, "code": "not_ready", "detail": f"Not ready: {detail}.", **body}


class HealthServer:
    """``/livez``, ``/readyz`` and (with ``metrics``) ``/metrics`` on a small
    HTTP port of a worker host, in a thread of the pool's main process."""

    def __init__(self, ctx, port: int, host: str = "0.0.0.0", metrics=None):
        self.probe = Probe(ctx)
        self.metrics = metrics  # () -> (content_type, bytes), or None
        self.token = os.environ.get("EPHEMESH_METRICS_TOKEN") or None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # probes would flood the log; addresses never
                pass

            def _send(self, status, ctype, payload: bytes):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    return self._send(200, "application/json", b'{"live": true}')
                if path == "/readyz":
                    ready, body = readiness(server.probe.checks())
                    if ready:
                        return self._send(200, "application/json", json.dumps(body).encode())
                    return self._send(503, "application/problem+json",
                                      json.dumps(problem_body(body)).encode())
                if path == "/metrics" and server.metrics is not None:
                    if server.token and self.headers.get("Authorization") != \
                            f"Bearer {server.token}":
                        return self._send(401, "application/problem+json", json.dumps(
                            {"status": 401, "code": "unauthorized",
                             "title": "An API key is needed.",
                             "detail": "The metrics need the scraping token."}).encode())
                    ctype, payload = server.metrics()
                    return self._send(200, ctype, payload)
                return self._send(404, "application/problem+json", json.dumps(
                    {"status": 404, "code": "not_found", "title": "Not found.",
                     "detail": "There is nothing here."}).encode())

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       name="ephemesh-health")

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.probe.close()
