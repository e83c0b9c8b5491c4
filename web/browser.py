"""The browser blueprint: upload, job page, result, delete now, privacy.

A job belongs to the browser session that uploaded it (an opaque random id
in the signed session cookie, the only cookie set).  Anyone else gets 404.
"""

from __future__ import annotations

import secrets

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from converter.deidentify import PROFILE_PATH
from converter.options import OPTIONS, WEB_OPTIONS
from worker import receipts
from worker.receipts import UploadDigest, new_salt
from worker.states import LIVE, JobStatus

from . import intake, options, vendor
from .jobs import (
    job_page_vocabulary,
    model_file,
    presets,
    receipt_download,
    send_model,
    send_preview,
    service,
    time_left,
)
from .privacy import facts as privacy_facts
from .problems import Refused, wants_problem_json

bp = Blueprint("browser", __name__)


def session_owner(create: bool = False) -> str | None:
    sid = session.get("sid")
    if sid is None and create:
        sid = secrets.token_urlsafe(18)
        session["sid"] = sid
    return f"session:{sid}" if sid else None


def _own_job(job_id: str) -> dict:
    owner = session_owner()
    view = service().get_job(job_id, owner=owner) if owner else None
    if view is None:
        raise Refused("not_found", "There is no such job in this browser session "
                      "(it may have been deleted, or made in another browser).", 404)
    return view


def _this_session() -> dict:
    """This browser session's scans and jobs still here (so a closed tab can
    get back to them): ``{"scans", "jobs"}``, newest first."""
    owner = session_owner()
    if owner is None:
        return {"scans": [], "jobs": []}
    jobs = service().list_jobs(owner=owner, status=LIVE | {JobStatus.DONE}, limit=20)
    return {"scans": service().scans.owned(owner)[:20],
            "jobs": [j for j in jobs if j["status"] != JobStatus.DELETED]}


@bp.get("/")
def index():
    settings = current_app.extensions["ephemesh.settings"]
    return render_template("upload.html", presets=presets(), smooth=options.bounds("smooth"),
                           hollow=options.bounds("hollow"),
                           formats=options.choices("format"), frames=options.choices("frame"),
                           mine=_this_session(), limits=intake.limits(),
                           max_mb=current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
                           retention_minutes=settings.retention_seconds / 60)


@bp.post("/jobs", endpoint="create_job")
def create_job_view():
    salt = new_salt()
    digest = UploadDigest(salt)
    with intake.receive(digest, csrf=True, strict=False) as received:
        opts = options.from_form(received.form, browser=True, allowed=options.WITHOUT_SERIES)
        view = service().create_job(received.intake, opts, owner=session_owner(create=True),
                                    pick_series=True, received_sha256=digest.hexdigest())
    url = url_for(".job", job_id=view["id"])
    if wants_problem_json():
        return jsonify({"id": view["id"], "url": url, "receipt_salt": salt}), 201
    return redirect(url, 303)


@bp.get("/jobs/<job_id>")
def job(job_id):
    view = _own_job(job_id)
    return render_template("job.html", job=view, left=time_left(view),
                           preview=vendor.installed("three"), vocabulary=job_page_vocabulary(),
                           model=model_file(view))


@bp.get("/jobs/<job_id>/status")
def job_status(job_id):
    view = _own_job(job_id)
    return jsonify({k: view.get(k) for k in ("id", "status", "progress", "error", "expires_at")})


@bp.post("/jobs/<job_id>/series")
def choose_series(job_id):
    _own_job(job_id)
    service().choose_series(job_id, request.form.get("series", ""), owner=session_owner())
    return redirect(url_for(".job", job_id=job_id), 303)


@bp.get("/jobs/<job_id>/model.stl")
def result(job_id):
    _own_job(job_id)
    return send_model(service().open_result(job_id, owner=session_owner()))


@bp.get("/jobs/<job_id>/preview")
def preview(job_id):
    """The reduced mesh the job made for the 3D view (the download is the full model)."""
    _own_job(job_id)
    return send_preview(service().open_preview(job_id, owner=session_owner()))


@bp.get("/scans/<scan_id>")
def scan(scan_id):
    """The scan workspace of this browser session's scan: its series, slices
    and histogram, the region, the estimate, the models made from it."""
    owner = session_owner()
    view = service().scans.get(scan_id, owner=owner) if owner else None
    if view is None:
        raise Refused("not_found", "There is no such scan in this browser session "
                      "(it may have been deleted, or made in another browser).", 404)
    settings = current_app.extensions["ephemesh.settings"]
    parts = options.bounds("keep_parts") if "keep_parts" in OPTIONS else {}
    return render_template("scan.html", scan=view, offered=list(WEB_OPTIONS),
                           smooth=options.bounds("smooth"), parts=parts,
                           vocabulary=dict(job_page_vocabulary(), live=sorted(LIVE)),
                           retention_minutes=settings.retention_seconds / 60)


@bp.get("/jobs/<job_id>/receipt")
def receipt(job_id):
    _own_job(job_id)
    return receipt_download(job_id, session_owner())


@bp.post("/jobs/<job_id>/delete")
def delete(job_id):
    _own_job(job_id)
    service().delete_job(job_id, owner=session_owner())
    return redirect(url_for(".job", job_id=job_id), 303)


@bp.get("/privacy")
def privacy():
    return render_template("privacy.html", facts=privacy_facts(current_app))


def _cached(resp):
    resp.cache_control.public = True
    resp.cache_control.max_age = 86400
    return resp


@bp.get("/.well-known/ephemesh-receipt-key", endpoint="receipt_key")
def receipt_key():
    """The public half of the key that signs deletion receipts (PEM), and its
    fingerprint (what ``ephemesh receipt verify`` prints) in a header."""
    key = current_app.extensions["ephemesh.receipt_key"]
    resp = Response(receipts.public_pem(key), mimetype="application/x-pem-file")
    resp.headers["X-Ephemesh-Key-Fingerprint"] = receipts.fingerprint(receipts.public_raw(key))
    return resp


@bp.get("/vendor/<package>/<name>", endpoint="vendor")
def vendor_file(package, name):
    data = vendor.read(package, name)
    if data is None:
        raise Refused("not_found", "No such file.", 404)
    return _cached(Response(data, mimetype="text/javascript"))


@bp.get("/deidentify-profile.json", endpoint="deidentify_profile")
def deidentify_profile():
    """The de-identification profile the upload page applies before sending
    (the one ``ephemesh deidentify`` applies: ``converter/deidentify_profile.json``)."""
    return _cached(Response(PROFILE_PATH.read_bytes(), mimetype="application/json"))

