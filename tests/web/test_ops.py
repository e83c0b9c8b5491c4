"""Health: ``/livez`` and ``/readyz`` on the web (the ``ops`` blueprint) and on
a worker host's health port, against a redis-server this test starts and
stops (never the shared one)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, RedisProcess, free_port, make_settings, wait_for
from web import create_app
from worker.sweeper import sweep


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
        status, body = _get(base + "/metrics")
        assert status == 200
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"ephemesh_jobs", "ephemesh_queue_wait_seconds", "ephemesh_workers"} <= names
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


def _scrape(client, headers=None) -> dict:
    """Every sample of ``/metrics``, read by prometheus_client's own parser."""
    resp = client.get("/metrics", headers=headers or {})
    assert resp.status_code == 200, resp.data
    assert resp.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.get_data(as_text=True))
            for s in family.samples}


def _ended(client, auth, job):
    view = client.get(job["links"]["self"], headers=auth).json
    return view if view["status"] in ("done", "failed") else None


def test_metrics_move_as_jobs_run_and_sweeps_delete(make_app, auth, workers, series_zip,
                                                    series_files):
    app = make_app(EPHEMESH_METRICS_TOKEN="scrape-me")
    client = app.test_client()
    token = {"Authorization": "Bearer scrape-me"}
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    before = _scrape(client, token)
    assert before[("ephemesh_received_bytes_total", ())] == 0
    assert before[("ephemesh_last_sweep_age_seconds", ())] == -1
    assert before[("ephemesh_conversion_seconds_count", ())] == 0

    good = client.post("/api/v1/jobs", data={"files": (io.BytesIO(series_zip), "s.zip")},
                       headers=auth, content_type="multipart/form-data").json
    bad = client.post("/api/v1/jobs", data={"files": (io.BytesIO(series_files[0]), "x")},
                      headers=auth, content_type="multipart/form-data").json
    for job in (good, bad):
        wait_for(lambda job=job: _ended(client, auth, job), 60, "the job to end")
    stl = client.get(good["links"]["result"], headers=auth).data
    after = _scrape(client, token)
    assert after[("ephemesh_jobs_total", (("code", ""), ("outcome", "done")))] == 1
    assert after[("ephemesh_jobs_total", (("code", "single_slice"), ("outcome", "failed")))] == 1
    assert after[("ephemesh_conversion_seconds_count", ())] == 1
    assert after[("ephemesh_queue_wait_seconds_count", ())] == 2
    assert after[("ephemesh_queue_wait_seconds_bucket", (("le", "+Inf"),))] == 2
    assert after[("ephemesh_received_bytes_total", ())] > len(series_files[0])
    assert after[("ephemesh_sent_bytes_total", ())] == len(stl)
    assert after[("ephemesh_deleted_objects_total", (("kind", "input"),
                                                     ("reason", "converted")))] == 1
    assert after[("ephemesh_deleted_objects_total", (("kind", "input"),
                                                     ("reason", "failed")))] == 1
    assert after[("ephemesh_late_deletions_total", (("kind", "input"),))] == 0
    assert after[("ephemesh_live_objects", (("kind", "result"),))] == 1
    assert after[("ephemesh_queue_depth", (("queue", "conversion"),))] == 0
    assert after[("ephemesh_workers", (("state", "idle"),))] + \
        after[("ephemesh_workers", (("state", "busy"),))] == 1
    assert after[("ephemesh_oldest_live_object_age_seconds", ())] > 0

    # a sweep past the result's deadline deletes it, and says when it ran
    ctx = app.extensions["ephemesh.service"].ctx
    sweep(ctx, now=time.time() + 3600)
    swept = _scrape(client, token)
    assert swept[("ephemesh_deleted_objects_total", (("kind", "result"),
                                                     ("reason", "expired")))] == 1
    assert swept[("ephemesh_deleted_bytes_total", (("kind", "result"),))] > len(stl)
    assert swept[("ephemesh_live_objects", (("kind", "result"),))] == 0
    assert swept[("ephemesh_oldest_live_object_age_seconds", ())] == 0
    assert 0 <= swept[("ephemesh_last_sweep_age_seconds", ())] < 60
    text = client.get("/metrics", headers=token).get_data(as_text=True)
    assert good["id"] not in text and bad["id"] not in text and "127.0.0.1" not in text
