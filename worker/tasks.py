"""The RQ jobs.  Arguments are opaque ids only.

``convert_job(job_id)``: the payload (options and files) comes from the
store, the STL and report go back to the store, and the input is deleted
whatever happens (unless the job stops to let its owner choose a series:
then its conversion has not ended, and the deadline still holds).

``split_batch(batch_id)``: one upload holding many series becomes one
conversion job per series, each with the batch's deadline.

Both end in ``_finish``: the upload goes first (ledger: ``converted`` or
``failed``), then a failure is recorded, so a job that says it has ended
holds no upload.  Errors are stored as stable codes with the converter's
safe messages, or a fixed message for anything unexpected — never exception
text, which could hold DICOM values.  A job found already finished, failed
or deleted (a duplicate run after a kill, or one the sweeper expired) does
nothing.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from datetime import UTC, datetime

from redis.exceptions import RedisError
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from converter import (
    ConverterError,
    ConvertOptions,
    convert,
    encapsulated,
    list_series,
    silence_pydicom_for_good,
)
from converter.errors import is_out_of_memory
from converter.formats import is_binary_stl

from . import changes, metrics
from .context import Context
from .retention import delete_stored
from .returning import ReturnFailed, send_with_retries
from .scans import SCAN_OPTION, scan_files
from .states import (
    DICOM_PART,
    MODEL_PART,
    PREVIEW_PART,
    REPORT_PART,
    WAITING,
    BatchStatus,
    JobStatus,
    Kind,
    Reason,
)
from .submit import FROM_PACS, derived_id, submit_job

log = logging.getLogger("ephemesh.worker")
INTERNAL_ERROR = ("internal_error", "conversion failed unexpectedly")
OUT_OF_MEMORY = ("out_of_memory", "the series needs more memory than a conversion may take "
                 "on this server")


class JobFailed(RuntimeError):
    """Raised to RQ when the records themselves cannot be written; the text
    is a fixed code, so RQ stores nothing sensitive in ``exc_info``."""


class JobProgress:
    """The converter's progress callback in a work horse: writes {stage,
    percent} into ``job.meta`` at each new stage and at most every half
    second within one.  A report that cannot be written (Redis away for a
    while: a restart, a host cut off) is dropped, never the job: the
    conversion goes on and ends in the records, which need no Redis."""

    def __init__(self, job):
        self.job = job
        self.last = 0.0
        self.stage = None
        self.dropped = False  # a report was lost (said once in the log)

    def __call__(self, stage, percent):
        if self.job is None:
            return
        now = time.monotonic()
        if stage == self.stage and now - self.last < 0.5 and percent < 100:
            return
        self.last, self.stage = now, stage
        self.job.meta["progress"] = {"stage": stage, "percent": float(percent)}
        try:
            self.job.save_meta()
        except RedisError:
            if not self.dropped:
                log.warning("progress could not be reported (Redis unreachable); "
                            "the conversion goes on")
            self.dropped = True


class _Failed(Exception):  # a way out of the work, not an error
    """The work ends failed with ``code`` and ``message`` (safe texts)."""

    def __init__(self, code, message):
        super().__init__(code)
        self.code, self.message = code, message


def convert_job(job_id: str) -> str:
    """Convert the stored upload ``job_id``; return the job's status."""
    return _run("job", job_id, _convert)


def split_batch(batch_id: str) -> str:
    """Split the stored batch upload into one conversion job per series."""
    return _run("batch", batch_id, _split)


def _run(kind, object_id, work) -> str:
    """Run ``work(ctx, object_id)`` (it returns the status it reached); any
    failure ends as a stable code, and ``_finish`` always runs."""
    silence_pydicom_for_good()
    ctx = Context()
    status, failure = JobStatus.FAILED, None
    started = time.monotonic()
    if kind == "job":
        _waited(ctx)
    try:
        status = work(ctx, object_id)
    except _Failed as exc:
        failure = (exc.code, exc.message)
    except JobTimeoutException:
        failure = ("timeout", f"the conversion took longer than {ctx.settings.job_timeout} s "
                              "and was stopped")
    except Exception as exc:  # the text could hold DICOM values or paths: never kept
        if is_out_of_memory(exc):
            failure = OUT_OF_MEMORY
        else:
            log.error("%s %s: failed unexpectedly", kind, object_id)
            failure = INTERNAL_ERROR
    finally:
        _finish(ctx, kind, object_id, status, failure, started)
    return str(status)


def _waited(ctx) -> None:
    """The queue wait of the RQ job being run (enqueued → now)."""
    job = get_current_job()
    enqueued = job.enqueued_at if job is not None else None
    if enqueued is not None:
        if enqueued.tzinfo is None:
            enqueued = enqueued.replace(tzinfo=UTC)
        waited = (datetime.now(UTC) - enqueued).total_seconds()
        metrics.observe(ctx, "ephemesh_queue_wait_seconds", max(0.0, waited))


