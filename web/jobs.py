"""What the browser and the API share: the service, creating a job, opening
its result, and the worker's exceptions turned into refusals."""

from __future__ import annotations

import calendar
import time

from flask import current_app

from .problems import Refused

JOB_FINAL = ("done", "failed", "deleted")

PRESET_LABELS = {
    "bone": "Bone (300 HU)",
    "skin": "Skin (−400 HU)",
    "soft-tissue": "Soft tissue (20 HU)",
    "teeth": "Teeth (1200 HU)",
    "airway": "Airway (air inside the body)",
    "auto": "Automatic (Otsu; the default for MR)",
}


def service():
    return current_app.extensions["ephemesh.service"]


#: what each stage is called on the job page (static/job.js has the same words)
STAGE_LABELS = {"queued": "Waiting in the queue", "running": "Starting",
                "reading": "Reading the scan", "surface": "Extracting the surface",
                "mesh": "Shaping the mesh", "writing": "Writing the STL", "done": "Done"}


def stage_label(stage) -> str:
    return STAGE_LABELS.get(stage or "", str(stage or "").capitalize())


def presets() -> list[tuple[str, str]]:
    from converter import PRESETS  # noqa: PLC0415

    return [(name, PRESET_LABELS.get(name, name)) for name in PRESETS]


def create_job(files, options, *, owner, pick_series=False) -> dict:
    from worker.service import Invalid  # noqa: PLC0415

    try:
        return service().create_job(files, options, owner=owner, pick_series=pick_series)
    except Invalid as exc:
        raise Refused(exc.code, exc.message) from None


def create_batch(files, options, *, owner) -> dict:
    from worker.service import Invalid  # noqa: PLC0415

    try:
        return service().create_batch(files, options, owner=owner)
    except Invalid as exc:
        raise Refused(exc.code, exc.message) from None


def open_result(job_id, *, owner):
    """``(file, size)`` of a finished job's STL, or a refusal: 404, 409 or 410."""
    from worker.service import Gone, NotFound, NotReady  # noqa: PLC0415

    try:
        return service().open_result(job_id, owner=owner)
    except NotFound:
        raise Refused("not_found", "There is no such job.", 404) from None
    except NotReady:
        raise Refused("not_ready", "The job has no result (not finished yet, or failed).",
                      409) from None
    except Gone:
        raise Refused("gone", "The result has been deleted.", 410) from None


def seconds_until(iso: str | None) -> float | None:
    if not iso:
        return None
    at = calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    return max(0.0, at - time.time())


def time_left(view) -> dict | None:
    """``{"seconds", "minutes", "at"}`` before automatic deletion, or None."""
    if view["status"] == "deleted":
        return None
    seconds = seconds_until(view.get("expires_at"))
    if seconds is None:
        return None
    return {"seconds": int(seconds), "minutes": int(seconds // 60 + (seconds % 60 > 0)),
            "at": view["expires_at"]}
