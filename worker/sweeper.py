"""The sweeper: one small function per kind of thing it deletes.

Each ``purge_*`` function deletes one kind of thing whose time has come,
writes one purge-ledger row per object it deleted, and returns a ``Swept``
saying how many and how many bytes.  ``sweep`` runs them all and records the
run.  It runs every ``EPHEMESH_SWEEP_SECONDS`` (RQ's cron scheduler, with
``ephemesh cron`` sweeping by itself when no worker takes the job), and by
hand as ``ephemesh sweep``.

Deadlines are kept without waiting for a sweep: a thing is deleted once its
deadline falls before the next run could come (``Settings.sweep_margin``).
Everything is safe to run twice at once: a store delete is atomic (one
sweeper wins it and writes its ledger row), deleting a Redis key twice is
harmless, and the ledger holds one row per object.  The directory store and
the database need no Redis and no worker, so uploads and results go by
their deadlines even when Redis was wiped or no worker is alive.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from converter import silence_pydicom_for_good

from . import metrics
from .context import Context
from .records import is_late
from .retention import delete_rq_job, delete_stored, record
from .states import (
    ENDED,
    OWNER_ENDED,
    SCAN_ENDED,
    SCAN_STORED,
    BatchStatus,
    JobStatus,
    Kind,
    Reason,
    ScanStatus,
)
from .store import WRITING
from .submit import CONVERT, LOST_ATTEMPT, READ, SPLIT, enqueue, new_id, object_of, rq_ids

log = logging.getLogger("ephemesh.sweeper")

#: a half-written store object older than this is debris (no write takes so long)
LEFTOVER_AGE_S = 60.0
EXPIRED = ("expired", "the upload reached its deletion deadline before it was converted")
#: RQ states in which a job may still run
RQ_PENDING = (RQStatus.QUEUED, RQStatus.STARTED, RQStatus.SCHEDULED, RQStatus.DEFERRED)


@dataclass
class Swept:
    """What one purge function did."""

    kind: str
    deleted: int = 0
    bytes: int = 0
    late: int = 0
    failed: bool = False

    def add(self, size, deadline, now):
        self.deleted += 1
        self.bytes += int(size or 0)
        self.late += is_late(deadline, now)


def _now(now):
    return time.time() if now is None else now


def _owner_row(ctx, object_id):
    """The job, batch or scan an object belongs to, with ``status``, or None
    (a ``ready`` scan counts as ended here: its reading job has)."""
    return ctx.records.job(object_id) or ctx.records.batch(object_id) \
        or ctx.records.scan(object_id)


def _ended(row) -> bool:
    return row is not None and row["status"] in OWNER_ENDED


def _reason(row) -> Reason:
    """Why an object of this job or batch is deleted."""
    if row is None:
        return Reason.EXPIRED
    status, code = row["status"], row.get("error_code")
    if status == JobStatus.DELETED:
        return Reason.USER_REQUEST
    if status in (JobStatus.DONE, BatchStatus.READY):
        return Reason.CONVERTED
    if status == JobStatus.FAILED:
        return Reason.EXPIRED if code == EXPIRED[0] else Reason.FAILED
    return Reason.EXPIRED


def expire_jobs(ctx, now=None) -> int:
    """Mark jobs and batches still waiting at their deadline as failed
    (``expired``), so a late worker leaves them alone.  Returns how many."""
    now = _now(now)
    due = now + ctx.settings.sweep_margin
    n = 0
    for row in ctx.records.unfinished_jobs(due):
        if ctx.records.fail_job(row["id"], *EXPIRED):
            n += 1
            metrics.job_ended(ctx, "failed", EXPIRED[0])
    for row in ctx.records.unfinished_batches(due):
        n += ctx.records.fail_batch(row["id"], *EXPIRED)
    return n


#: a job this young may not be on the queue yet (its submit is under way)
REQUEUE_GRACE_S = 10.0
LOST_INPUT = ("input_missing", "the upload was lost (its store restarted) before it was converted")


def requeue_lost(ctx, now=None) -> int:
    """Put back on the queue the jobs, batches and scan readings Redis lost (a
    restart keeps nothing), so a lost queue costs a delay, not a conversion.  A job whose
    upload was lost too (a Redis-backed store) fails with a code instead.
    Returns how many were put back."""
    now = _now(now)
    redis = ctx.redis
    due = now + ctx.settings.sweep_margin
    n = 0
    waiting = [(row, CONVERT) for row in ctx.records.waiting_jobs(now - REQUEUE_GRACE_S, due)]
    waiting += [(row, SPLIT) for row in ctx.records.waiting_batches(now - REQUEUE_GRACE_S, due)]
    waiting += [(row, READ) for row in ctx.records.live_scans()
                if row["status"] == ScanStatus.READING and row["created"] < now - REQUEUE_GRACE_S
                and row["deadline"] > due]
    for row, func in waiting:
        object_id = row["id"]
        if redis.exists(*(Job.key_for(i) for i in rq_ids(object_id))):
            continue
        if ctx.store.meta(Kind.SCAN if func == READ else Kind.INPUT, object_id) is None:
            fail = {CONVERT: ctx.records.fail_job, SPLIT: ctx.records.fail_batch,
                    READ: ctx.records.fail_scan}[func]
            fail(object_id, *LOST_INPUT)
            continue
        if func == CONVERT:
            ctx.records.set_job(object_id, only_if=(JobStatus.RUNNING,), status=JobStatus.QUEUED)
        enqueue(ctx, func, object_id, row["deadline"], attempt=LOST_ATTEMPT)
        log.warning("sweep: %s was lost from the queue and is queued again", object_id)
        n += 1
    return n


def _debris_due(entry, now, due) -> bool:
    """A folder left by a delete goes at once; a writer's (an upload still
    streaming in, or one whose process died) by the deadline its meta holds;
    anything else once it is ``LEFTOVER_AGE_S`` old."""
    if entry.object_id.startswith(".del."):
        return True
    if entry.object_id.startswith(WRITING) and entry.deadline > entry.created:
        return entry.deadline <= due
    return entry.created < now - LEFTOVER_AGE_S


def _purge_store(ctx, kind, now, ended, reason=_reason, owner=_owner_row,
                 swept=None) -> Swept:
    """Delete ``kind`` objects that are due, or whose job has ``ended``."""
    now = _now(now)
    due = now + ctx.settings.sweep_margin
    swept = swept or Swept(kind)
    for entry in ctx.store.entries(kind):
        if entry.object_id.startswith("."):  # debris of an interrupted write or delete
            if _debris_due(entry, now, due):
                swept.deleted += ctx.store.remove_leftover(kind, entry.object_id)
            continue
        row = owner(ctx, entry.object_id)
        if entry.deadline > due and not ended(row):
            continue
        size = delete_stored(ctx, kind, entry.object_id, reason(row), entry=entry, now=now)
        if size is not None:  # else another sweeper (or the worker) got there first
            swept.add(size, entry.deadline, now)
    return swept


def purge_inputs(ctx, now=None) -> Swept:
    """Delete uploads at their deadline, or at once when their job has ended
    (a worker that died between converting and deleting)."""
    return _purge_store(ctx, Kind.INPUT, now, _ended)


def purge_results(ctx, now=None) -> Swept:
    """Delete results at their deadline, or at once when their job was deleted;
    a job whose model went at its deadline is ``deleted`` from then on."""
    def deleted(row):
        return row is not None and row["status"] == JobStatus.DELETED

    return _purge_store(ctx, Kind.RESULT, now, deleted,
                        lambda row: Reason.USER_REQUEST if deleted(row) else Reason.EXPIRED)


EXPIRED_SCAN = ("expired", "the scan reached its deletion deadline")


def expire_scans(ctx, now=None) -> int:
    """Mark the scans whose deadline comes before the next sweep as deleted
    (``expired``): their upload and volumes go in this sweep."""
    due = _now(now) + ctx.settings.sweep_margin
    n = 0
    for row in ctx.records.live_scans(due_before=due):
        n += ctx.records.set_scan(row["id"], only_if=(row["status"],),
                                  status=ScanStatus.DELETED, error_code=EXPIRED_SCAN[0],
                                  error_message=EXPIRED_SCAN[1])
    return n


def _scan_reason(row) -> Reason:
    if row is None or row["status"] not in SCAN_ENDED or row["error_code"] == EXPIRED_SCAN[0]:
        return Reason.EXPIRED
    return Reason.FAILED if row["status"] == ScanStatus.FAILED else Reason.USER_REQUEST


def purge_scans(ctx, now=None) -> Swept:
    """Delete scan workspaces' uploads and decoded volumes at their deadline,
    or at once when their scan has ended (failed, or "Done")."""
    swept = Swept(Kind.SCAN)
    for kind in SCAN_STORED:
        _purge_store(ctx, kind, now, lambda row: row is not None and row["status"] in SCAN_ENDED,
                     _scan_reason, lambda c, object_id: c.records.scan(object_id), swept)
    return swept


def record_lost(ctx, now=None) -> Swept:
    """Ledger rows for uploads and results that went without a ledger row:
    a Redis-backed store loses them when Redis restarts, or its TTL fires
    first; a worker killed between deleting an upload and recording it.
    Each is recorded once, as deleted no later than now or its deadline
    (the latest it can have gone), with the size the job record kept."""
    now = _now(now)
    swept = Swept("lost")
    since = now - 3 * ctx.settings.retention_seconds - 3600
    for row in ctx.records.jobs_since(since):
        objects = [(Kind.INPUT, row["deadline"], row["input_bytes"], _reason(row))]
        if row["status"] == JobStatus.DONE and row["finished"]:
            objects.append((Kind.RESULT, row["finished"] + ctx.settings.retention_seconds, None,
                            Reason.EXPIRED))
        ended = row["status"] in ENDED
        for kind, deadline, size, reason in objects:
            if (deadline > now and not (kind == Kind.INPUT and ended)) \
                    or ctx.records.recorded(kind, row["id"]):
                continue
            if ctx.store.meta(kind, row["id"]) is not None:
                continue
            when = min(now, deadline)
            if record(ctx.records, kind, row["id"], size or 0, row["created"], deadline, reason,
                      now=when):
                swept.add(size, deadline, when)
    return swept


def purge_redis_jobs(ctx, now=None) -> Swept:
    """Delete RQ's keys of jobs that have ended or are due, and give any
    job key left without a TTL one at its deadline.

    RQ's own clean-up of abandoned jobs (a worker killed mid-job) runs here
    too, so it happens even when no worker is alive to run maintenance.
    """
    now = _now(now)
    swept = Swept(Kind.REDIS_JOB)
    try:
        _cleanup_abandoned(ctx)
        for rq_job_id in _rq_job_ids(ctx.redis):
            _sweep_rq_job(ctx, rq_job_id, now, swept)
    except RedisError:
        log.warning("sweep: Redis unreachable; job keys not swept this time")
        swept.failed = True
    return swept


def _cleanup_abandoned(ctx):
    for name in (ctx.settings.queue, ctx.settings.maintenance_queue):
        StartedJobRegistry(name, connection=ctx.redis).cleanup()


def _rq_job_ids(redis):
    """The ids of every RQ job hash in Redis (not its other keys)."""
    prefix = Job.redis_job_namespace_prefix
    ids = set()
    for key in redis.scan_iter(match=prefix + "*", count=1000):
        rest = key.decode()[len(prefix):]
        if ":" not in rest:
            ids.add(rest)
    return sorted(ids)


def _sweep_rq_job(ctx, rq_job_id, now, swept):
    redis = ctx.redis
    key = Job.key_for(rq_job_id)
    row = _owner_row(ctx, object_of(rq_job_id))
    try:
        job = Job.fetch(rq_job_id, connection=redis)
        status = job.get_status(refresh=False)
        created = job.created_at.timestamp() if job.created_at else None
    except NoSuchJobError:
        return
    except Exception:  # an unreadable job hash: treat as debris
        job, status, created = None, None, None
    pending = status in RQ_PENDING
    if row is not None:
        deadline = row["deadline"]
        due = deadline <= now + ctx.settings.sweep_margin
        if not due and (pending or not _ended(row)):
            if redis.ttl(key) == -1:  # RQ persists a running job's key: keep a TTL on it
                redis.expireat(key, int(deadline) + 1)
            return
        reason = _reason(row)
    else:
        # not a conversion (a sweep job, say): only keys RQ left without a TTL
        deadline = (created or now) + ctx.settings.retention_seconds
        if pending or (redis.ttl(key) != -1 and deadline > now):
            return
        reason = Reason.EXPIRED
    size = delete_rq_job(redis, rq_job_id, job)
    if row is None:
        swept.deleted += 1
    elif record(ctx.records, Kind.REDIS_JOB, rq_job_id, size, created, deadline, reason,
                now=now):
        swept.add(size, deadline, now)


def purge_access_log(ctx, now=None) -> Swept:
    """Delete access-log rows (which hold IP addresses) older than the limit."""
    now = _now(now)
    limit = ctx.settings.access_log_days * 86400
    cutoff = now - limit + ctx.settings.sweep_margin
    swept = Swept(Kind.ACCESS_LOG)
    n, oldest = ctx.records.purge_access_log(cutoff)
    if n:
        record(ctx.records, Kind.ACCESS_LOG, new_id(), 0, oldest, oldest + limit,
               Reason.EXPIRED, count=n, now=now)
        swept.deleted = n
        swept.late = int(is_late(oldest + limit, now))
    return swept


def purge_job_rows(ctx, now=None) -> Swept:
    """Forget job and batch rows that ended longer ago than the access log is
    kept (opaque ids, codes and a report: nothing needs them after that)."""
    swept = Swept("job-rows")
    older = _now(now) - ctx.settings.access_log_days * 86400
    swept.deleted = ctx.records.purge_jobs(older) + ctx.records.purge_scans(older)
    return swept


def purge_sweep_rows(ctx, now=None) -> Swept:
    """Forget the sweeper's own run rows as old as the access log's limit."""
    swept = Swept("sweep-rows")
    swept.deleted = ctx.records.purge_sweeps(_now(now) - ctx.settings.access_log_days * 86400)
    return swept


#: every purge, by what it deletes (the keys of ``sweep``'s answer)
PURGES = {
    Kind.INPUT: purge_inputs,
    Kind.RESULT: purge_results,
    Kind.SCAN: purge_scans,
    Kind.REDIS_JOB: purge_redis_jobs,
    Kind.ACCESS_LOG: purge_access_log,
    "job-rows": purge_job_rows,
    "sweep-rows": purge_sweep_rows,
    "lost": record_lost,
}


def sweep(ctx=None, now=None) -> dict:
    """Run every purge once; record the run.  Returns ``{kind: Swept}``."""
    own = ctx is None
    ctx = ctx or Context()
    now = _now(now)
    out = {}
    try:
        try:
            expire_jobs(ctx, now)
        except Exception as exc:  # keep deleting whatever else can be
            log.error("sweep: marking expired jobs failed (%s)", type(exc).__name__)
        try:
            expire_scans(ctx, now)
        except Exception as exc:
            log.error("sweep: marking expired scans failed (%s)", type(exc).__name__)
        try:
            requeue_lost(ctx, now)
        except Exception as exc:  # Redis away: next time
            log.warning("sweep: could not look for lost jobs (%s)", type(exc).__name__)
        for kind, purge in PURGES.items():
            try:
                out[kind] = purge(ctx, now)
            except Exception as exc:  # one kind failing must not stop the others
                log.error("sweep: %s failed (%s)", purge.__name__, type(exc).__name__)
                out[kind] = Swept(kind, failed=True)
        ctx.records.record_sweep(sum(s.deleted for s in out.values()),
                                 sum(s.late for s in out.values()), now=time.time())
        return out
    finally:
        if own:
            ctx.close()


def sweep_job() -> dict:
    """The RQ entry point: sweep, and return the counts (no ids, no names)."""
    silence_pydicom_for_good()
    return {str(kind): s.deleted for kind, s in sweep().items()}
