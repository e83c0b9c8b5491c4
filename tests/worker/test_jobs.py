"""Conversion jobs through real RQ worker processes and a real Redis."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import redis
from rq.job import Job
from stl import mesh as stlmesh

from tests.helpers import wait_for
from worker.service import Gone, Invalid, NotFound, NotReady
from worker.submit import RETRIES

OWNER = "session:test-owner"
OTHER = "session:someone-else"


def _redis(env):
    return redis.Redis.from_url(env.settings.effective_redis_url)


def test_job_converts_and_deletes_its_input(env_factory, store_kind, database_url, series_bytes):
    env = env_factory(store=store_kind, database_url=database_url)
    env.start_workers(1)
    view = env.service.create_job(series_bytes, {"preset": "bone", "threshold": None},
                                  owner=OWNER)
    assert view["status"] == "queued" and view["expires_at"]
    done = env.wait_job(view["id"], OWNER)
    assert done["status"] == "done", done["error"]
    assert done["progress"]["percent"] == 100.0
    report = done["report"]
    assert report["watertight"] and report["volume_mm3"] > 0
    # the STL reads back and matches the report
    opened = env.service.open_result(view["id"], owner=OWNER)
    data = opened.file.read()
    assert opened.size == len(data) and data[:80].rstrip() == b"ephemesh SPACE=LPS UNITS=mm"
    assert (opened.name, opened.media_type) == ("model.stl", "model/stl")
    m = stlmesh.Mesh.from_file("x.stl", fh=io.BytesIO(data))
    assert len(m.vectors) == report["triangles"]
    assert m.get_mass_properties()[0] == pytest.approx(report["volume_mm3"], rel=1e-3)
    # the input went as soon as the conversion ended, and the ledger says so
    assert env.ctx.store.meta("input", view["id"]) is None
    rows = [r for r in env.service.records.ledger() if r["object_id"] == view["id"]]
    assert [(r["kind"], r["reason"], r["late"]) for r in rows] == [("input", "converted", False)]
    assert rows[0]["bytes"] == sum(map(len, series_bytes)) + len(b'{"preset": "bone"}')


@pytest.mark.parametrize(("workers", "setting", "threads"), [
    (1, 0, os.cpu_count()), (2, 0, max(1, os.cpu_count() // 2)), (1, 1, 1)])
def test_a_job_uses_its_workers_share_of_the_cores(env_factory, series_bytes, workers, setting,
                                                   threads):
    env = env_factory(job_threads=setting)
    env.start_workers(workers)
    view = env.service.create_job(series_bytes, {}, owner=OWNER)
    done = env.wait_job(view["id"], OWNER)
    assert done["status"] == "done", done["error"]
    assert done["report"]["options"]["workers"] == threads


def test_every_job_key_has_a_ttl_within_the_retention(env_factory, series_bytes):
    env = env_factory(retention=600)
    view = env.service.create_job(series_bytes, {}, owner=OWNER)
    r = _redis(env)
    job_key = f"rq:job:{view['id']}"
    assert 0 < r.ttl(job_key) <= 600  # queued
    job = Job.fetch(view["id"], connection=r)
    assert job.result_ttl <= 600 and job.failure_ttl <= 600 and job.ttl <= 600
    assert job.retries_left == RETRIES
    env.start_workers(1, slow_by="0.3")
    # while it runs (RQ persists a running job's key; our worker keeps a TTL on it)
    wait_for(lambda: env.service.get_job(view["id"], owner=OWNER)["status"] == "running", 30,
             "the job to run")
    assert 0 < r.ttl(job_key) <= 600
    env.wait_job(view["id"], OWNER)
    for key in r.scan_iter("*"):
        ttl = r.ttl(key)
        name = key.decode()
        if name.startswith(("rq:job:", "rq:results:", "rq:execution", "ephemesh:")):
            assert 0 < ttl <= 600, (name, ttl)


def test_progress_is_reported_while_running(env_factory, series_bytes):
    env = env_factory()
    env.start_workers(1, slow_by="0.4")
    view = env.service.create_job(series_bytes, {}, owner=OWNER)
    seen = set()
    def watch():
        v = env.service.get_job(view["id"], owner=OWNER)
        if v["status"] == "running":
            seen.add((v["progress"]["stage"], v["progress"]["percent"]))
        return v["status"] == "done"

    wait_for(watch, 60, "the job to finish")
    stages = {s for s, _ in seen}
    assert {"reading", "surface"} <= stages, seen
    percents = sorted(p for _, p in seen)
    assert percents[0] < 50 < percents[-1]


def test_bad_input_fails_with_a_stable_code(env_factory):
    env = env_factory()
    env.start_workers(1)
    view = env.service.create_job([b"not a dicom file at all" * 10], {}, owner=OWNER)
    failed = env.wait_job(view["id"], OWNER)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "no_dicom"
    assert "1 files" in failed["error"]["message"]
    with pytest.raises(NotReady):
        env.service.open_result(view["id"], owner=OWNER)
    rows = [r for r in env.service.records.ledger() if r["object_id"] == view["id"]]
    assert [(r["kind"], r["reason"]) for r in rows] == [("input", "failed")]


def test_options_are_checked_before_anything_is_stored(env_factory, series_bytes):
    env = env_factory()
    with pytest.raises(Invalid) as err:
        env.service.create_job(series_bytes, {"preset": "marrow"}, owner=OWNER)
    assert err.value.code == "invalid_preset"
    with pytest.raises(Invalid) as err:
        env.service.create_job(series_bytes, {"colour": "red"}, owner=OWNER)
    assert err.value.code == "invalid_option"
    with pytest.raises(Invalid) as err:
        env.service.create_job([], {}, owner=OWNER)
    assert err.value.code == "empty_upload"
    assert env.ctx.store.entries("input") == []


def test_a_job_is_visible_to_its_owner_only(env_factory, series_bytes):
    env = env_factory()
    view = env.service.create_job(series_bytes, {}, owner=OWNER)
    assert env.service.get_job(view["id"], owner=OTHER) is None
    assert env.service.delete_job(view["id"], owner=OTHER) is False
    with pytest.raises(NotFound):
        env.service.open_result(view["id"], owner=OTHER)
    assert env.ctx.store.meta("input", view["id"]) is not None


def test_delete_now_removes_input_result_and_job_keys(env_factory, series_bytes):
    env = env_factory()
    env.start_workers(1)
    view = env.service.create_job(series_bytes, {}, owner=OWNER)
    env.wait_job(view["id"], OWNER)
    assert env.service.delete_job(view["id"], owner=OWNER)
    assert env.service.get_job(view["id"], owner=OWNER)["status"] == "deleted"
    with pytest.raises(Gone):
        env.service.open_result(view["id"], owner=OWNER)
    assert env.ctx.store.meta("result", view["id"]) is None
    assert not list(_redis(env).scan_iter(f"rq:*{view['id']}*"))
    kinds = {(r["kind"], r["reason"]) for r in env.service.records.ledger()
             if r["object_id"].startswith(view["id"])}
    assert kinds == {("input", "converted"), ("result", "user-request"),
                     ("redis-job", "user-request")}
    assert env.service.records.audit_rows(event="job-deleted")


def test_choosing_a_series_when_there_are_several(env_factory, two_series_bytes):
    env = env_factory()
    env.start_workers(1)
    view = env.service.create_job(two_series_bytes, {}, owner=OWNER, pick_series=True)
    choosing = env.wait_job(view["id"], OWNER, statuses=("choosing", "failed", "done"))
    assert choosing["status"] == "choosing"
    listed = choosing["series"]
    assert [s["slices"] for s in listed] == [24, 20]
    assert all("uid" not in s and "description" not in s for s in listed)
    assert env.ctx.store.meta("input", view["id"]) is not None  # kept while choosing
    with pytest.raises(Invalid):
        env.service.choose_series(view["id"], 3, owner=OWNER)
    env.service.choose_series(view["id"], 2, owner=OWNER)
    done = env.wait_job(view["id"], OWNER)
    assert done["status"] == "done", done["error"]
    assert done["report"]["series"]["chosen"]["slices"] == 20
    assert done["report"]["series"]["why"] == "the series asked for"
    assert env.ctx.store.meta("input", view["id"]) is None


def test_a_batch_becomes_one_job_per_series(env_factory, two_series_bytes):
    env = env_factory()
    env.start_workers(1)
    batch = env.service.create_batch(two_series_bytes, {"preset": "bone"}, owner=OWNER)
    assert batch["status"] == "splitting"
    def finished():
        b = env.service.get_batch(batch["id"], owner=OWNER)
        return b if b["status"] != "splitting" and b["jobs"] and all(
            j["status"] in ("done", "failed") for j in b["jobs"]) else None

    result = wait_for(finished, 90, "the batch to finish")
    assert result["status"] == "ready"
    # in the order the series are listed (series 1, the sphere, then series 2)
    assert [j["report"]["series"]["chosen"]["slices"] for j in result["jobs"]] == [24, 20]
    assert env.service.get_batch(batch["id"], owner=OTHER) is None
    volumes = sorted(j["report"]["volume_mm3"] for j in result["jobs"])
    assert volumes[0] > 0 and not np.isclose(volumes[0], volumes[1])
    # the batch upload and every job's input are gone
    assert env.ctx.store.entries("input") == []
    # each job's report stays free of UIDs
    for j in result["jobs"]:
        assert "uid" not in json.dumps(j["report"]).lower()


def test_jobs_a_redis_restart_lost_are_queued_again(env_factory, store_kind, redis_server,
                                                    series_bytes, two_series_bytes):
    env = env_factory(store=store_kind, sweep=1)
    job = env.service.create_job(series_bytes, {}, owner=OWNER)
    batch = env.service.create_batch(two_series_bytes, {}, owner=OWNER)
    redis_server.restart()  # no persistence: the queue is gone, the uploads are not (or are)
    env.start_workers(1)
    env.start("cron")
    if store_kind == "directory":
        assert env.wait_job(job["id"], OWNER, timeout=60)["status"] == "done"
        done = wait_for(lambda: (b := env.service.get_batch(batch["id"], owner=OWNER))["jobs"]
                        and all(j["status"] == "done" for j in b["jobs"]) and b, 90,
                        "the batch to be split and converted")
        assert len(done["jobs"]) == 2
    else:  # the uploads went with Redis: the job says so now, not at its deadline
        failed = env.wait_job(job["id"], OWNER, statuses=("failed",), timeout=30)
        assert failed["error"]["code"] == "input_missing"
        wait_for(lambda: env.service.get_batch(batch["id"], owner=OWNER)["status"] == "failed",
                 30, "the batch to fail")
