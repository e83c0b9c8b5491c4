"""The scan workspace's endpoints, ``/api/v1/scans…``: one upload, looked at
(histogram, slice views, estimates) and converted as often as its owner
likes, then gone ("Done", or its deadline).

A scan belongs to an API key (``Authorization: Bearer``, as the rest of
``/api/v1``) or to the browser session that made it (the workspace page
calls the same endpoints with its session cookie; its POST and DELETE carry
the page's CSRF token in ``X-CSRFToken``).  Anyone else gets 404.

Slices are served from the decoded volume in the store (mapped into this
process, ``worker.scans``); nothing of a view — values, histogram, series
descriptions — is logged or recorded (the access log has the route's rule,
never the path or the query).
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for

from converter import ConverterError, ConvertOptions
from converter import views as V
from worker.receipts import UploadDigest, new_salt
from worker.states import Kind

from . import intake, options, slices
from .jobs import service
from .problems import Refused, workspace

bp = Blueprint("scans", __name__, url_prefix="/api/v1")

#: the endpoints that show a scan (many requests while a person scrolls):
#: counted by the per-address limit only, not the per-key one
VIEW_ENDPOINTS = frozenset({"scans.slice_view", "scans.thumbnail", "scans.series_geometry",
                            "scans.histogram"})
FORMATS = ("png", "values")


@bp.before_request
def authenticate():
    """A key's request as the rest of the API; else the browser session's."""
    from .api import authenticate as by_key
    from .browser import session_owner

    browser = not request.headers.get("Authorization") and (
        session_owner() is not None or "X-CSRFToken" in request.headers)
    if not browser:
        return by_key()
    g.browser = True
    # an upload's token is checked by web/intake.py, before its body is read
    # (protect() would parse the whole form first)
    if request.method not in ("GET", "HEAD", "OPTIONS") and request.endpoint != "scans.create_scan":
        current_app.extensions["csrf"].protect()
    g.owner = session_owner(create=request.endpoint == "scans.create_scan")
    return None


def _links(scan_id) -> dict:
    return {"self": url_for(".get_scan", scan_id=scan_id),
            "jobs": url_for(".scan_jobs", scan_id=scan_id)}


def _series_links(scan_id, n) -> dict:
    return {"thumbnail": url_for(".thumbnail", scan_id=scan_id, n=n),
            "histogram": url_for(".histogram", scan_id=scan_id, n=n),
            "volume": url_for(".series_geometry", scan_id=scan_id, n=n),
            "slice": url_for(".slice_view", scan_id=scan_id, n=n),
            "estimate": url_for(".estimate", scan_id=scan_id, n=n)}


def _scan_json(view) -> dict:
    out = dict(view)
    out["series"] = [dict(s, links=_series_links(view["id"], s["n"])) for s in view["series"]]
    out["links"] = _links(view["id"])
    return out


def _own_scan(scan_id) -> dict:
    view = service().scans.get(scan_id, owner=g.owner) if g.owner else None
    if view is None:
        raise Refused("not_found", "There is no such scan for this key or browser session.", 404)
    return view


def _series(scan_id, n):
    _own_scan(scan_id)
    return service().scans.series(scan_id, n, owner=g.owner)


@bp.post("/scans", endpoint="create_scan")
def create_scan():
    salt = new_salt()
    digest = UploadDigest(salt)
    # a browser's token is checked by the intake, before the body is read
    with intake.receive(digest, kind=Kind.SCAN, csrf=g.get("browser", False)) as received:
        if [name for name in received.form if name != intake.CSRF_FIELD]:
            raise Refused("unknown_field", "A scan takes only 'files'; choose the options when "
                          "you convert it (POST /api/v1/scans/{id}/jobs).")
        view = service().scans.create(received.intake, owner=g.owner,
                                      received_sha256=digest.hexdigest())
    body = dict(_scan_json(view), receipt_salt=salt)
    return jsonify(body), 201, {"Location": body["links"]["self"]}


@bp.get("/scans/<scan_id>")
def get_scan(scan_id):
    return jsonify(_scan_json(_own_scan(scan_id)))


@bp.delete("/scans/<scan_id>")
def delete_scan(scan_id):
    if not service().scans.delete(scan_id, owner=g.owner):
        raise Refused("not_found", "There is no such scan for this key or browser session.", 404)
    return Response(status=204)


@bp.get("/scans/<scan_id>/series/<int:n>", endpoint="series_geometry")
def series_geometry(scan_id, n):
    decoded = _series(scan_id, n)
    vol = decoded.volume
    entry = decoded.entry
    planes = {}
    for plane in V.PLANES:
        facts = V.geometry(vol, V.view(vol, plane))
        planes[plane] = {k: facts[k] for k in ("count", "width", "height", "pixel_mm", "edges")}
    return jsonify({
        "n": n, "unit": V.unit(vol.modality), "range": entry["range"],
        "modality": entry["modality"], "shape": list(vol.data.shape),
        "planes": planes, "bounds_mm": V.bounds(vol),
        "to_patient": {plane: V.geometry(vol, V.view(vol, plane))["to_patient"]
                       for plane in V.PLANES},
        "links": _series_links(scan_id, n)})


@bp.get("/scans/<scan_id>/series/<int:n>/histogram")
def histogram(scan_id, n):
    return jsonify(dict(_series(scan_id, n).histogram, n=n))


def _number(name, code, *, positive=False):
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise workspace(code) from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise workspace(code)
    return value


def _view_args(vol):
    plane = request.args.get("plane", "axial")
    if plane not in V.PLANES:
        raise workspace("invalid_plane")
    v = V.view(vol, plane)
    raw = request.args.get("index")
    try:
        index = v.count // 2 if raw is None else int(raw)
    except ValueError:
        raise workspace("invalid_index", last=v.count - 1) from None
    if not 0 <= index < v.count:
        raise workspace("invalid_index", last=v.count - 1)
    return v, index


@bp.get("/scans/<scan_id>/series/<int:n>/slice", endpoint="slice_view")
def slice_view(scan_id, n):
    decoded = _series(scan_id, n)
    vol = decoded.volume
    v, index = _view_args(vol)
    fmt = request.args.get("format", "png")
    if fmt not in FORMATS:
        raise workspace("invalid_format")
    threshold = _number("threshold", "invalid_threshold")
    width = _number("window", "invalid_window", positive=True)
    level = _number("level", "invalid_window")
    if (width is None) != (level is None):
        raise workspace("invalid_window")
    image = V.plane_of(vol.data, v, index)
    headers = {"X-Slice-Width": str(v.width), "X-Slice-Height": str(v.height)}
    if fmt == "values":
        return Response(slices.values(image), mimetype="application/octet-stream",
                        headers=headers)
    low, high = V.window(decoded.entry["window"], width, level)
    grey = V.grey(image, low, high)
    pixels = grey if threshold is None else slices.tinted(grey, V.overlay_mask(image, threshold))
    return Response(slices.png(pixels), mimetype="image/png", headers=headers)


@bp.get("/scans/<scan_id>/series/<int:n>/thumbnail")
def thumbnail(scan_id, n):
    decoded = _series(scan_id, n)
    vol = decoded.volume
    v = V.view(vol, "axial")
    image = V.plane_of(vol.data, v, v.count // 2)
    step = slices.thumbnail_step(*image.shape)
    low, high = V.window(decoded.entry["window"])
    return Response(slices.png(V.grey(image[::step, ::step], low, high)), mimetype="image/png")


def _job_options(source, *, allowed=options.WITHOUT_SERIES) -> dict:
    return options.from_form(source, allowed=allowed)


@bp.get("/scans/<scan_id>/series/<int:n>/estimate")
def estimate(scan_id, n):
    from converter.estimate import estimate as coarse

    decoded = _series(scan_id, n)
    opts = service().check_options(_job_options(request.args))
    try:
        answer = coarse(decoded.volume, ConvertOptions(**opts))
    except ConverterError as exc:
        raise Refused(exc.code, exc.message) from None
    return jsonify(dict(answer, n=n))


@bp.post("/scans/<scan_id>/jobs", endpoint="create_scan_job")
def create_scan_job(scan_id):
    from .api import _job_json

    _own_scan(scan_id)
    fields = request.form if request.mimetype != "application/json" else \
        {k: str(v) for k, v in (request.get_json(silent=True) or {}).items()}
    raw = dict(fields)
    n = raw.pop("series", None)
    try:
        n = int(n) if n not in (None, "") else 1
    except ValueError:
        raise workspace("series_not_found", n=n) from None
    from werkzeug.datastructures import MultiDict

    opts = _job_options(MultiDict(raw))
    view = service().scans.create_job(scan_id, n, opts, owner=g.owner)
    body = _job_json(view)
    return jsonify(body), 202, {"Location": body["links"]["self"]}


@bp.get("/scans/<scan_id>/jobs", endpoint="scan_jobs")
def scan_jobs(scan_id):
    from .api import _job_json

    _own_scan(scan_id)
    jobs = service().list_jobs(owner=g.owner, scan_id=scan_id, limit=500)
    return jsonify({"scan": scan_id, "jobs": [_job_json(j) for j in jobs]})
