"""The RQ jobs.  Arguments are opaque ids only.

``convert(job_id)``: the payload (options and files) comes from the store,
the STL and report go back to the store, and the input is deleted in a
``finally`` whatever happens (unless the job stops to let its owner choose a
series: then its conversion has not ended, and the deadline still holds).

``split_batch(batch_id)``: one upload holding many series becomes one
conversion job per series, each with the batch's deadline.

Errors are stored as stable codes with the converter's safe messages, or a
fixed message for anything unexpected — never exception text, which could
hold DICOM values.  A job found already finished, failed or deleted (a
duplicate run after a kill, or one the sweeper expired) does nothing.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time

from rq.timeouts import JobTimeoutException

from converter import silence_pydicom_for_good as quiet_pydicom
from converter.errors import is_out_of_memory

from .context import Context

log = logging.getLogger("ephemesh.worker")
INTERNAL_ERROR = ("internal_error", "conversion failed unexpectedly")
OUT_OF_MEMORY = ("out_of_memory", "the series needs more memory than a conversion may take "
                 "on this server")
LIVE = ("queued", "running")


class JobFailed(RuntimeError):
    """Raised to RQ when the records themselves cannot be written; the text
    is a fixed code, so RQ stores nothing sensitive in ``exc_info``."""


class _Progress:
    """Writes {stage, percent} into ``job.meta`` at each new stage and at most
    every half second within one."""

    def __init__(self, job):
        self.job = job
        self.last = 0.0
        self.stage = None

    def __call__(self, stage, percent):
        if self.job is None:
            return
        now = time.monotonic()
        if stage == self.stage and now - self.last < 0.5 and percent < 100:
            return
        self.last, self.stage = now, stage
        self.job.meta["progress"] = {"stage": stage, "percent": float(percent)}
        self.job.save_meta()
        delay = float(os.environ.get("EPHEMESH_TEST_STAGE_DELAY", "0") or 0)  # tests only
        if delay:
            time.sleep(delay)


class _Failed(Exception):  # noqa: N818 - a way out of _convert, not an error
    """The conversion ends failed with ``code`` and ``message`` (safe texts)."""

    def __init__(self, code, message):
        super().__init__(code)
        self.code, self.message = code, message


def convert(job_id: str) -> str:
    """Convert the stored upload ``job_id``; return the job's status."""
    from rq import get_current_job  # noqa: PLC0415

    quiet_pydicom()
    ctx = Context()
    status, failure = "failed", None
    try:
        row = ctx.records.job(job_id)
        if row is None or row["status"] not in LIVE:
            status = row["status"] if row else "missing"
            return status
        ctx.records.set_job(job_id, only_if=LIVE, status="running")
        status = _convert(ctx, job_id, row, get_current_job())
        return status
    except _Failed as exc:
        failure = (exc.code, exc.message)
        return status
    except JobTimeoutException:
        failure = ("timeout", f"the conversion took longer than {ctx.settings.job_timeout} s "
                              "and was stopped")
        return status
    except Exception as exc:  # noqa: BLE001 - the text could hold DICOM values or paths
        if is_out_of_memory(exc):
            failure = OUT_OF_MEMORY
        else:
            log.error("job %s: failed unexpectedly", job_id)
            failure = INTERNAL_ERROR
        return status
    finally:
        _end(ctx, failure,
             lambda: status != "choosing" and _delete_input(
                 ctx, job_id, "converted" if status == "done" else "failed"),
             lambda: ctx.records.fail_job(job_id, *failure))


def _end(ctx, failure, delete_input, record_failure):
    """The upload goes first, then the failure is recorded: a job that says it
    has ended holds no upload (and its ledger row is there)."""
    try:
        if failure == OUT_OF_MEMORY:
            gc.collect()  # a thread's exception can keep the failed frames in a cycle
        delete_input()
        if failure:
            record_failure()
    except Exception:  # noqa: BLE001 - the records are unreachable: tell RQ, with no text
        raise JobFailed("internal_error") from None
    finally:
        ctx.close()


