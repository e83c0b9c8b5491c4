"""API v1: JSON for programs, keyed by ``Authorization: Bearer KEY``.

Errors are ``application/problem+json`` with a stable ``code``.  A job or a
batch is visible only to the key that made it (anyone else: 404).  Keys
come from ``ephemesh keys create`` or the admin pages and are stored as
hashes; failed keys are counted per address, and past a limit that address's
bad keys are refused for a while (429; a valid key still works there).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for

from worker import changes
from worker.receipts import UploadDigest, new_salt
from worker.states import BatchStatus, JobStatus

from . import intake, options, waiting
from .batchzip import stream_zip
from .jobs import receipt_download, result_format, send_model, send_preview, service
from .limits import FailureLock
from .openapi import document
from .problems import Refused
from .security import address_pseudonym, client_address

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC = ("api.openapi",)
JOB_FIELDS = ("id", "status", "progress", "report", "error", "created_at", "expires_at",
              "batch_id", "scan_id")


def _auth_lock() -> FailureLock:
    cfg = current_app.config
    return FailureLock(service().redis, "api-auth", cfg["EPHEMESH_API_MAX_AUTH_FAILURES"],
                       cfg["EPHEMESH_LOCKOUT_SECONDS"], fail_open=True)


@bp.before_request
def authenticate():
    if request.endpoint in PUBLIC:
        return None
    challenge = {"WWW-Authenticate": 'Bearer realm="ephemesh"'}
    header = request.headers.get("Authorization", "")
    if not header:
        raise Refused("missing_key", "Send an API key: Authorization: Bearer KEY.", 401, challenge)
    token = _key_in(header)
    key = service().records.verify_key(token) if token else None
    if key is None:
        # the block is consulted only for keys that do not verify: bad keys
        # sent from an address never block the valid keys used there
        lock, address = _auth_lock(), client_address()
        if lock.locked(address):
            raise Refused("too_many_failures", "Too many requests with a bad API key from this "
                          "address; bad keys from it are refused for a while.", 429,
                          {"Retry-After": str(lock.retry_after(address))})
        lock.fail(address)
        service().records.audit("api-key-refused", "unknown", {"address": address_pseudonym()})
        raise Refused("invalid_key", "The API key is not valid, or it was revoked.", 401,
                      challenge)
    g.api_key = key
    g.owner = f"key:{key['id']}"
    return None


def _key_in(header: str) -> str | None:
    """The key of ``Bearer KEY``, or of ``Basic`` with the key as the password
    (what PACS DICOMweb clients can send); None for anything else."""
    scheme, _, token = header.partition(" ")
    scheme, token = scheme.lower(), token.strip()
    if scheme == "bearer":
        return token
    if scheme == "basic":
        import base64
        import binascii

        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def _links_job(job_id) -> dict:
    return {"self": url_for("api.get_job", job_id=job_id),
            "result": url_for("api.job_result", job_id=job_id),
            "preview": url_for("api.job_preview", job_id=job_id),
            "receipt": url_for("api.job_receipt", job_id=job_id)}


def _job_json(view) -> dict:
    out = {k: view.get(k) for k in JOB_FIELDS}
    out["links"] = _links_job(view["id"])
    return out


def _own_job(job_id) -> dict:
    view = service().get_job(job_id, owner=g.owner)
    if view is None:
        raise Refused("not_found", "There is no such job for this key.", 404)
    return view


def _batch_json(view) -> dict:
    bid = view["id"]
    return {"id": bid, "status": view["status"], "error": view.get("error"),
            "created_at": view.get("created_at"), "expires_at": view.get("expires_at"),
            "jobs": [_job_json(j) for j in view.get("jobs") or []],
            "links": {"self": url_for(".get_batch", batch_id=bid),
                      "result": url_for(".batch_result", batch_id=bid)}}


def _batch_series(series, seq):
    chosen = (series or {}).get("chosen")
    return dict(chosen, index=seq) if chosen else None


def _own_batch(batch_id) -> dict:
    view = service().get_batch(batch_id, owner=g.owner)
    if view is None:
        raise Refused("not_found", "There is no such batch for this key.", 404)
    return view


def _accepted(body, salt):
    """202 with the salt of the upload's receipts (``worker.receipts``), given only here."""
    return jsonify(dict(body, receipt_salt=salt)), 202, {"Location": body["links"]["self"]}


def _deleted(done: bool, what: str):
    if not done:
        raise Refused("not_found", f"There is no such {what} for this key.", 404)
    return Response(status=204)


