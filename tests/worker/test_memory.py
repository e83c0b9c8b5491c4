"""A conversion may take only its share of memory (``EPHEMESH_JOB_MEMORY_MB``).

Real RQ worker processes and a real Redis: a series too large for the share
ends ``failed`` with ``out_of_memory`` (not a dead horse, not the kernel's OOM
killer), its upload goes at once, and the same worker converts the next job.
"""

from __future__ import annotations

import pytest

from tests import dicomgen as G
from tests.helpers import worker_pids
from worker.tasks import OUT_OF_MEMORY

OWNER = "key:1"


@pytest.fixture(scope="module")
def large_series(tmp_path_factory) -> list[bytes]:
    """300 slices of 384 × 384: an 88 MB volume, read from 88 MB of upload."""
    folder = G.make_series_dir(tmp_path_factory.mktemp("large"), "sphere", size=(300, 384, 384))
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def test_a_job_past_its_memory_share_fails_with_a_code_and_the_worker_goes_on(
        env_factory, series_bytes, large_series):
    env = env_factory(retention=300, job_memory_mb=64)
    pool = env.start_workers(1)
    workers = worker_pids(pool)
    big = env.service.create_job(large_series, {}, owner=OWNER)["id"]
    view = env.wait_job(big, OWNER, timeout=120)
    assert view["status"] == "failed"
    assert view["error"] == {"code": OUT_OF_MEMORY[0], "message": OUT_OF_MEMORY[1]}
    assert env.ctx.store.meta("input", big) is None  # the upload went when the job ended
    assert [(r["kind"], r["reason"]) for r in env.service.records.ledger()
            if r["object_id"] == big] == [("input", "failed")]
    small = env.service.create_job(series_bytes, {}, owner=OWNER)["id"]
    assert env.wait_job(small, OWNER, timeout=60)["status"] == "done"
    assert worker_pids(pool) == workers  # the same worker, alive, took the next job
    assert "MemoryError" not in env.log_text()


def test_the_same_series_converts_within_a_larger_share(env_factory, large_series):
    env = env_factory(retention=300, job_memory_mb=1024)
    env.start_workers(1)
    job = env.service.create_job(large_series, {}, owner=OWNER)["id"]
    view = env.wait_job(job, OWNER, timeout=120)
    assert view["status"] == "done", view["error"]
    assert view["report"]["triangles"] > 1000