def _count_end(ctx, failure, started) -> None:
    """This run ended the job (a duplicate run ends nothing): the metrics and
    the log say so once."""
    seconds = time.monotonic() - started
    took = {"duration_s": round(seconds, 3)}
    if failure:
        metrics.job_ended(ctx, "failed", failure[0])
        log.info("conversion failed: %s", failure[0], extra=took)
    else:
        metrics.job_ended(ctx, "done")
        metrics.observe(ctx, "ephemesh_conversion_seconds", seconds)
        log.info("conversion done", extra=took)


def _finish(ctx, kind, object_id, status, failure, started=None) -> None:
    """The upload goes first (unless the job waits for its owner's choice),
    then the failure is recorded: a job that says it has ended holds no
    upload, and its ledger row is there."""
    try:
        if failure == OUT_OF_MEMORY:
            gc.collect()  # a thread's exception can keep the failed frames in a cycle
        if status != JobStatus.CHOOSING:
            ended_well = status in (JobStatus.DONE, BatchStatus.READY)
            delete_stored(ctx, Kind.INPUT, object_id,
                          Reason.CONVERTED if ended_well else Reason.FAILED)
        if failure and kind == "job":
            if ctx.records.fail_job(object_id, *failure):
                changes.announce(ctx, object_id)
                if started is not None:
                    _count_end(ctx, failure, started)
        elif failure:
            ctx.records.fail_batch(object_id, *failure)
    except Exception:  # the records are unreachable: tell RQ, with no text
        raise JobFailed("internal_error") from None
    finally:
        ctx.close()


def _convert(ctx, job_id) -> str:
    started = time.monotonic()
    row = ctx.records.job(job_id)
    if row is None or row["status"] not in WAITING:
        return row["status"] if row else "missing"  # ended, or waiting for a choice
    ctx.records.set_job(job_id, only_if=WAITING, status=JobStatus.RUNNING)
    changes.announce(ctx, job_id)
    payload = _input(ctx, job_id)
    if payload is None:
        stored = ctx.store.get(Kind.RESULT, job_id)
        if stored is not None and ctx.records.finish_job(job_id, json.loads(stored[1])):
            _count_end(ctx, None, started)
            return JobStatus.DONE  # an earlier run was killed after storing its result
        raise _Failed("input_missing", "the upload was deleted before it could be converted")
    options = json.loads(payload[0])
    files = payload[1:]
    scan_id = options.pop(SCAN_OPTION, None)
    if scan_id is not None:  # a scan workspace's job: it converts from the kept upload
        files = scan_files(ctx, scan_id)
        if files is None:
            raise _Failed("input_missing", "the scan was deleted before this could be converted")
    progress = JobProgress(get_current_job())
    from_pacs = bool(options.pop(FROM_PACS, False))
    try:
        index = options.pop("series_index", None)
        if index is not None or (row["pick"] and options.get("series") is None):
            listing = list_series(files, assume_geometry=bool(options.get("assume_geometry")),
                                  spacing=options.get("spacing"))
            if index is None and len(listing.series) > 1:
                listed = json.dumps([s.safe_dict() for s in listing.series])
                ctx.records.set_job(job_id, only_if=(JobStatus.RUNNING,),
                                    status=JobStatus.CHOOSING, series=listed)
                changes.announce(ctx, job_id)
                progress(JobStatus.CHOOSING, 0.0)
                return JobStatus.CHOOSING
            if index is not None:
                if not 1 <= int(index) <= len(listing.series):
                    raise _Failed("series_not_found", "the chosen series is not in the upload")
                options["series"] = listing.series[int(index) - 1].uid
        options["workers"] = ctx.settings.threads()  # run_pool shared the cores out
        # the model goes straight into the result (its first part) as it is
        # written, never held whole in memory; then its report, its DICOM
        # instance around it (only a PACS's series: the identifiers the PACS
        # needs to file the model go there and nowhere else, deleted with the
        # result; an Encapsulated STL holds one binary STL, so other formats
        # have none), and the preview (the reduced mesh for the 3D view, made
        # beside the write); a Redis store cut off meanwhile is waited for, a
        # while and never past the upload's deadline (store.REDIS_WAIT_S)
        with ctx.store.writer(Kind.RESULT, job_id, time.time() + ctx.settings.retention_seconds,
                              wait_until=row["deadline"]) as writer:
            writer.open_part(MODEL_PART)
            result = convert(files, ConvertOptions(**options), output=_PartFile(writer),
                             progress=progress, preview=True)
            model_bytes = writer.size
            made = time.time()  # the result is dated when its conversion ended
            writer.redate(made, made + ctx.settings.retention_seconds)
            dicom = (encapsulated.header(model_bytes, encapsulated.source_of(result.stack))
                     if from_pacs and is_binary_stl(result.report.get("file")) else b"")
            for i, part in ((REPORT_PART, json.dumps(result.report).encode()),
                            (DICOM_PART, dicom), (PREVIEW_PART, result.preview)):
                writer.open_part(i)
                writer.write(part)
            writer.commit()
    except ConverterError as exc:
        raise _Failed(exc.code, exc.message) from None
    del files, payload
    # before "done": a done job holds no upload
    delete_stored(ctx, Kind.INPUT, job_id, Reason.CONVERTED)
    if from_pacs and ctx.settings.return_to is not None and dicom:
        model = ctx.store.get_part(Kind.RESULT, job_id, MODEL_PART)
        _return(ctx, job_id, encapsulated.around(model, dicom), progress)
    if not ctx.records.finish_job(job_id, result.report):
        status = (ctx.records.job(job_id) or {}).get("status", JobStatus.DELETED)
        # deleted or expired while converting: the result must not outlive it; but
        # done is another run's (RQ's, of a job whose worker was cut off a while):
        # the result is that same conversion's
        if status != JobStatus.DONE:
            delete_stored(ctx, Kind.RESULT, job_id, Reason.USER_REQUEST)
        return status
    changes.announce(ctx, job_id)
    _count_end(ctx, None, started)
    progress(JobStatus.DONE, 100.0)
    return JobStatus.DONE


