"""SIGKILL mid-conversion: a whole worker (worker and work horse), or only the horse.

Real RQ worker processes under ``ephemesh worker``, a real Redis.  A lost
worker's job is retried; a horse killed under a living worker fails its job
at once (no retry on the same bytes) with a clear code; a result is written
once; an upload is deleted by its deadline either way.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import redis
from rq.job import Job

from tests.helpers import wait_for, worker_pids

OWNER = "key:1"
SLOW = "0.6"  # seconds of sleep per progress report: a conversion takes several seconds


def _children(pool):
    """Each worker's child processes (its scheduler, when it runs one)."""
    return {c.pid for pid in worker_pids(pool) for c in psutil.Process(pid).children()}


def _busy_worker(env, pool, job_id, before, stage="surface"):
    """(worker pid, horse pid) of the worker running ``job_id``: the horse is
    the child that was not there before (``before``, from ``_children``)."""
    def find():
        view = env.service.get_job(job_id, owner=OWNER)
        if view["status"] != "running" or view["progress"]["stage"] != stage:
            return None
        for pid in worker_pids(pool):
            horses = [c.pid for c in psutil.Process(pid).children() if c.pid not in before]
            if horses:
                return pid, horses[0]
        return None

    return wait_for(find, 60, "the job to be mid-conversion")


def _results(env, job_id):
    return [e for e in env.ctx.store.entries("result") if e.object_id == job_id]


def _attempts(env, job_id):
    r = redis.Redis.from_url(env.settings.effective_redis_url)
    return Job.fetch(job_id, connection=r).retries_left


def test_a_horse_killed_by_a_signal_fails_its_job_at_once(env_factory, series_bytes):
    """A horse that dies of a signal while its worker runs (the OOM killer's
    SIGKILL, a native decoder's SIGSEGV or SIGABRT) would die again on the
    same bytes: no retry, the job fails at once with a code naming the
    signal, its upload gone and in the ledger, and the worker goes on."""
    env = env_factory(retention=300, sweep=1)
    pool = env.start_workers(1, slow_by=SLOW)
    time.sleep(1)  # let a worker start its scheduler first
    workers = worker_pids(pool)
    before = _children(pool)
    for signum in (signal.SIGKILL, signal.SIGSEGV):
        job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
        _, horse = _busy_worker(env, pool, job_id, before)
        os.kill(horse, signum)
        view = env.wait_job(job_id, OWNER, statuses=("failed", "done"), timeout=30)
        assert view["status"] == "failed"
        assert view["error"]["code"] == "worker_crashed"
        assert signum.name in view["error"]["message"]
        assert _attempts(env, job_id) == 0  # not queued again
        assert env.ctx.store.meta("input", job_id) is None
        assert [(r["kind"], r["reason"]) for r in env.service.records.ledger()
                if r["object_id"] == job_id] == [("input", "failed")]
        assert _results(env, job_id) == []
    nxt = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
    assert env.wait_job(nxt, OWNER, timeout=90)["status"] == "done"
    assert worker_pids(pool) == workers  # the same worker took the next job


def test_killing_the_whole_worker_retries_the_job(env_factory, series_bytes):
    """The worker and its horse die at once (a lost host): RQ finds the job
    abandoned once its heartbeat lapses; the sweeper runs that clean-up even
    though the replacement worker would wait a minute to do it."""
    env = env_factory(retention=300, sweep=1)
    pool = env.start_workers(1, slow_by=SLOW)
    env.start("cron")
    time.sleep(1)
    before = _children(pool)
    job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
    worker, horse = _busy_worker(env, pool, job_id, before)
    for pid in (horse, worker):
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    done = env.wait_job(job_id, OWNER, timeout=120)
    assert done["status"] == "done", done["error"]
    assert time.time() - killed < 60
    assert len(_results(env, job_id)) == 1
    assert env.ctx.store.meta("input", job_id) is None
    assert len(worker_pids(pool)) == 1  # the pool replaced the dead worker


def test_a_job_goes_on_while_redis_restarts(env_factory, redis_server, series_bytes):
    """Redis goes away mid-conversion and comes back empty (a restart with
    nothing kept; a host's link down is the same to the horse): the progress
    it cannot report is dropped, never the job, which ends done from the
    records (no Redis needed), its upload deleted and in the ledger."""
    env = env_factory(retention=300, sweep=1)
    pool = env.start_workers(1, slow_by=SLOW)
    time.sleep(1)
    before = _children(pool)
    job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
    _busy_worker(env, pool, job_id, before)
    redis_server.stop()
    try:
        time.sleep(2 * float(SLOW) + 1)  # progress reports are tried while it is away
    finally:
        redis_server.start()
    done = env.wait_job(job_id, OWNER, timeout=90)
    assert done["status"] == "done", done["error"]
    assert len(_results(env, job_id)) == 1
    assert env.ctx.store.meta("input", job_id) is None
    assert [(r["kind"], r["reason"]) for r in env.service.records.ledger()
            if r["object_id"] == job_id] == [("input", "converted")]
    assert "progress could not be reported (Redis unreachable)" in env.log_text()


def test_a_killed_job_past_its_deadline_ends_failed_and_its_upload_goes(env_factory,
                                                                        series_bytes):
    retention = 15
    env = env_factory(retention=retention, sweep=1)
    pool = env.start_workers(1, slow_by="1.5")
    env.start("cron")
    time.sleep(1)
    before = _children(pool)
    job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
    deadline = env.service.records.job(job_id)["deadline"]
    worker, horse = _busy_worker(env, pool, job_id, before, stage="reading")
    for pid in (horse, worker):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: env.ctx.store.meta("input", job_id) is None, deadline - time.time() + 0.5,
             "the upload to be deleted by its deadline")
    assert time.time() <= deadline + 0.5
    view = env.wait_job(job_id, OWNER, statuses=("failed",), timeout=10)
    assert view["error"]["code"] == "expired"
    # the abandoned job may still be retried by RQ later; it must change nothing
    time.sleep(30)
    view = env.service.get_job(job_id, owner=OWNER)
    assert view["status"] == "failed" and view["error"]["code"] == "expired"
    assert _results(env, job_id) == []
    rows = [r for r in env.service.records.ledger() if r["object_id"] == job_id]
    assert [(r["kind"], r["reason"], r["late"]) for r in rows if r["kind"] == "input"] == [
        ("input", "expired", False)]


def test_a_job_over_its_time_limit_is_stopped(env_factory, series_bytes):
    env = env_factory(retention=6, sweep=1)  # job timeout: half the retention
    env.start_workers(1, slow_by="2")
    job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
    view = env.wait_job(job_id, OWNER, statuses=("failed",), timeout=30)
    assert view["error"] == {"code": "timeout",
                             "message": "the conversion took longer than 3 s and was stopped"}
    assert env.ctx.store.meta("input", job_id) is None
