"""The retention promise on a compressed clock (retention of a few seconds).

Real Redis, real worker and cron processes.  Every upload, result and RQ job
key is gone by its deadline — with workers, with none alive, and after a
Redis restart — and every deletion is a ledger row, none of them late.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.helpers import wait_for
from worker import sweeper

OWNER = "key:7"
RETENTION = 12  # seconds (the sweep margin is a quarter: 3 s)
SWEEP = 1


def _live_rq_keys(env, ident):
    r = redis.Redis.from_url(env.settings.effective_redis_url)
    return [k for k in r.scan_iter(f"rq:*{ident}*")]


def _watch_until_gone(env, job_id, deadline, kinds=("input",)):
    """Poll until the objects are gone; fail if any outlives its deadline."""
    while True:
        alive = [k for k in kinds if env.ctx.store.meta(k, job_id) is not None]
        keys = _live_rq_keys(env, job_id)
        now = time.time()
        if not alive and not keys:
            return now
        assert now <= deadline + 0.5, f"{alive} {keys} outlived the deadline"
        time.sleep(0.1)


def test_uploads_and_job_keys_go_by_the_deadline_with_no_worker(env_factory, store_kind,
                                                                database_url, series_bytes):
    env = env_factory(store=store_kind, database_url=database_url, retention=RETENTION,
                      sweep=SWEEP)
    views = [env.service.create_job(series_bytes, {}, owner=OWNER) for _ in range(2)]
    env.start("cron")  # no worker alive: the cron process sweeps by itself
    for view in views:
        deadline = env.service.records.job(view["id"])["deadline"]
        _watch_until_gone(env, view["id"], deadline)
    for view in views:
        job = env.service.get_job(view["id"], owner=OWNER)
        assert job["status"] == "failed" and job["error"]["code"] == "expired"
    rows = env.service.records.ledger()
    assert {(r["kind"], r["reason"]) for r in rows} == {("input", "expired"),
                                                       ("redis-job", "expired")}
    assert len([r for r in rows if r["kind"] == "input"]) == 2
    assert not any(r["late"] for r in rows)
    assert all(r["deleted"] <= r["deadline"] for r in rows)


def test_results_go_by_their_deadline(env_factory, store_kind, database_url, series_bytes):
    env = env_factory(store=store_kind, database_url=database_url, retention=RETENTION,
                      sweep=SWEEP)
    env.start_workers(1)
    env.start("cron")
    view = env.service.create_job(series_bytes, {}, owner=OWNER)
    done = env.wait_job(view["id"], OWNER, timeout=RETENTION)
    assert done["status"] == "done"
    finished = env.service.records.job(view["id"])["finished"]
    assert env.ctx.store.meta("result", view["id"]) is not None
    _watch_until_gone(env, view["id"], finished + RETENTION, kinds=("input", "result"))
    gone = env.service.get_job(view["id"], owner=OWNER)
    assert gone["status"] == "deleted" and gone["expires_at"] is None
    assert gone["report"] is None  # the model's measures go with the model
    # the sweeper updates the row with the ledger row, right after the file (the view
    # already says so)
    row = wait_for(lambda: (r := env.service.records.job(view["id"]))["status"] == "deleted"
                   and r, timeout=5, what="the job row to say deleted")
    assert row["report"] is None
    rows = {(r["kind"], r["reason"]): r for r in env.service.records.ledger()
            if r["object_id"].startswith(view["id"])}
    assert set(rows) == {("input", "converted"), ("result", "expired"),
                         ("redis-job", "converted")}
    assert not any(r["late"] for r in rows.values())


def test_a_redis_restart_loses_nothing_that_should_be_deleted(env_factory, store_kind,
                                                              redis_server, series_bytes):
    env = env_factory(store=store_kind, retention=RETENTION, sweep=SWEEP)
    view = env.service.create_job(series_bytes, {}, owner=OWNER)
    deadline = env.service.records.job(view["id"])["deadline"]
    redis_server.restart()  # nothing kept on disk: queue and job state are gone
    env.start("cron")
    _watch_until_gone(env, view["id"], deadline)
    wait_for(lambda: env.service.records.recorded("input", view["id"]), RETENTION + 5,
             "the ledger row of the lost upload")
    row = [r for r in env.service.records.ledger() if r["kind"] == "input"][0]
    assert row["object_id"] == view["id"] and not row["late"]
    assert row["bytes"] > 0
    assert env.service.get_job(view["id"], owner=OWNER)["error"]["code"] == "expired"


def test_access_log_rows_older_than_the_limit_are_deleted(env_factory, database_url):
    env = env_factory(database_url=database_url, access_days=30)
    records = env.service.records
    now = time.time()
    day = 86400
    for age_days in (45, 31, 30.5, 29, 1):
        records.log_access("203.0.113.9", "GET", "/api/v1/jobs/<id>", 200, 10,
                           at=now - age_days * day)
    swept = sweeper.purge_access_log(env.ctx, now)
    assert swept.deleted == 3
    left = sorted(round((now - r["at"]) / day) for r in records.access_rows())
    assert left == [1, 29]
    [row] = [r for r in records.ledger() if r["kind"] == "access-log"]
    assert row["count"] == 3 and row["reason"] == "expired"
    assert row["created"] == pytest.approx(now - 45 * day)
    # job rows that old go too (they need not outlive the access log)
    records.add_job("oldjob", "owner", now - 31 * day, now - 31 * day + 60)
    records.fail_job("oldjob", "expired", "x")
    records.add_job("newjob", "owner", now - 60, now + 3540)
    sweeper.purge_job_rows(env.ctx, now)
    assert records.job("oldjob") is None and records.job("newjob") is not None
    # the limit can be lowered, never raised
    env2 = env_factory(database_url=database_url, access_days=7)
    assert sweeper.purge_access_log(env2.ctx, now).deleted == 1  # the 29-day row


def test_sweeping_twice_at_once_deletes_each_thing_once(env_factory, store_kind, database_url,
                                                        series_bytes):
    env = env_factory(store=store_kind, database_url=database_url, retention=RETENTION,
                      sweep=SWEEP)
    ids = [env.service.create_job(series_bytes, {}, owner=OWNER)["id"] for _ in range(4)]
    time.sleep(RETENTION - 1.5)  # inside the sweep margin of every deadline
    procs = [env.start("sweep") for _ in range(3)]
    for p in procs:
        assert p.wait(60) == 0, env.log_text()
    rows = [r for r in env.service.records.ledger() if r["kind"] == "input"]
    assert sorted(r["object_id"] for r in rows) == sorted(ids)
    assert env.ctx.store.entries("input") == []


def test_the_sweep_job_runs_on_a_worker_every_period(env_factory, series_bytes):
    env = env_factory(retention=60, sweep=SWEEP)
    env.start_workers(1)
    env.start("cron")
    first = wait_for(env.service.records.last_sweep, 15, "a first sweep")
    wait_for(lambda: (env.service.records.last_sweep() or 0) > first + 1.5, 15, "later sweeps")
    status = env.service.retention_status()
    assert status["last_sweep_age_s"] < 5 and not status["fault"]
    r = redis.Redis.from_url(env.settings.effective_redis_url)
    # the sweep jobs ran on the worker (their keys carry a TTL within the retention)
    sweep_keys = [k for k in r.scan_iter("rq:job:*") if b":" not in k[7:]]
    assert sweep_keys and all(0 < r.ttl(k) <= 60 for k in sweep_keys)


def test_retention_status_shows_a_fault_when_the_sweeper_is_late(env_factory, series_bytes):
    env = env_factory(retention=60)
    assert env.service.retention_status()["fault"]  # never swept
    env.service.create_job(series_bytes, {}, owner=OWNER)
    sweeper.sweep(env.ctx)
    status = env.service.retention_status()
    assert not status["fault"] and status["oldest"]["kind"] == "input"
    assert status["oldest"]["deadline"] == pytest.approx(status["oldest"]["created"] + 60)
    late = env_factory(retention=60)
    late.service.records.record_sweep(0, 0, now=time.time() - 200)
    status = late.service.retention_status()
    assert status["fault"] and status["last_sweep_age_s"] >= 200
