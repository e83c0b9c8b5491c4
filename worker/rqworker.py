"""RQ worker processes, set up for the retention promise.

``EphemeshWorker`` is RQ's forking ``Worker`` with six changes: job
descriptions are never logged, abandoned jobs are looked for every minute
(not every ten), a dead worker's job is found abandoned 25 s after its last
heartbeat (not 90 s), a running job's key keeps a TTL at the job's
deadline (RQ removes the TTL while a job runs, so a worker killed mid-job
would leave it forever), and each work horse may take only its share of
memory (``Settings.job_memory``: past it an allocation fails and the job
ends ``out_of_memory``, where the kernel's OOM killer would pick any
process, Redis or the database included), and a horse that dies of a
signal fails its job at once rather than being retried on the same bytes.
``run_pool`` runs N of them
(RQ's ``WorkerPool``), replacing any that dies.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal

import redis
from rq import Worker
from rq.worker_pool import WorkerPool

from converter import silence_pydicom_for_good
from converter.sandbox import limit_growth

from . import logs, metrics
from .config import Settings
from .context import Context
from .retention import delete_all, delete_stored
from .states import BATCH_LIVE, SCAN_STORED, WAITING, Kind, Reason
from .submit import READ, SPLIT, object_of

#: how often a busy worker checks on its work horse and renews its heartbeat
JOB_MONITORING_INTERVAL = 10
#: a heartbeat outlives its renewal by this much (RQ: 60 s); a job whose worker
#: died is found abandoned this long after its last heartbeat
HEARTBEAT_SLACK = 15
MAINTENANCE_INTERVAL = 60


def preload() -> None:
    """Import the converter and its compiled kernels in the worker, once:
    every work horse is a fork of it and starts with them loaded (the imports
    of pydicom, numpy and the converter: ~0.3 s a job)."""
    for name in ("converter.loading", "converter.marching", "converter.series",
                 "converter.views", "skimage.filters"):  # a scan's reading computes Otsu
        importlib.import_module(name)


class EphemeshWorker(Worker):
    def __init__(self, *args, **kwargs):
        kwargs["log_job_description"] = False
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_monitoring_interval", JOB_MONITORING_INTERVAL)
        super().__init__(*args, **kwargs)
        silence_pydicom_for_good()
        preload()
        # run_pool puts the pool's share in the environment; one worker alone takes its own
        self.job_memory = Settings.from_env().job_memory(workers=1)
        self._horse_signal = None  # the signal the last horse died of, if any

    def main_work_horse(self, job, queue):
        """The forked horse takes at most its share of memory, then runs the job."""
        try:
            limit_growth(self.job_memory)
        except (OSError, ValueError):
            self.log.warning("could not limit a work horse's memory")
        super().main_work_horse(job, queue)

    def get_heartbeat_ttl(self, job, working_time=0.0):
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - working_time, interval)
        return int(interval) + HEARTBEAT_SLACK

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        """Note the signal a horse died of (RQ calls this just before
        ``handle_job_failure``); a stop or a timeout kill is no signal of the
        upload's."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        stopping = self._shutdown_requested_date is not None or self._stopped_job_id == job.id
        if ret_val is not None and os.WIFSIGNALED(ret_val) and not stopping:
            self._horse_signal = os.WTERMSIG(ret_val)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="",
                           execution=None):
        """A horse killed by a signal while this worker runs (SIGKILL: the
        kernel's OOM killer; SIGABRT, SIGSEGV: a native decoder) would die
        again on the same bytes: the job fails now, without a retry, its
        upload deleted first.  Other failures of a horse are retried; after
        the last try the job's record says so instead of waiting for its
        deadline.  (A whole worker lost — a host gone — is RQ's abandoned
        job, retried.)"""
        signum, self._horse_signal = getattr(self, "_horse_signal", None), None
        if signum is not None:
            job.retries_left = 0
        final = not job.should_retry and self._stopped_job_id != job.id
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                   exc_string=exc_string, execution=execution)
        if final:
            record_crash(job, signum)

    def prepare_job_execution(self, job, remove_from_intermediate_queue=False):
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        deadline = (job.meta or {}).get("deadline")
        if deadline:
            self.connection.expireat(job.key, int(deadline) + 1)


CRASHED = ("worker_crashed",
           "the conversion process stopped unexpectedly (it may have run out of memory)")


def crash_message(signum: int | None) -> str:
    """What a job's error says of its horse's death (the signal's name only)."""
    if signum is None:
        return CRASHED[1]
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {int(signum)}"
    if signum == signal.SIGKILL:
        return (f"the conversion process was killed ({name}: the machine may have run out of "
                "memory); the upload is not tried again")
    return f"the conversion process crashed ({name}) on this upload; it is not tried again"


def record_crash(job, signum: int | None = None) -> None:
    """Mark the job (or batch) of a crashed RQ job failed, if it still waits;
    its upload goes first, as when a conversion fails.  ``signum``: the
    signal its horse died of, named in the message."""
    object_id = object_of(job.id)
    batch = job.func_name == SPLIT
    ctx = Context()
    try:
        if job.func_name == READ:  # a scan's reading: it failed, nothing of it stays
            if ctx.records.fail_scan(object_id, CRASHED[0], crash_message(signum)):
                delete_all(ctx, object_id, Reason.FAILED, deadline=None, kinds=SCAN_STORED,
                           rq=False)
            return
        row, live, fail = ((ctx.records.batch(object_id), BATCH_LIVE, ctx.records.fail_batch)
                           if batch else (ctx.records.job(object_id), WAITING,
                                          ctx.records.fail_job))
        if row is None or row["status"] not in live:
            return  # ended, or waiting for its owner's choice: not this crash's to end
        delete_stored(ctx, Kind.INPUT, object_id, Reason.FAILED)
        if fail(object_id, CRASHED[0], crash_message(signum)) and not batch:
            metrics.job_ended(ctx, "failed", CRASHED[0])
    except Exception:  # the sweeper expires it at its deadline anyway
        logging.getLogger("ephemesh.worker").error("job %s: could not record a crash", job.id)
    finally:
        ctx.close()


def run_pool(settings, workers: int, *, burst: bool = False) -> None:
    """Run ``workers`` worker processes on the conversion and maintenance
    queues until SIGINT/SIGTERM (or, with ``burst``, until the queues are empty)."""
    silence_pydicom_for_good()
    logs.configure(settings.log_format)
    logging.getLogger("rq").setLevel(logging.INFO)
    # each worker's horse may take this much memory and this many threads (read at start)
    os.environ["EPHEMESH_JOB_MEMORY_MB"] = str(max(1, settings.job_memory(workers) >> 20))
    os.environ["EPHEMESH_JOB_THREADS"] = str(settings.threads(workers))
    connection = redis.Redis.from_url(settings.effective_redis_url)
    pool = WorkerPool([settings.maintenance_queue, settings.queue], connection=connection,
                      num_workers=workers, worker_class=EphemeshWorker)
    pool.start(burst=burst, logging_level="INFO")
