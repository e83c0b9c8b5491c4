"""What the browser and the API share: the service, the presets as the page
shows them, the stage and state vocabulary the job page uses, and the time a
job has left."""

from __future__ import annotations

import calendar
import time

from flask import current_app, send_file

from converter import PRESETS
from worker.states import WAITING, JobStatus


def service():
    return current_app.extensions["ephemesh.service"]


#: what each stage is called on the job page (``static/job.js`` gets them from the page)
STAGE_LABELS = {"queued": "Waiting in the queue", "running": "Starting",
                "reading": "Reading the scan", "surface": "Extracting the surface",
                "mesh": "Shaping the mesh", "writing": "Writing the STL", "done": "Done"}


def send_model(opened):
    """A job's STL, from ``Service.open_result``, as a download (never cached)."""
    fh, _size = opened
    return send_file(fh, mimetype="model/stl", as_attachment=True, download_name="model.stl",
                     max_age=0, conditional=False, etag=False, last_modified=None)


def stage_label(stage) -> str:
    return STAGE_LABELS.get(stage or "", str(stage or "").capitalize())


def presets() -> list[tuple[str, str]]:
    return [(name, preset.label) for name, preset in PRESETS.items()]


def job_page_vocabulary() -> dict:
    """What the job page's script needs from the server: the states in which
    the progress moves (it polls), and the stages' names."""
    return {"waiting": sorted(WAITING), "stages": STAGE_LABELS}


def seconds_until(iso: str | None) -> float | None:
    if not iso:
        return None
    at = calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    return max(0.0, at - time.time())


def time_left(view) -> dict | None:
    """``{"seconds", "minutes", "at"}`` before automatic deletion, or None."""
    if view["status"] == JobStatus.DELETED:
        return None
    seconds = seconds_until(view.get("expires_at"))
    if seconds is None:
        return None
    return {"seconds": int(seconds), "minutes": int(seconds // 60 + (seconds % 60 > 0)),
            "at": view["expires_at"]}
