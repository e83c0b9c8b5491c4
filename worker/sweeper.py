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

from .submit import new_id, object_of

log = logging.getLogger("ephemesh.sweeper")

#: RQ keys that belong to one job id
_RQ_JOB_KEYS = ("rq:job:{0}", "rq:job:{0}:dependents", "rq:job:{0}:dependencies",
                "rq:results:{0}", "rq:executions:{0}")
#: a half-written store object older than this is debris (no write takes so long)
LEFTOVER_AGE_S = 60.0
EXPIRED = ("expired", "the upload reached its deletion deadline before it was converted")


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
        if deadline is not None and now > deadline + 1.0:
            self.late += 1


def _now(now):
    return time.time() if now is None else now


def _owner_row(ctx, object_id):
    """The job or batch an object belongs to, with ``status``, or None."""
    return ctx.records.job(object_id) or ctx.records.batch(object_id)


def _reason(row):
    """Why an object of this job or batch is deleted."""
    if row is None:
        return "expired"
    status, code = row["status"], row.get("error_code")
    if status == "deleted":
        return "user-request"
    if status in ("done", "ready"):
        return "converted"
    if status == "failed":
        return "expired" if code == EXPIRED[0] else "failed"
    return "expired"


def expire_jobs(ctx, now=None) -> int:
    """Mark jobs and batches still waiting at their deadline as failed
    (``expired``), so a late worker leaves them alone.  Returns how many."""
    now = _now(now)
    due = now + ctx.settings.sweep_margin
    n = 0
    for row in ctx.records.unfinished_jobs(due):
        n += ctx.records.fail_job(row["id"], *EXPIRED)
    for row in ctx.records.unfinished_batches(due):
        n += ctx.records.set_batch(row["id"], only_if=("splitting",), status="failed",
                                   error_code=EXPIRED[0], error_message=EXPIRED[1])
    return n


#: a job this young may not be on the queue yet (its submit is under way)
REQUEUE_GRACE_S = 10.0
LOST_INPUT = ("input_missing", "the upload was lost (its store restarted) before it was converted")


def requeue_lost(ctx, now=None) -> int:
    """Put back on the queue the jobs and batches Redis lost (a restart keeps
    nothing), so a lost queue costs a delay, not a conversion.  A job whose
    upload was lost too (a Redis-backed store) fails with a code instead.
    Returns how many were put back."""
    from .submit import LOST_ATTEMPT, enqueue, rq_id  # noqa: PLC0415

    now = _now(now)
    redis = ctx.redis
    due = now + ctx.settings.sweep_margin
    n = 0
    waiting = [(row, "worker.tasks.convert")
               for row in ctx.records.waiting_jobs(now - REQUEUE_GRACE_S, due)]
    waiting += [(row, "worker.tasks.split_batch")
                for row in ctx.records.waiting_batches(now - REQUEUE_GRACE_S, due)]
    for row, func in waiting:
        object_id = row["id"]
        if redis.exists(*(f"rq:job:{rq_id(object_id, a)}" for a in range(1, LOST_ATTEMPT + 1))):
            continue
        if ctx.store.meta("input", object_id) is None:
            if func.endswith("convert"):
                ctx.records.fail_job(object_id, *LOST_INPUT)
            else:
                ctx.records.set_batch(object_id, only_if=("splitting",), status="failed",
                                      error_code=LOST_INPUT[0], error_message=LOST_INPUT[1])
            continue
        if func.endswith("convert"):
            ctx.records.set_job(object_id, only_if=("running",), status="queued")
        enqueue(ctx, func, object_id, row["deadline"], attempt=LOST_ATTEMPT)
        log.warning("sweep: %s was lost from the queue and is queued again", object_id)
        n += 1
    return n


