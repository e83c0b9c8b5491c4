"""Health: ``/livez`` and ``/readyz`` on the web (the ``ops`` blueprint) and on
a worker host's health port, against a redis-server this test starts and
stops (never the shared one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import ROOT, RedisProcess, free_port, make_settings, wait_for
from web import create_app


@pytest.fixture
def own_redis(tmp_path):
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_readyz_follows_redis_and_the_sweep(tmp_path, own_redis):
    settings = make_settings(tmp_path, own_redis.url, sweep=5)
    app = create_app({"TESTING": True, "EPHEMESH_SETTINGS": settings, "SECRET_KEY": "ops"})
    records = app.extensions["ephemesh.service"].records
    client = app.test_client()
    try:
        resp = client.get("/readyz")  # no sweep yet
        assert resp.status_code == 503 and resp.json["failing"] == ["sweep"]
        assert resp.json["code"] == "not_ready" and resp.json["status"] == 503
        assert resp.mimetype == "application/problem+json"
        records.record_sweep(0, 0)
        resp = client.get("/readyz")
        assert resp.status_code == 200, resp.json
        assert resp.json["ready"] is True
        assert set(resp.json["checks"]) == {"redis", "database", "store", "sweep"}

        own_redis.stop()
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json["failing"] == ["redis"]
        assert "redis: unreachable" in resp.json["detail"]
        assert "127.0.0.1" not in resp.get_data(as_text=True)  # no address in the answer
        assert client.get("/livez").status_code == 200  # live all the same

        own_redis.start()  # the same port
        assert wait_for(lambda: client.get("/readyz").status_code == 200, 10, "ready again")

        records.record_sweep(0, 0, now=time.time() - 11)  # older than two periods
        with records.engine.begin() as c:
            c.exec_driver_sql("DELETE FROM sweeps WHERE at > ?", (time.time() - 10,))
        resp = client.get("/readyz")
        assert resp.status_code == 503 and resp.json["failing"] == ["sweep"]
        assert "more than two periods" in resp.json["detail"]
        # probes leave no access-log rows
        assert not [r for r in records.access_rows() if r["route"] in ("/livez", "/readyz")]
    finally:
        app.extensions["ephemesh.service"].close()


def _get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return None, b""


def test_a_worker_hosts_health_port(tmp_path, own_redis):
    settings = make_settings(tmp_path, own_redis.url, sweep=5)
    from worker.records import Records

    records = Records(settings.database_url)
    records.record_sweep(0, 0)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "web.cli", "worker", "-n", "1",
                             "--health-port", str(port)], cwd=ROOT, start_new_session=True,
                            env={**os.environ, **settings.as_env()},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _get(base + "/livez")[0] == 200, 30, "the health port")
        status, body = _get(base + "/readyz")
        assert status == 200, body
        assert json.loads(body)["ready"] is True
        own_redis.stop()
        status, body = _get(base + "/readyz")
        assert status == 503 and json.loads(body)["failing"] == ["redis"]
        assert _get(base + "/nothing")[0] == 404
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        records.close()