@bp.post("/jobs", endpoint="create_job")
def create_job_view():
    salt = new_salt()
    digest = UploadDigest(salt)
    with intake.receive(digest) as received:
        view = service().create_job(received.intake, options.from_form(received.form),
                                    owner=g.owner, received_sha256=digest.hexdigest())
    return _accepted(_job_json(view), salt)


@bp.get("/jobs", endpoint="list_jobs")
def list_jobs():
    """The caller's jobs, newest first: ``?status=a,b&scan=ID&batch=ID&limit=N&cursor=C``."""
    return jsonify(waiting.job_list(request.args, g.owner, _job_json))


@bp.get("/jobs/<job_id>")
def get_job(job_id):
    view = _own_job(job_id)
    seconds = waiting.wait_seconds(request.args)
    if seconds:
        view = waiting.until_changed(view, seconds, lambda: _own_job(job_id),
                                     changes.Listener(service().ctx.redis, job_id))
    resp = jsonify(_job_json(view))
    if g.get("wait_busy"):
        resp.headers["X-Wait"] = "busy"  # too many waiting: answered at once
    return resp


@bp.get("/jobs/<job_id>/preview")
def job_preview(job_id):
    _own_job(job_id)
    return send_preview(service().open_preview(job_id, owner=g.owner))


@bp.get("/jobs/<job_id>/result")
def job_result(job_id):
    _own_job(job_id)
    fmt = result_format()
    return send_model(service().open_result(job_id, owner=g.owner, dicom=fmt == "dicom"))


@bp.get("/jobs/<job_id>/receipt")
def job_receipt(job_id):
    _own_job(job_id)
    return receipt_download(job_id, g.owner)


@bp.delete("/jobs/<job_id>")
def delete_job(job_id):
    return _deleted(service().delete_job(job_id, owner=g.owner), "job")


@bp.post("/batches", endpoint="create_batch")
def create_batch_view():
    salt = new_salt()
    digest = UploadDigest(salt)
    with intake.receive(digest) as received:
        opts = options.from_form(received.form, allowed=options.WITHOUT_SERIES)
        view = service().create_batch(received.intake, opts, owner=g.owner,
                                      received_sha256=digest.hexdigest())
    return _accepted(_batch_json(view), salt)


@bp.get("/batches/<batch_id>")
def get_batch(batch_id):
    return jsonify(_batch_json(_own_batch(batch_id)))


@bp.delete("/batches/<batch_id>")
def delete_batch(batch_id):
    return _deleted(service().delete_batch(batch_id, owner=g.owner), "batch")


@bp.get("/batches/<batch_id>/result")
def batch_result(batch_id):
    view = _own_batch(batch_id)
    if view["status"] == BatchStatus.SPLITTING:
        raise Refused("not_ready", "The batch is still being split into series.", 409)
    if view["status"] == BatchStatus.CONVERTING:
        raise Refused("not_ready", "The batch's jobs are still converting; its status "
                      "says ready once every one has ended.", 409)
    if view["status"] == BatchStatus.FAILED:
        raise Refused("not_ready", "The batch failed; it has no results.", 409)
    if view["status"] == BatchStatus.DELETED:
        raise Refused("gone", "The batch has been deleted.", 410)
    owner = g.owner
    svc = service()
    jobs = list(view.get("jobs") or [])
    # written at the end of the zip, after the models: it names only what is in it
    manifest = {"batch": batch_id, "jobs": [
        {"n": j["seq"], "id": j["id"], "status": j["status"], "file": None,
         # which series it is: the safe description (no UID, no text from the files),
         # numbered as in the batch upload (each job's own upload holds that one series)
         "series": _batch_series((j.get("report") or {}).get("series"), j["seq"]),
         "error": j.get("error")}
        for j in jobs]}

    def results():
        for entry, job in zip(manifest["jobs"], jobs, strict=True):
            if job["status"] != JobStatus.DONE:
                continue
            try:
                opened = svc.open_result(job["id"], owner=owner)
            except LookupError:  # deleted or expired since the listing
                entry["status"] = JobStatus.DELETED
                continue
            extension = opened.name.rpartition(".")[2]
            entry["file"] = f"series-{entry['n']:03d}-{job['id']}.{extension}"
            yield entry["file"], opened.file

    resp = Response(stream_zip(results(), manifest), mimetype="application/zip")
    resp.headers["Content-Disposition"] = "attachment; filename=batch.zip"
    return resp


@bp.get("/openapi.json", endpoint="openapi")
def openapi():
    return jsonify(document())