def _purge_store(ctx, kind, now, ended, reason=_reason) -> Swept:
    """Delete ``kind`` objects that are due, or whose job has ``ended``."""
    now = _now(now)
    due = now + ctx.settings.sweep_margin
    swept = Swept(kind)
    for entry in ctx.store.entries(kind):
        if entry.object_id.startswith("."):  # debris of an interrupted write or delete
            if entry.created < now - LEFTOVER_AGE_S or entry.object_id.startswith(".del."):
                swept.deleted += ctx.store.remove_leftover(kind, entry.object_id)
            continue
        row = _owner_row(ctx, entry.object_id)
        if entry.deadline > due and not ended(row):
            continue
        size = ctx.store.delete(kind, entry.object_id)
        if size is None:
            continue  # another sweeper (or the worker) got there first
        # (a result's row also makes its job say deleted, in one transaction)
        ctx.records.record_deletion(kind, entry.object_id, size, entry.created, entry.deadline,
                                    reason(row), now=now)
        swept.add(size, entry.deadline, now)
    return swept


def purge_inputs(ctx, now=None) -> Swept:
    """Delete uploads at their deadline, or at once when their job has ended
    (a worker that died between converting and deleting)."""
    return _purge_store(ctx, "input", now,
                        lambda row: row is not None and row["status"] in
                        ("done", "failed", "deleted", "ready"))


def purge_results(ctx, now=None) -> Swept:
    """Delete results at their deadline, or at once when their job was deleted;
    a job whose model went at its deadline is ``deleted`` from then on."""
    return _purge_store(ctx, "result", now,
                        lambda row: row is not None and row["status"] == "deleted",
                        lambda row: "user-request" if row and row["status"] == "deleted"
                        else "expired")


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
        objects = [("input", row["deadline"], row["input_bytes"], _reason(row))]
        if row["status"] == "done" and row["finished"]:
            objects.append(("result", row["finished"] + ctx.settings.retention_seconds, None,
                            "expired"))
        ended = row["status"] in ("done", "failed", "deleted")
        for kind, deadline, size, reason in objects:
            if (deadline > now and not (kind == "input" and ended)) \
                    or ctx.records.recorded(kind, row["id"]):
                continue
            if ctx.store.meta(kind, row["id"]) is not None:
                continue
            if ctx.records.record_deletion(kind, row["id"], size or 0, row["created"], deadline,
                                           reason, now=min(now, deadline)):
                swept.add(size, deadline, min(now, deadline))
    return swept


def purge_redis_jobs(ctx, now=None) -> Swept:
    """Delete RQ's keys of jobs that have ended or are due, and give any
    job key left without a TTL one at its deadline.

    RQ's own clean-up of abandoned jobs (a worker killed mid-job) runs here
    too, so it happens even when no worker is alive to run maintenance.
    """
    from redis.exceptions import RedisError  # noqa: PLC0415

    now = _now(now)
    swept = Swept("redis-job")
    try:
        _cleanup_abandoned(ctx)
        for rq_id in _rq_job_ids(ctx.redis):
            _sweep_rq_job(ctx, rq_id, now, swept)
    except RedisError:
        log.warning("sweep: Redis unreachable; job keys not swept this time")
        swept.failed = True
    return swept


def _cleanup_abandoned(ctx):
    from rq.registry import StartedJobRegistry  # noqa: PLC0415

    for name in (ctx.settings.queue, ctx.settings.maintenance_queue):
        StartedJobRegistry(name, connection=ctx.redis).cleanup()


def _rq_job_ids(redis):
    ids = set()
    for key in redis.scan_iter(match="rq:job:*", count=1000):
        rest = key.decode()[len("rq:job:"):]
        if ":" not in rest:
            ids.add(rest)
    return sorted(ids)


def _sweep_rq_job(ctx, rq_id, now, swept):
    from rq.exceptions import NoSuchJobError  # noqa: PLC0415
    from rq.job import Job, JobStatus  # noqa: PLC0415

    redis = ctx.redis
    key = f"rq:job:{rq_id}"
    row = _owner_row(ctx, object_of(rq_id))
    try:
        job = Job.fetch(rq_id, connection=redis)
        status = job.get_status(refresh=False)
        created = job.created_at.timestamp() if job.created_at else None
    except NoSuchJobError:
        return
    except Exception:  # noqa: BLE001 - an unreadable job hash: treat as debris
        job, status, created = None, None, None
    running = status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED,
                         JobStatus.DEFERRED)
    if row is not None:
        deadline = row["deadline"]
        ended = row["status"] in ("done", "failed", "deleted", "ready")
        due = deadline <= now + ctx.settings.sweep_margin
        if not due and (running or not ended):
            if redis.ttl(key) == -1:  # RQ persists a running job's key: keep a TTL on it
                redis.expireat(key, int(deadline) + 1)
            return
        reason = _reason(row)
    else:
        # not a conversion (a sweep job, say): only keys RQ left without a TTL
        deadline = (created or now) + ctx.settings.retention_seconds
        if running or (redis.ttl(key) != -1 and deadline > now):
            return
        reason = "expired"
    size = delete_rq_job(redis, rq_id, job)
    if row is not None and ctx.records.record_deletion(
            "redis-job", rq_id, size, created, deadline, reason, count=1, now=now):
        swept.add(size, deadline, now)
    elif row is None:
        swept.deleted += 1