class _PartFile:
    """A store writer's open part as the binary file the converter writes to."""

    def __init__(self, writer):
        self.writer = writer

    def write(self, data) -> int:
        self.writer.write(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass


def _input(ctx, job_id):
    """The job's upload: its options (JSON bytes), then its files as the
    converter reads them, their paths in a directory store (read where they
    lie, not copied into memory first), else their bytes; None once gone."""
    meta = ctx.store.meta(Kind.INPUT, job_id)
    if meta is None:
        return None
    count = int(meta["parts"])
    paths = [ctx.store.part_path(Kind.INPUT, job_id, i) for i in range(1, count)]
    if paths and all(p is not None for p in paths):
        options = ctx.store.get_part(Kind.INPUT, job_id, 0)
        return None if options is None else [options, *(str(p) for p in paths)]
    return ctx.store.get(Kind.INPUT, job_id)


def _return(ctx, job_id, instance, progress) -> None:
    """Send the model back (``EPHEMESH_RETURN_TO``), retried; when every try
    fails the job fails and its result goes."""
    progress("returning", 99.0)
    try:
        send_with_retries(instance, ctx.settings.return_to, calling_ae=ctx.settings.scp_ae)
    except ReturnFailed:
        delete_stored(ctx, Kind.RESULT, job_id, Reason.FAILED)
        raise _Failed("return_failed", f"the model was made but could not be sent to "
                      f"{ctx.settings.return_to}") from None


def _split(ctx, batch_id) -> str:
    batch = ctx.records.batch(batch_id)
    if batch is None or batch["status"] != BatchStatus.SPLITTING:
        return batch["status"] if batch else "missing"
    payload = ctx.store.get(Kind.INPUT, batch_id)
    if payload is None:
        raise _Failed("input_missing", "the upload was deleted before it was read")
    options = json.loads(payload[0])
    try:
        listing = list_series(payload[1:], assume_geometry=bool(options.get("assume_geometry")),
                              spacing=options.get("spacing"))
    except ConverterError as exc:
        raise _Failed(exc.code, exc.message) from None
    volumes = [s for s in listing.series if s.slices > 1]
    if not volumes:
        raise _Failed("no_usable_series", "no series of two or more slices in the upload")
    for info in volumes:
        stack = listing.stacks[info.index]
        files, seen = [], set()
        for sl in stack.slices:
            if sl.item.index not in seen:
                seen.add(sl.item.index)
                files.append(sl.item.data)
        submit_job(ctx, files, dict(options, series=info.uid), owner_digest=batch["owner"],
                   created=batch["created"], deadline=batch["deadline"], batch_id=batch_id,
                   job_id=derived_id(batch_id, info.index), seq=info.index,
                   received_sha256=batch["received_sha256"])
    # ready before the upload goes: a crash in between leaves an ended batch's
    # upload, which the sweeper deletes, never a lost batch
    ctx.records.set_batch(batch_id, only_if=(BatchStatus.SPLITTING,), status=BatchStatus.READY)
    return BatchStatus.READY
