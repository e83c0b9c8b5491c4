"""SIGKILL mid-conversion: a whole worker (worker and work horse), or only the horse.

Real RQ worker processes under ``ephemesh worker``, a real Redis.  A lost
worker's job is retried; a horse killed under a living worker fails its job
at once (no retry on the same bytes) with a clear code; a result is written
once; an upload is deleted by its deadline either way.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time

import psutil
import redis
from rq.job import Job

from tests.helpers import Cable, wait_for, worker_pids

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


def _cut_while_writing(env, redis_server, **workers_env):
    """A worker whose link to Redis (the queue and the store) goes down just as
    its job's result writer first sends something to its staging keys, for
    8 s: longer than a request waits for its answer (5 s), and what was sent
    before the cut reaches Redis a second after what is sent once it is back."""
    cable = Cable(redis_server.port)
    cable.pull_on(b":stage:", for_s=8, late_by=1)
    env.start_workers(1, EPHEMESH_REDIS_URL=cable.url, **workers_env)
    return cable


def test_a_job_cut_off_from_its_redis_store_while_writing_ends_done(env_factory, redis_server,
                                                                      series_bytes):
    """The result's writer waits for Redis to come back and goes on: the job
    ends done, its model written once and whole, its upload gone."""
    env = env_factory(store="redis", retention=300, sweep=1)
    cable = _cut_while_writing(env, redis_server)
    try:
        job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
        done = env.wait_job(job_id, OWNER, timeout=90)
        cable.wait()
    finally:
        cable.close()
    assert done["status"] == "done", done["error"]
    time.sleep(0.5)  # the chunk sent before the cut has reached Redis: it changed nothing
    assert len(_results(env, job_id)) == 1
    model = env.ctx.store.get_part("result", job_id, 0)
    triangles = json.loads(env.ctx.store.get_part("result", job_id, 1))["triangles"]
    assert triangles > 0 and struct.unpack_from("<I", model, 80)[0] == triangles
    assert len(model) == 84 + 50 * triangles
    assert env.ctx.store.meta("input", job_id) is None
    assert [(r["kind"], r["reason"]) for r in env.service.records.ledger()
            if r["object_id"] == job_id] == [("input", "converted")]
    assert "the store could not be written (Redis unreachable); waiting for it" in env.log_text()
    # that late chunk may have staged itself again: it expires by the deadline, and
    # "delete now" takes it with the result
    r = redis.Redis.from_url(env.settings.effective_redis_url)
    assert all(0 < r.pttl(k) <= 300_000 for k in r.scan_iter("ephemesh:store:*"))
    env.service.delete_job(job_id, owner=OWNER)
    assert list(r.scan_iter(f"ephemesh:store:*:{job_id}:*")) == []


def test_a_job_cut_off_past_its_wait_fails_with_a_stable_code(env_factory, redis_server,
                                                                series_bytes):
    """Past the writer's bound (here 2 s, not ``store.REDIS_WAIT_S``) the job
    fails as it always did: ``internal_error`` and the fixed message, its
    upload deleted once Redis is back, no result, what it staged expiring."""
    env = env_factory(store="redis", retention=300, sweep=1)
    began = time.monotonic()
    cable = _cut_while_writing(env, redis_server, slow_by="0.01", TEST_REDIS_WAIT_S="2")
    try:
        job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
        view = env.wait_job(job_id, OWNER, timeout=90)
        cable.wait()
    finally:
        cable.close()
    assert view["status"] == "failed"
    assert view["error"] == {"code": "internal_error",
                             "message": "conversion failed unexpectedly"}
    assert time.monotonic() - began < 60  # gave up at its bound, not at the job's timeout
    assert _results(env, job_id) == []
    assert env.ctx.store.meta("input", job_id) is None
    assert [(r["kind"], r["reason"]) for r in env.service.records.ledger()
            if r["object_id"] == job_id] == [("input", "failed")]
    r = redis.Redis.from_url(env.settings.effective_redis_url)
    assert all(0 < r.pttl(k) <= 300_000 for k in r.scan_iter("ephemesh:store:*"))
    assert f"job {job_id}: failed unexpectedly" in env.log_text()


def test_a_run_that_finds_its_job_done_by_another_keeps_the_result(env_factory, series_bytes):
    """Two runs of one job (its worker cut off long enough for RQ to run it
    again elsewhere, while the first waits for Redis): the one that ends second
    finds the job done and leaves the result, the same conversion's, in place."""
    env = env_factory(retention=300, sweep=1)
    pool = env.start_workers(1, slow_by=SLOW)
    time.sleep(1)
    before = _children(pool)
    job_id = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
    _busy_worker(env, pool, job_id, before)
    assert env.service.records.finish_job(job_id, {"triangles": 0})  # the other run ended it
    r = redis.Redis.from_url(env.settings.effective_redis_url)
    wait_for(lambda: Job.fetch(job_id, connection=r).is_finished, 60, "this run to end")
    assert len(_results(env, job_id)) == 1
    assert env.service.get_job(job_id, owner=OWNER)["status"] == "done"
    assert env.ctx.store.meta("input", job_id) is None


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
