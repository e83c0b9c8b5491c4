"""The RQ job: ``convert(job_id)``.  Arguments are opaque ids only.

The payload (files and options) comes from the store, the STL and report go
back to the store, and the input is deleted in a ``finally`` whatever
happens.  Errors are stored as stable codes with the converter's safe
messages, or a fixed message for anything unexpected — never exception text,
which could hold DICOM values.
"""

from __future__ import annotations

import json
import logging
import os
import time

from .context import Context

log = logging.getLogger("ephemesh.worker")
INTERNAL_ERROR = ("internal_error", "conversion failed unexpectedly")


def _silence_pydicom():
    logging.getLogger("pydicom").disabled = True
    import warnings  # noqa: PLC0415

    warnings.filterwarnings("ignore", module="pydicom")


class _Progress:
    """Writes {stage, percent} into job.meta at most every half second."""

    def __init__(self, job):
        self.job = job
        self.last = 0.0

    def __call__(self, stage, percent):
        if self.job is None:
            return
        now = time.monotonic()
        if now - self.last < 0.5 and percent < 100:
            return
        self.last = now
        self.job.meta["progress"] = {"stage": stage, "percent": float(percent)}
        self.job.save_meta()
        delay = float(os.environ.get("EPHEMESH_TEST_STAGE_DELAY", "0") or 0)  # tests only
        if delay:
            time.sleep(delay)


def convert(job_id: str) -> str:
    """Convert the stored upload ``job_id``; return the final status."""
    from rq import get_current_job  # noqa: PLC0415

    from converter import ConverterError, ConvertOptions  # noqa: PLC0415
    from converter import convert as run_conversion  # noqa: PLC0415

    _silence_pydicom()
    ctx = Context()
    job = get_current_job()
    status = "failed"
    try:
        ctx.records.set_job(job_id, status="running")
        payload = ctx.store.get("input", job_id)
        if payload is None:
            ctx.records.fail_job(job_id, "input_missing",
                                 "the upload was deleted before it could be converted")
            return status
        options = json.loads(payload[0])
        files = payload[1:]
        try:
            result = run_conversion(files, ConvertOptions(**options), progress=_Progress(job))
        except ConverterError as exc:
            ctx.records.fail_job(job_id, exc.code, exc.message)
            return status
        except Exception:  # noqa: BLE001 - the text could hold DICOM values
            log.error("job %s: conversion failed unexpectedly", job_id)
            ctx.records.fail_job(job_id, *INTERNAL_ERROR)
            return status
        deadline = time.time() + ctx.settings.retention_seconds
        ctx.store.put("result", job_id, [result.stl, json.dumps(result.report).encode()], deadline)
        ctx.records.finish_job(job_id, result.report)
        status = "done"
        if job is not None:
            job.meta["progress"] = {"stage": "done", "percent": 100.0}
            job.save_meta()
        return status
    finally:
        entry = ctx.store.meta("input", job_id)
        size = ctx.store.delete("input", job_id)
        if size is not None:
            ctx.records.record_deletion(
                "input", job_id, size, entry and entry["created"], entry and entry["deadline"],
                "converted" if status == "done" else "failed")
        ctx.close()