def _convert(ctx, job_id, row, job) -> str:
    from converter import ConverterError, ConvertOptions, list_series  # noqa: PLC0415
    from converter import convert as run_conversion  # noqa: PLC0415

    payload = ctx.store.get("input", job_id)
    if payload is None:
        stored = ctx.store.get("result", job_id)
        if stored is not None and ctx.records.finish_job(job_id, json.loads(stored[1])):
            return "done"  # an earlier run was killed after storing its result
        raise _Failed("input_missing", "the upload was deleted before it could be converted")
    options = json.loads(payload[0])
    files = payload[1:]
    progress = _Progress(job)
    try:
        index = options.pop("series_index", None)
        if index is not None or (row["pick"] and options.get("series") is None):
            listing = list_series(files)
            if index is None and len(listing.series) > 1:
                listed = json.dumps([s.safe_dict() for s in listing.series])
                ctx.records.set_job(job_id, only_if=("running",), status="choosing",
                                    series=listed)
                progress("choosing", 0.0)
                return "choosing"
            if index is not None:
                if not 1 <= int(index) <= len(listing.series):
                    raise _Failed("series_not_found", "the chosen series is not in the upload")
                options["series"] = listing.series[int(index) - 1].uid
        options["workers"] = ctx.settings.threads()  # run_pool shared the cores out
        result = run_conversion(files, ConvertOptions(**options), progress=progress)
    except ConverterError as exc:
        raise _Failed(exc.code, exc.message) from None
    del files, payload
    deadline = time.time() + ctx.settings.retention_seconds
    ctx.store.put("result", job_id, [result.stl, json.dumps(result.report).encode()], deadline)
    _delete_input(ctx, job_id, "converted")  # before "done": a done job holds no upload
    if not ctx.records.finish_job(job_id, result.report):
        # deleted or expired while converting: the result must not outlive it
        delete_recorded(ctx, "result", job_id, "user-request")
        return (ctx.records.job(job_id) or {}).get("status", "deleted")
    progress("done", 100.0)
    return "done"


def _delete_input(ctx, job_id, reason):
    delete_recorded(ctx, "input", job_id, reason)


def delete_recorded(ctx, kind, object_id, reason):
    """Delete one stored object and write its ledger row (if it was there)."""
    entry = ctx.store.meta(kind, object_id)
    size = ctx.store.delete(kind, object_id)
    if size is not None:
        ctx.records.record_deletion(kind, object_id, size, entry and entry["created"],
                                    entry and entry["deadline"], reason)


def split_batch(batch_id: str) -> str:
    """Split the stored batch upload into one conversion job per series."""
    quiet_pydicom()
    ctx = Context()
    status, failure = "failed", None
    try:
        batch = ctx.records.batch(batch_id)
        if batch is None or batch["status"] != "splitting":
            status = batch["status"] if batch else "missing"
            return status
        _split(ctx, batch_id, batch)
        # ready before the upload goes: a crash in between leaves an ended batch's
        # upload, which the sweeper deletes, never a lost batch
        ctx.records.set_batch(batch_id, only_if=("splitting",), status="ready")
        status = "ready"
        return status
    except _Failed as exc:
        failure = (exc.code, exc.message)
        return status
    except Exception as exc:  # noqa: BLE001 - see convert()
        if is_out_of_memory(exc):
            failure = OUT_OF_MEMORY
        else:
            log.error("batch %s: failed unexpectedly", batch_id)
            failure = INTERNAL_ERROR
        return status
    finally:
        _end(ctx, failure,
             lambda: _delete_input(ctx, batch_id, "converted" if status == "ready" else "failed"),
             lambda: ctx.records.set_batch(batch_id, only_if=("splitting",), status="failed",
                                           error_code=failure[0], error_message=failure[1]))


def _split(ctx, batch_id, batch):
    from converter import ConverterError, list_series  # noqa: PLC0415

    from .submit import derived_id, submit_job  # noqa: PLC0415

    payload = ctx.store.get("input", batch_id)
    if payload is None:
        raise _Failed("input_missing", "the upload was deleted before it was read")
    options = json.loads(payload[0])
    try:
        listing = list_series(payload[1:])
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
                   job_id=derived_id(batch_id, info.index), seq=info.index)