def delete_rq_job(redis, rq_id, job) -> int:
    """Delete every key of one RQ job (stopping it first if it runs); return
    the bytes Redis held for them."""
    keys = [k.format(rq_id) for k in _RQ_JOB_KEYS]
    keys += [k.decode() for k in redis.scan_iter(match=f"rq:execution:{rq_id}:*", count=1000)]
    size = 0
    for k in keys:
        try:
            size += int(redis.memory_usage(k) or 0)
        except Exception:  # noqa: BLE001 - MEMORY USAGE is optional on some servers
            pass
    if job is not None:
        try:
            if job.get_status(refresh=False) == "started":
                from rq.command import send_stop_job_command  # noqa: PLC0415

                send_stop_job_command(redis, rq_id)
        except Exception:  # noqa: BLE001 - it may have just ended
            pass
        try:
            job.delete(remove_from_queue=True)
        except Exception:  # noqa: BLE001 - half-gone already
            pass
    redis.delete(*keys)
    return size


def purge_access_log(ctx, now=None) -> Swept:
    """Delete access-log rows (which hold IP addresses) older than the limit."""
    now = _now(now)
    limit = ctx.settings.access_log_days * 86400
    cutoff = now - limit + ctx.settings.sweep_margin
    swept = Swept("access-log")
    n, oldest = ctx.records.purge_access_log(cutoff)
    if n:
        ctx.records.record_deletion("access-log", new_id(), 0, oldest, oldest + limit, "expired",
                                    count=n, now=now)
        swept.deleted = n
        swept.late = int(now > oldest + limit + 1.0)
    ctx.records.purge_sweeps(now - limit)  # bookkeeping kept as long as the access log
    ctx.records.purge_jobs(now - limit)
    return swept


PURGES = (purge_inputs, purge_results, purge_redis_jobs, purge_access_log, record_lost)


def sweep(ctx=None, now=None) -> dict:
    """Run every purge once; record the run.  Returns ``{kind: Swept}``."""
    from .context import Context  # noqa: PLC0415

    own = ctx is None
    ctx = ctx or Context()
    now = _now(now)
    out = {}
    try:
        try:
            expire_jobs(ctx, now)
        except Exception as exc:  # noqa: BLE001 - keep deleting whatever else can be
            log.error("sweep: marking expired jobs failed (%s)", type(exc).__name__)
        try:
            requeue_lost(ctx, now)
        except Exception as exc:  # noqa: BLE001 - Redis away: next time
            log.warning("sweep: could not look for lost jobs (%s)", type(exc).__name__)
        for purge in PURGES:
            try:
                swept = purge(ctx, now)
            except Exception as exc:  # noqa: BLE001
                log.error("sweep: %s failed (%s)", purge.__name__, type(exc).__name__)
                swept = Swept(purge.__name__.removeprefix("purge_"), failed=True)
            out[swept.kind] = swept
        ctx.records.record_sweep(sum(s.deleted for s in out.values()),
                                 sum(s.late for s in out.values()), now=time.time())
        return out
    finally:
        if own:
            ctx.close()


def sweep_job() -> dict:
    """The RQ entry point: sweep, and return the counts (no ids, no names)."""
    from converter import silence_pydicom_for_good as quiet_pydicom  # noqa: PLC0415

    quiet_pydicom()
    return {kind: s.deleted for kind, s in sweep().items()}
