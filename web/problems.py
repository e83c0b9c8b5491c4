"""Refusals: one exception, shown as ``application/problem+json`` (RFC 9457)
on the API and as a readable page in the browser.

Every refusal has a stable ``code``; its message names the problem in
counts and limits, never in the client's file names or DICOM values.
"""

from __future__ import annotations

import errno

from flask import Response, current_app, json, render_template, request
from flask_wtf.csrf import CSRFError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from worker.service import Gone, Invalid, NotFound, NotReady

PROBLEM_TYPE = "https://ephemesh.invalid/problems/"

#: codes for HTTP errors raised by Flask, Werkzeug and the extensions
HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "An API key is needed."),
    403: ("forbidden", "This is not allowed."),
    404: ("not_found", "There is nothing here (or it is not yours)."),
    405: ("method_not_allowed", "This address does not accept that method."),
    409: ("not_ready", "Not ready yet."),
    410: ("gone", "This has been deleted."),
    413: ("too_large", "The upload is larger than this service accepts."),
    415: ("unsupported_media_type", "This content type is not accepted here."),
    429: ("rate_limited", "Too many requests; wait a little and try again."),
    500: ("internal_error", "Something went wrong on our side. Try again; anything you sent is "
          "deleted on schedule all the same."),
    503: ("unavailable", "The conversion queue cannot be reached just now; try again in a "
          "minute. Anything you sent is deleted on schedule all the same."),
}
#: the store or the spool directory is full (or a file size limit is hit)
NO_SPACE = ("no_space", "The server has no room for this upload just now; try again in a few "
            "minutes, or send a smaller one.")
#: seconds a client is asked to wait when the queue (Redis) is unreachable
UNAVAILABLE_RETRY_S = 30
#: the scan workspace's refusals of a request (``web/scans.py``): code → (status, message)
WORKSPACE = {
    "series_not_found": (404, "There is no series {n} in this scan."),
    "invalid_plane": (400, "plane must be axial, coronal or sagittal."),
    "invalid_index": (400, "index must be a whole number from 0 to {last} for this plane."),
    "invalid_threshold": (400, "threshold must be a finite number."),
    "invalid_window": (400, "window and level must be finite numbers, given together, with "
                       "window above 0."),
    "invalid_format": (400, "format must be png or values."),
    "invalid_wait": (400, "wait must be a number of seconds from 0 to {most}."),
    "invalid_filter": (400, "{name}: not a filter of this list, or not a value it takes; the "
                       "filters are status (job states, comma-separated), scan, batch, limit "
                       "and cursor."),
    "invalid_cursor": (400, "The cursor is not one this list gave."),
}


def workspace(code: str, **values) -> Refused:
    """The refusal ``code`` of ``WORKSPACE``, its message filled with ``values``."""
    status, message = WORKSPACE[code]
    return Refused(code, message.format(**values), status)


#: the service's refusals, by the status they answer with (each carries its code)
SERVICE_REFUSALS = {Invalid: 400, NotFound: 404, NotReady: 409, Gone: 410}


class Refused(Exception):
    """A request this service will not carry out (status 4xx)."""

    def __init__(self, code: str, message: str, status: int = 400, headers=None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.headers = dict(headers or {})


def wants_problem_json() -> bool:
    """API routes answer problem+json; so does a script on our pages that asks for JSON."""
    if request.path.startswith(("/api/", "/dicomweb/")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes["application/json"] > \
        request.accept_mimetypes["text/html"]


def problem(status: int, code: str, detail: str, headers=None, **extra) -> Response:
    title = HTTP_CODES.get(status, (code, detail))[1]
    body = {"type": PROBLEM_TYPE + code, "title": title, "status": status, "code": code,
            "detail": detail, **extra}
    resp = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def page(status: int, code: str, detail: str, headers=None) -> Response:
    html = render_template("error.html", status=status, code=code, detail=detail)
    resp = Response(html, status=status, mimetype="text/html")
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def sentence(text) -> str:
    """A message fragment (the worker's and converter's are lower case, no
    stop) as a sentence: capital first letter, final stop."""
    text = str(text or "").strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def respond(status: int, code: str, detail: str, headers=None) -> Response:
    detail = sentence(detail)
    if wants_problem_json():
        return problem(status, code, detail, headers)
    return page(status, code, detail, headers)


def _too_large_code() -> tuple[str, str]:
    cap = current_app.config.get("MAX_CONTENT_LENGTH")
    length = request.content_length
    if cap and (length is None or length > cap):
        return "too_large", f"The upload is larger than {cap // (1024 * 1024)} MB."
    return "too_many_parts", (
        "The upload has too many files or form fields "
        f"(at most {current_app.config['EPHEMESH_MAX_FILES']} files).")


def register(app) -> None:
    @app.errorhandler(Refused)
    def _refused(exc: Refused):
        return respond(exc.status, exc.code, exc.message, exc.headers)

    def _service_refusal(exc):
        return respond(SERVICE_REFUSALS[type(exc)], exc.code, exc.message)

    for refusal in SERVICE_REFUSALS:
        app.register_error_handler(refusal, _service_refusal)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        code, detail = HTTP_CODES.get(status, ("http_error", exc.name))
        headers = {}
        if status == 413:
            code, detail = _too_large_code()
        elif isinstance(exc, CSRFError):
            code = "csrf_failed"
            detail = "The form had expired or was not sent from this site; reload the page and try again."
        elif status == 429:
            retry = getattr(exc, "retry_after", None)
            if retry:
                headers["Retry-After"] = str(retry)
        elif status == 405:
            headers["Allow"] = ", ".join(sorted(exc.valid_methods or ()))
        return respond(status, code, detail, headers)

    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    def _unavailable(exc):  # its text names only the Redis address: not shown
        app.logger.error("Redis unreachable on %s", request.url_rule.rule if request.url_rule
                         else "an unmatched route")
        code, detail = HTTP_CODES[503]
        return respond(503, code, detail, {"Retry-After": str(UNAVAILABLE_RETRY_S)})

    @app.errorhandler(OSError)
    def _os_error(exc):
        rule = request.url_rule.rule if request.url_rule else "an unmatched route"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            app.logger.error("no space left for an upload on %s (%s)", rule,
                             errno.errorcode.get(exc.errno, exc.errno))
            return respond(503, *NO_SPACE, {"Retry-After": "300"})
        return _unexpected(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc):  # the text may hold anything; never shown or logged
        app.logger.error("unexpected error on %s", request.url_rule.rule if request.url_rule
                         else "an unmatched route")
        code, detail = HTTP_CODES[500]
        return respond(500, code, detail)
