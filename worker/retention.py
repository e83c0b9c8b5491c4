"""Deleting things: the one path for a stored object, its ledger row and its
RQ keys.

Every caller deletes through here: a worker ending a job (``tasks``), an
owner's "delete now" (``service``), the sweeper, the clean-up after a
crashed work horse (``rqworker``).  So every deletion writes its ledger row
the same way, and what else a deletion changes is said once, in
``CONSEQUENCES``: a result's row also turns its ``done`` job into
``deleted`` (the report goes with the model), in the row's own transaction.
"""

from __future__ import annotations

from redis.exceptions import RedisError
from rq.command import send_stop_job_command
from rq.exceptions import NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.results import Result

from . import metrics
from .records import Records
from .states import SCAN_LIVE, STORED, Kind, Reason, ScanStatus
from .submit import rq_ids

#: what else a thing's ledger row changes, written in the row's own transaction
CONSEQUENCES = {
    Kind.RESULT: (Records.model_gone,),  # its done job says deleted, without its report
}


def record(records, kind, object_id, size, created, deadline, reason, *, count=1,
           now=None, converted=None) -> bool:
    """Write the ledger row of a thing that has gone, with its consequences;
    False when it was recorded already (another process deleted it first).
    ``converted``: when the job's result was made (its receipts say it)."""
    also = [change(object_id) for change in CONSEQUENCES.get(kind, ())]
    return records.record_deletion(kind, object_id, size, created, deadline, reason,
                                   count=count, now=now, also=also, converted=converted)


def delete_stored(ctx, kind, object_id, reason, *, entry=None, now=None) -> int | None:
    """Delete one object of the store and write its ledger row.

    Parameters
    ----------
    ctx : worker.context.Context
    kind : states.Kind
        One of ``states.STORED``.
    object_id : str
    reason : states.Reason
    entry : worker.store.Entry, optional
        The store's listing of the object (the sweeper has it); otherwise
        its creation time and deadline are read from the store.
    now : float, optional
        The deletion time the ledger row says (default: now).

    Returns
    -------
    int or None
        The bytes deleted, or None when the object was not there (gone
        already: whoever deleted it wrote the row).
    """
    if entry is None:
        meta = ctx.store.meta(kind, object_id)
        created, deadline = (meta["created"], meta["deadline"]) if meta else (None, None)
    else:
        created, deadline = entry.created, entry.deadline
    converted = created if kind == Kind.RESULT else _result_made(ctx, object_id)
    size = ctx.store.delete(kind, object_id)
    if size is not None:
        record(ctx.records, kind, object_id, size, created, deadline, reason, now=now,
               converted=converted)
    return size


def _result_made(ctx, object_id) -> float | None:
    """When the job's result was stored (an upload deleted after its
    conversion: the result is there), else None."""
    meta = ctx.store.meta(Kind.RESULT, object_id)
    return meta["created"] if meta else None


def delete_all(ctx, object_id, reason, *, deadline, kinds=STORED, rq=True) -> None:
    """Delete now everything one job, batch or scan left: its stored objects
    (of ``kinds``) and (unless ``rq`` is False: an RQ job ending itself) its
    RQ jobs, each with its ledger row (``deadline``: the RQ jobs')."""
    for kind in kinds:
        delete_stored(ctx, kind, object_id, reason)
    if rq:
        delete_rq_jobs(ctx, object_id, deadline, reason)


def delete_rq_jobs(ctx, object_id, deadline, reason) -> None:
    """Delete the RQ jobs (every attempt) of one job or batch now, with ledger rows."""
    for rq_job_id in rq_ids(object_id):
        try:
            job = Job.fetch(rq_job_id, connection=ctx.redis)
        except NoSuchJobError:
            continue
        except RedisError:
            return  # the sweeper deletes them by the deadline
        created = job.created_at.timestamp() if job.created_at else None
        size = delete_rq_job(ctx.redis, rq_job_id, job)
        record(ctx.records, Kind.REDIS_JOB, rq_job_id, size, created, deadline, reason)


def rq_keys(redis, rq_job_id) -> list[str]:
    """Every Redis key RQ keeps for one job id, named by RQ's own helpers."""
    handle = Job(rq_job_id, connection=redis)  # not fetched: only its key names are read
    keys = [handle.key, handle.dependents_key, handle.dependencies_key,
            Result.get_key(rq_job_id), ExecutionRegistry(rq_job_id, connection=redis).key]
    pattern = Execution("*", rq_job_id, connection=redis).key  # one key per execution
    return keys + [k.decode() for k in redis.scan_iter(match=pattern, count=1000)]


def delete_rq_job(redis, rq_job_id, job) -> int:
    """Delete every key of one RQ job (stopping it first if it runs); return
    the bytes Redis held for them.  ``job`` is None when its hash is unreadable."""
    keys = rq_keys(redis, rq_job_id)
    size = 0
    for key in keys:
        try:
            size += int(redis.memory_usage(key) or 0)
        except Exception:  # MEMORY USAGE is optional on some servers
            pass
    if job is not None:
        try:
            if job.get_status(refresh=False) == RQStatus.STARTED:
                send_stop_job_command(redis, rq_job_id)
        except Exception:  # it may have just ended (InvalidJobOperation), or gone
            pass
        try:
            job.delete(remove_from_queue=True)
        except Exception:  # half-gone already
            pass
    redis.delete(*keys)
    return size


#: what a job or scan that a stop cut short says
SHUT_DOWN = ("shutdown", "the service stopped before this ended; what was sent was deleted")
#: later than any deadline (every live thing is due at a stop)
_ALWAYS = 1e18


def delete_everything(ctx, reason=Reason.SHUTDOWN) -> dict:
    """When the service stops: every job, batch and scan that has not ended
    fails (``shutdown``), then every object of the store goes, each with its
    ledger row (``reason``).  Returns ``{kind: count}`` of what was deleted."""
    for row in ctx.records.unfinished_jobs(_ALWAYS):
        if ctx.records.fail_job(row["id"], *SHUT_DOWN):
            metrics.job_ended(ctx, "failed", SHUT_DOWN[0])
    for row in ctx.records.unfinished_batches(_ALWAYS):
        ctx.records.fail_batch(row["id"], *SHUT_DOWN)
    for row in ctx.records.live_scans():
        ctx.records.set_scan(row["id"], only_if=SCAN_LIVE, status=ScanStatus.DELETED,
                             error_code=SHUT_DOWN[0], error_message=SHUT_DOWN[1])
    gone = {}
    for kind in STORED:
        n = 0
        for entry in ctx.store.entries(kind):
            n += delete_stored(ctx, kind, entry.object_id, reason, entry=entry) is not None
        gone[str(kind)] = n
    return gone
