"""What the browser and the API share: the service, the presets as the page
shows them, the stage and state vocabulary the job page uses, the time a
job has left, and a job's signed deletion receipts."""

from __future__ import annotations

import calendar
import json
import time

from flask import Response, current_app, request, send_file

from converter import PRESETS
from converter.formats import FORMATS, download
from worker import metrics, receipts
from worker.states import ENDED, WAITING, JobStatus

from .problems import Refused


def service():
    return current_app.extensions["ephemesh.service"]


#: what each stage is called on the job page (``static/job.js`` gets them from the page)
STAGE_LABELS = {"queued": "Waiting in the queue", "running": "Starting",
                "reading": "Reading the scan", "surface": "Extracting the surface",
                "mesh": "Shaping the mesh", "smoothing": "Smoothing the mesh",
                "decimating": "Reducing the triangles", "writing": "Writing the model file",
                "returning": "Sending the model back", "done": "Done"}


#: what ``?format=`` may ask of a job's result: the model file as converted
#: (``model``; ``stl`` is its older name) or its DICOM instance (binary STL only)
RESULT_FORMATS = ("model", "stl", "dicom")


def result_format() -> str:
    """The ``format`` query parameter of a result download (default ``model``)."""
    asked = request.args.get("format", "model")
    if asked not in RESULT_FORMATS:
        raise Refused("invalid_format", "format must be one of " + ", ".join(RESULT_FORMATS))
    return asked


def model_file(view) -> dict:
    """What the job page says of a done job's file: ``name`` (``model.3mf``),
    ``label`` (``3MF``, ``STLs (zip)``) and ``bytes``."""
    entry = (view.get("report") or {}).get("file")
    name, _ = download(entry)
    fmt = (entry or {}).get("format", "stl")
    zipped = bool((entry or {}).get("zip"))
    label = FORMATS[fmt].short + ("s (zip)" if zipped and fmt != "obj" else "")
    return {"name": name, "label": label, "bytes": (entry or {}).get("bytes")}


def send_model(opened):
    """A job's model, from ``Service.open_result``, as a download (never cached),
    named and typed for its format (``model.3mf``, ``model/3mf``, …)."""
    metrics.count(service().ctx, "ephemesh_sent_bytes", opened.size)
    return send_file(opened.file, mimetype=opened.media_type, as_attachment=True,
                     download_name=opened.name, max_age=0, conditional=False, etag=False,
                     last_modified=None)


def send_preview(data: bytes):
    """A job's reduced mesh for the 3D view (``worker.preview``'s format)."""
    return Response(data, mimetype="application/octet-stream",
                    headers={"Content-Disposition": "inline; filename=preview.bin"})


def signed_receipts(job_id, owner) -> dict:
    """``{"job", "receipts"}``: the job's deletion receipts (its upload's and
    its result's, those deleted so far), each signed with the server's key;
    409 ``not_ready`` while nothing of it has been deleted."""
    key = current_app.extensions["ephemesh.receipt_key"]
    made = [receipts.sign(body, key) for body in service().receipts(job_id, owner=owner)]
    if not made:
        raise Refused("not_ready", "Nothing of this job has been deleted yet; its receipt comes "
                      "once its upload is deleted.", 409)
    return {"job": job_id, "receipts": made}


def receipt_download(job_id, owner):
    """The receipts as a JSON attachment (``receipt-<job>.json``), each one's
    fields in the order ``worker.receipts.FIELDS`` gives them."""
    resp = Response(json.dumps(signed_receipts(job_id, owner), indent=1) + "\n",
                    mimetype="application/json")
    resp.headers["Content-Disposition"] = f"attachment; filename=receipt-{job_id}.json"
    return resp


def stage_label(stage) -> str:
    return STAGE_LABELS.get(stage or "", str(stage or "").capitalize())


def presets() -> list[tuple[str, str]]:
    return [(name, preset.label) for name, preset in PRESETS.items()]


def job_page_vocabulary() -> dict:
    """What the job page needs from the server: the states in which the
    progress moves (its script polls), the stages' names, and the states in
    which the upload is gone (the page links the deletion receipt)."""
    return {"waiting": sorted(WAITING), "stages": STAGE_LABELS, "ended": sorted(ENDED)}


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
